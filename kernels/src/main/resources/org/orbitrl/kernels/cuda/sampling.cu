// Token sampling on the device: one block per request, the arithmetic of the host's SamplingOps
// (z = (x - max) / T in f32, sums of exp(z) in double, thresholds on z found by bisection over the
// float order, a Gumbel-max draw with counter-based noise). Only the tokens and their sampled
// log-probs are written: nothing is copied to the host here.
#define SAMPLE_THREADS 512
#define ERR_ROW_OUT_OF_RANGE 4
#define NOISE_CUTOFF 41.0f

typedef unsigned long long u64;

__device__ __forceinline__ u64 mix64(u64 x) {
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

__device__ __forceinline__ double gumbel(u64 key, int id) {
    u64 h = mix64(key ^ (0x9E3779B97F4A7C15ULL * (u64) (id + 1LL)));
    double u = ((double) (h >> 11) + 0.5) * 1.1102230246251565e-16; // 2^-53
    return -log(-log(u));
}

__device__ __forceinline__ int ordered_key(float f) {
    int b = __float_as_int(f);
    return b >= 0 ? b : b ^ 0x7fffffff;
}

__device__ __forceinline__ float zval(const float* x, int k, float m, float t) {
    return __fdiv_rn(__fsub_rn(x[k], m), t);
}

// Sum over the block in a fixed tree; every thread gets the result.
__device__ double sample_sum(double v, double* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = SAMPLE_THREADS / 2; w > 0; w >>= 1) {
        if ((int) threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

// The largest value over the block, ties to the lower index; every thread gets both.
__device__ void sample_best(double* v, int* i, double* shv, int* shi) {
    shv[threadIdx.x] = *v;
    shi[threadIdx.x] = *i;
    __syncthreads();
    for (int w = SAMPLE_THREADS / 2; w > 0; w >>= 1) {
        if ((int) threadIdx.x < w) {
            double o = shv[threadIdx.x + w];
            int oi = shi[threadIdx.x + w];
            if (o > shv[threadIdx.x] || (o == shv[threadIdx.x] && oi < shi[threadIdx.x])) {
                shv[threadIdx.x] = o;
                shi[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    *v = shv[0];
    *i = shi[0];
    __syncthreads();
}

// mode 0: count of z >= key; mode 1: mass of exp(z) over z >= key.
__device__ double above(const float* x, int v, float m, float t, int key, int mode, double* sh) {
    double s = 0.0;
    for (int k = threadIdx.x; k < v; k += SAMPLE_THREADS) {
        float z = zval(x, k, m, t);
        if (ordered_key(z) >= key) s += mode == 0 ? 1.0 : exp((double) z);
    }
    return sample_sum(s, sh);
}

// The largest key in [key(-inf), key(0)] with above(key) >= need.
__device__ int largest_key(const float* x, int v, float m, float t, int mode, double need, double* sh) {
    long long lo = ordered_key(-ORBIT_INF);
    long long hi = ordered_key(0.0f);
    while (lo < hi) {
        long long mid = lo + (hi - lo + 1) / 2;
        if (above(x, v, m, t, (int) mid, mode, sh) >= need) lo = mid; else hi = mid - 1;
    }
    return (int) lo;
}

// req: i32 [7, B] field-major: row, top-k, key low, key high, temperature, top-p, min-p (f32 bits).
extern "C" __global__ void sample_tokens_f32(const float* logits, int v, i64 nRows, const int* req, int nReq,
                                             int* tokens, float* slogp, int* err) {
    ORBIT_TRACE_KERNEL();
    __shared__ double shd[SAMPLE_THREADS];
    __shared__ int shi[SAMPLE_THREADS];
    int b = blockIdx.x;
    int r = req[b];
    int topk = req[nReq + b];
    u64 key = (u64) (u32) req[2 * nReq + b] | ((u64) (u32) req[3 * nReq + b] << 32);
    float t = __int_as_float(req[4 * nReq + b]);
    float topp = __int_as_float(req[5 * nReq + b]);
    float minp = __int_as_float(req[6 * nReq + b]);
    if (r < 0 || r >= nRows) {
        if (threadIdx.x == 0) report_error(err, ERR_ROW_OUT_OF_RANGE, r, b);
        return;
    }
    const float* x = logits + (i64) r * v;
    double best = -(double) ORBIT_INF;
    int bi = 0x7fffffff;
    for (int k = threadIdx.x; k < v; k += SAMPLE_THREADS) {
        if ((double) x[k] > best) {
            best = (double) x[k];
            bi = k;
        }
    }
    sample_best(&best, &bi, shd, shi);
    if (bi == 0x7fffffff) bi = 0;
    float m = (float) best;
    if (!(t > 0.0f)) {
        if (threadIdx.x == 0) {
            tokens[b] = bi;
            slogp[b] = 0.0f;
        }
        return;
    }
    double total = 0.0;
    for (int k = threadIdx.x; k < v; k += SAMPLE_THREADS) total += exp((double) zval(x, k, m, t));
    total = sample_sum(total, shd);
    int thr = (int) 0x80000000;
    if (topk > 0 && topk < v) thr = max(thr, largest_key(x, v, m, t, 0, (double) topk, shd));
    if (topp < 1.0f) thr = max(thr, largest_key(x, v, m, t, 1, (double) topp * total, shd));
    double kept = 0.0;
    double sb = -(double) ORBIT_INF;
    int si = 0x7fffffff;
    for (int k = threadIdx.x; k < v; k += SAMPLE_THREADS) {
        float z = zval(x, k, m, t);
        if (ordered_key(z) < thr) continue;
        double e = exp((double) z);
        if (minp > 0.0f && e < (double) minp) continue;
        kept += e;
        if (z < -NOISE_CUTOFF) continue;
        double score = (double) z + gumbel(key, k);
        if (score > sb) {
            sb = score;
            si = k;
        }
    }
    kept = sample_sum(kept, shd);
    sample_best(&sb, &si, shd, shi);
    if (threadIdx.x == 0) {
        if (si == 0x7fffffff) si = bi;
        tokens[b] = si;
        slogp[b] = (float) ((double) zval(x, si, m, t) - log(kept));
    }
}
