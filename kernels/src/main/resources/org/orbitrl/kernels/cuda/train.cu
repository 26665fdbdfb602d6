// Training-side kernels: accumulations, row gathers and scatters, the backward passes of RMSNorm,
// SwiGLU, RoPE and attention, and the batch-invariant matmul of exact mode. Every reduction has a
// fixed order that depends only on the reduced length, never on the number of rows or on timing:
// no atomics on floats anywhere in this file.

#define ERR_ROW_OUT_OF_RANGE 4

// y += alpha * x over n elements.
extern "C" __global__ void axpy_f32(float alpha, const float* x, float* y, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) { y[i] += alpha * x[i]; }
}

// y [rows, n] += bias [n] for every row.
extern "C" __global__ void add_bias_f32(float* y, const float* bias, int n, i64 total) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, total) { y[i] += bias[i % n]; }
}

__device__ __forceinline__ i64 row_index(const void* rows, int rowsI64, int i) {
    return rowsI64 ? ((const i64*) rows)[i] : (i64) ((const int*) rows)[i];
}

// dst [n, h] row i = src [srcRows, h] row rows[i]; gather_rows_bf16_f32: a bf16 src (a paged KV cache's rows), widened
// to f32 exactly.
__device__ __forceinline__ float gr_value(const float* src, i64 i) {
    return src[i];
}

__device__ __forceinline__ float gr_value(const u16* src, i64 i) {
    return bf16_to_f32(src[i]);
}

template <typename T>
__device__ __forceinline__ void gather_rows_body(const T* src, const void* rows, int rowsI64, float* dst, int n, int h,
                                                 i64 srcRows, int* err) {
    i64 total = (i64) n * h;
    GRID_STRIDE(idx, total) {
        int i = (int) (idx / h);
        int c = (int) (idx % h);
        i64 r = row_index(rows, rowsI64, i);
        if (r < 0 || r >= srcRows) {
            report_error(err, ERR_ROW_OUT_OF_RANGE, r, i);
            dst[idx] = __int_as_float(0x7fc00000);
            continue;
        }
        dst[idx] = gr_value(src, r * h + c);
    }
}

extern "C" __global__ void gather_rows_f32(const float* src, const void* rows, int rowsI64, float* dst, int n, int h,
                                           i64 srcRows, int* err) {
    ORBIT_TRACE_KERNEL();
    gather_rows_body(src, rows, rowsI64, dst, n, h, srcRows, err);
}

extern "C" __global__ void gather_rows_bf16_f32(const u16* src, const void* rows, int rowsI64, float* dst, int n, int h,
                                                i64 srcRows, int* err) {
    ORBIT_TRACE_KERNEL();
    gather_rows_body(src, rows, rowsI64, dst, n, h, srcRows, err);
}

// dst [dstRows, h] row rows[i] += w[i] * src [n, h] row i, for i = 0, 1, ..., n-1 in that order.
// One thread per column walks every i, so the sum into a row is always taken in ascending i.
extern "C" __global__ void scatter_add_rows_f32(const float* src, const void* rows, int rowsI64, const float* weights,
                                                float* dst, int n, int h, i64 dstRows, int* err) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(c, (i64) h) {
        for (int i = 0; i < n; i++) {
            i64 r = row_index(rows, rowsI64, i);
            if (r < 0 || r >= dstRows) {
                if (c == 0) report_error(err, ERR_ROW_OUT_OF_RANGE, r, i);
                continue;
            }
            float w = weights == 0 ? 1.0f : weights[i];
            dst[r * h + c] += w * src[(i64) i * h + c];
        }
    }
}

// RMSNorm backward, one block per row: g = w*dy, r = 1/sqrt(mean(x^2)+eps),
// dx = r*g - x * r^3 * sum(g*x) / h. dx may alias dy.
extern "C" __global__ void rmsnorm_backward_f32(const float* x, const void* w, int wBf16, const float* dy, float* dx,
                                                int h, float eps) {
    ORBIT_TRACE_KERNEL();
    __shared__ float sh[32];
    i64 o = (i64) blockIdx.x * h;
    float ss = 0.0f;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
        float xv = x[o + i];
        float wi = wBf16 ? bf16_to_f32(((const u16*) w)[i]) : ((const float*) w)[i];
        ss += xv * xv;
        dot += wi * dy[o + i] * xv;
    }
    ss = block_sum(ss, sh);
    dot = block_sum(dot, sh);
    float inv = 1.0f / sqrtf(ss / (float) h + eps);
    float c = inv * inv * inv * dot / (float) h;
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
        float wi = wBf16 ? bf16_to_f32(((const u16*) w)[i]) : ((const float*) w)[i];
        dx[o + i] = inv * wi * dy[o + i] - c * x[o + i];
    }
}

// The same for short rows (h <= 512): one warp a row, 8 rows a block, the sums by shuffles (see rmsnorm_warp_f32).
extern "C" __global__ void rmsnorm_backward_warp_f32(const float* x, const void* w, int wBf16, const float* dy, float* dx,
                                                     int h, float eps, i64 rows) {
    ORBIT_TRACE_KERNEL();
    i64 r = (i64) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    int lane = threadIdx.x & 31;
    i64 o = r * h;
    float ss = 0.0f;
    float dot = 0.0f;
    for (int i = lane; i < h; i += 32) {
        float xv = x[o + i];
        float wi = wBf16 ? bf16_to_f32(((const u16*) w)[i]) : ((const float*) w)[i];
        ss += xv * xv;
        dot += wi * dy[o + i] * xv;
    }
    ss = warp_sum(ss);
    dot = warp_sum(dot);
    float inv = 1.0f / sqrtf(ss / (float) h + eps);
    float c = inv * inv * inv * dot / (float) h;
    for (int i = lane; i < h; i += 32) {
        float wi = wBf16 ? bf16_to_f32(((const u16*) w)[i]) : ((const float*) w)[i];
        dx[o + i] = inv * wi * dy[o + i] - c * x[o + i];
    }
}

// out = silu(g)*u: dg = dout*u*s*(1 + g*(1-s)), du = dout*silu(g), s = sigmoid(g).
extern "C" __global__ void swiglu_backward_f32(const float* gate, const float* up, const float* dout, float* dgate,
                                               float* dup, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float g = gate[i];
        float d = dout[i];
        float s = 1.0f / (1.0f + expf(-g));
        float u = up[i];
        dup[i] = d * (g * s);
        dgate[i] = d * u * (s * (1.0f + g * (1.0f - s)));
    }
}

// RoPE backward in place on dx [T, H, D] (strides in elements, last dimension contiguous): the
// transpose of the forward rotation.
extern "C" __global__ void rope_backward_f32(float* x, i64 strideT, i64 strideH, int T, int H, int half, int interleaved,
                                             const void* pos, int posI64, const float* cosT, const float* sinT,
                                             int maxPos, int* err) {
    ORBIT_TRACE_KERNEL();
    i64 total = (i64) T * H * half;
    GRID_STRIDE(idx, total) {
        int j = (int) (idx % half);
        i64 th = idx / half;
        int h = (int) (th % H);
        int t = (int) (th / H);
        i64 p = posI64 ? ((const i64*) pos)[t] : (i64) ((const int*) pos)[t];
        if (p < 0 || p >= maxPos) {
            report_error(err, ERR_POSITION_OUT_OF_RANGE, p, t);
            continue;
        }
        float* v = x + (i64) t * strideT + (i64) h * strideH;
        int a = interleaved ? 2 * j : j;
        int b = interleaved ? 2 * j + 1 : j + half;
        float c = cosT[p * half + j];
        float s = sinT[p * half + j];
        float d1 = v[a];
        float d2 = v[b];
        v[a] = d1 * c + d2 * s;
        v[b] = -d1 * s + d2 * c;
    }
}

// ---------------------------------------------------------------- attention backward
// One sequence. q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], dout [T, Hq, Dv] (leading strides in
// elements, last dimension contiguous). Query t sits at position qs + t and sees key s when
// s <= qs + t and (window <= 0 or qs + t - s < window). One warp per work item, lanes over channels.
#define ATTB_MAXC 20  // channels per lane: head dims up to 640

__device__ __forceinline__ float lane_dot(const float* a, const float* b, int d) {
    float acc = 0.0f;
    for (int c = threadIdx.x & 31; c < d; c += 32) acc += a[c] * b[c];
    return warp_sum(acc);
}

// Pass 1, one warp per (query t, head h): the row's log-sum-exp L (including the sink) and
// delta = sum_j p_j * (dout . v_j); then dq = scale * sum_j p_j (dout . v_j - delta) k_j.
extern "C" __global__ void attention_backward_q(const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH,
                                                const float* v, i64 vS, i64 vH, const float* dout, i64 oT, i64 oH,
                                                float* dq, i64 dqT, i64 dqH, float* lse, float* delta,
                                                int T, int Hq, int Hkv, int D, int Dv, int qs, int window, float scale,
                                                const float* sinks) {
    ORBIT_TRACE_KERNEL();
    int item = blockIdx.x;
    int t = item / Hq;
    int h = item % Hq;
    int lane = threadIdx.x;
    int g = h / (Hq / Hkv);
    int pos = qs + t;
    int lo = window > 0 ? max(0, pos - window + 1) : 0;
    const float* qr = q + (i64) t * qT + (i64) h * qH;
    const float* dr = dout + (i64) t * oT + (i64) h * oH;
    float m = sinks != 0 ? sinks[h] : -ORBIT_INF;
    for (int j = lo; j <= pos; j++) m = fmaxf(m, lane_dot(qr, k + (i64) j * kS + (i64) g * kH, D) * scale);
    float sum = sinks != 0 ? expf(sinks[h] - m) : 0.0f;
    for (int j = lo; j <= pos; j++) sum += expf(lane_dot(qr, k + (i64) j * kS + (i64) g * kH, D) * scale - m);
    float L = m + logf(sum);
    float dl = 0.0f;
    for (int j = lo; j <= pos; j++) {
        float p = expf(lane_dot(qr, k + (i64) j * kS + (i64) g * kH, D) * scale - L);
        dl += p * lane_dot(dr, v + (i64) j * vS + (i64) g * vH, Dv);
    }
    float acc[ATTB_MAXC];
#pragma unroll
    for (int i = 0; i < ATTB_MAXC; i++) acc[i] = 0.0f;
    for (int j = lo; j <= pos; j++) {
        const float* kr = k + (i64) j * kS + (i64) g * kH;
        float p = expf(lane_dot(qr, kr, D) * scale - L);
        float ds = p * (lane_dot(dr, v + (i64) j * vS + (i64) g * vH, Dv) - dl) * scale;
#pragma unroll
        for (int i = 0; i < ATTB_MAXC; i++) {
            int c = lane + 32 * i;
            if (c < D) acc[i] += ds * kr[c];
        }
    }
    float* out = dq + (i64) t * dqT + (i64) h * dqH;
#pragma unroll
    for (int i = 0; i < ATTB_MAXC; i++) {
        int c = lane + 32 * i;
        if (c < D) out[c] = acc[i];
    }
    if (lane == 0) {
        lse[item] = L;
        delta[item] = dl;
    }
}

// Pass 2, one warp per (key s, kv head g): dv_s = sum p * dout, dk_s = scale * sum p (dout . v_s - delta) q
// over the queries that see key s (ascending t) and the query heads of g (ascending h).
extern "C" __global__ void attention_backward_kv(const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH,
                                                 const float* v, i64 vS, i64 vH, const float* dout, i64 oT, i64 oH,
                                                 float* dk, i64 dkS, i64 dkH, float* dv, i64 dvS, i64 dvH,
                                                 const float* lse, const float* delta,
                                                 int T, int Hq, int Hkv, int D, int Dv, int qs, int window, float scale) {
    ORBIT_TRACE_KERNEL();
    int s = blockIdx.x / Hkv;
    int g = blockIdx.x % Hkv;
    int lane = threadIdx.x;
    int group = Hq / Hkv;
    const float* kr = k + (i64) s * kS + (i64) g * kH;
    const float* vr = v + (i64) s * vS + (i64) g * vH;
    float ak[ATTB_MAXC];
    float av[ATTB_MAXC];
#pragma unroll
    for (int i = 0; i < ATTB_MAXC; i++) {
        ak[i] = 0.0f;
        av[i] = 0.0f;
    }
    int t0 = max(0, s - qs);
    int t1 = T - 1;
    if (window > 0) t1 = min(t1, s + window - 1 - qs);
    for (int t = t0; t <= t1; t++) {
        for (int h = g * group; h < (g + 1) * group; h++) {
            const float* qr = q + (i64) t * qT + (i64) h * qH;
            const float* dr = dout + (i64) t * oT + (i64) h * oH;
            int item = t * Hq + h;
            float p = expf(lane_dot(qr, kr, D) * scale - lse[item]);
            float ds = p * (lane_dot(dr, vr, Dv) - delta[item]) * scale;
#pragma unroll
            for (int i = 0; i < ATTB_MAXC; i++) {
                int c = lane + 32 * i;
                if (c < Dv) av[i] += p * dr[c];
                if (c < D) ak[i] += ds * qr[c];
            }
        }
    }
    float* ko = dk + (i64) s * dkS + (i64) g * dkH;
    float* vo = dv + (i64) s * dvS + (i64) g * dvH;
#pragma unroll
    for (int i = 0; i < ATTB_MAXC; i++) {
        int c = lane + 32 * i;
        if (c < D) ko[c] = ak[i];
        if (c < Dv) vo[c] = av[i];
    }
}

// ---------------------------------------------------------------- exact mode
// y [M, N] = x [M, K] . w [N, K]^T with w f32 or bf16. One warp per output column and a chunk of
// up to 8 rows (blockIdx.y); lane l sums k = l, l+32, ... in ascending order, then a fixed warp
// tree: every row's result depends on K alone, not on M or on where the row sits in the batch.
#define EXACT_ROWS 8

extern "C" __global__ void exact_matmul_f32(const float* x, const void* w, int wBf16, float* y, int M, int N, int K) {
    ORBIT_TRACE_KERNEL();
    int n = (int) (((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    int m0 = blockIdx.y * EXACT_ROWS;
    if (n >= N) return;
    int rows = min(EXACT_ROWS, M - m0);
    float acc[EXACT_ROWS];
#pragma unroll
    for (int r = 0; r < EXACT_ROWS; r++) acc[r] = 0.0f;
    const float* wf = (const float*) w + (i64) n * K;
    const u16* wb = (const u16*) w + (i64) n * K;
    for (int c = lane; c < K; c += 32) {
        float wv = wBf16 ? bf16_to_f32(wb[c]) : wf[c];
#pragma unroll
        for (int r = 0; r < EXACT_ROWS; r++) {
            if (r < rows) acc[r] += x[(i64) (m0 + r) * K + c] * wv;
        }
    }
#pragma unroll
    for (int r = 0; r < EXACT_ROWS; r++) {
        if (r < rows) {
            float s = warp_sum(acc[r]);
            if (lane == 0) y[(i64) (m0 + r) * N + n] = s;
        }
    }
}

// ---------------------------------------------------------------- optimizer
// AdamW, one element per thread, every operation rounded on its own (no fused multiply-add), in
// the order of the host implementation, so a device step equals the host step bit for bit.
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, int clipped, float clip, float b1,
                                     float omb1, float b2, float omb2, float decay, float stepSize, float bc2Sqrt,
                                     float eps, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float gi = g[i];
        if (clipped) gi = __fmul_rn(gi, clip);
        float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(omb1, gi));
        float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(omb2, __fmul_rn(gi, gi)));
        float pi = __fmul_rn(p[i], decay);
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2Sqrt), eps);
        pi = __fsub_rn(pi, __fmul_rn(stepSize, __fdiv_rn(mi, denom)));
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
    }
}

// Block b covers elements [b*chunk, min(n, (b+1)*chunk)): out[2b] = the sum of their squares in
// double (finite elements only; thread-strided partial sums, then a fixed tree over 256 threads),
// out[2b+1] = the lowest index of a NaN or infinity among them, or -1. Launched with 256 threads.
#define STATS_THREADS 256
#define I64_MAX 0x7fffffffffffffffLL

extern "C" __global__ void sumsq_nonfinite_f32(const float* x, i64 n, i64 chunk, i64* out) {
    ORBIT_TRACE_KERNEL();
    __shared__ double sh[STATS_THREADS];
    __shared__ i64 shb[STATS_THREADS];
    i64 lo = (i64) blockIdx.x * chunk;
    i64 hi = lo + chunk < n ? lo + chunk : n;
    double s = 0.0;
    i64 first = I64_MAX;
    for (i64 i = lo + threadIdx.x; i < hi; i += STATS_THREADS) {
        float v = x[i];
        if ((__float_as_uint(v) & 0x7f800000u) == 0x7f800000u) {
            if (i < first) first = i;
        } else {
            s += (double) v * (double) v;
        }
    }
    sh[threadIdx.x] = s;
    shb[threadIdx.x] = first;
    __syncthreads();
    for (int w = STATS_THREADS / 2; w > 0; w >>= 1) {
        if ((int) threadIdx.x < w) {
            sh[threadIdx.x] += sh[threadIdx.x + w];
            if (shb[threadIdx.x + w] < shb[threadIdx.x]) shb[threadIdx.x] = shb[threadIdx.x + w];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[2 * blockIdx.x] = __double_as_longlong(sh[0]);
        out[2 * blockIdx.x + 1] = shb[0] == I64_MAX ? -1 : shb[0];
    }
}

// ---------------------------------------------------------------- policy log-probs
// One block per i: out[i] = log softmax(logits[rows[i]] / T)[tokens[i]], computed as the host's
// LogProbs.of: z = (x - max) / T in f32, the sum of exp(z) in double, (x_t - max)/T - log(sum)
// rounded to f32. The sum is a fixed tree over the block, so the result depends on the row alone.
#define LOGP_THREADS 256

__device__ double block_sum_d(double v, double* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = LOGP_THREADS / 2; w > 0; w >>= 1) {
        if ((int) threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ float row_max(const float* x, int v, float* shf) {
    float m = -ORBIT_INF;
    for (int k = threadIdx.x; k < v; k += LOGP_THREADS) m = fmaxf(m, x[k]);
    return block_max(m, shf);
}

extern "C" __global__ void token_logprobs_f32(const float* logits, int v, const int* rows, const int* tokens, float t,
                                              float* out, i64 nRows, int* err) {
    ORBIT_TRACE_KERNEL();
    __shared__ double sh[LOGP_THREADS];
    __shared__ float shf[32];
    int i = blockIdx.x;
    int r = rows[i];
    int tok = tokens[i];
    if (r < 0 || r >= nRows || tok < 0 || tok >= v) {
        if (threadIdx.x == 0) report_error(err, ERR_ROW_OUT_OF_RANGE, r < 0 || r >= nRows ? r : tok, i);
        return;
    }
    const float* x = logits + (i64) r * v;
    float m = row_max(x, v, shf);
    double s = 0.0;
    for (int k = threadIdx.x; k < v; k += LOGP_THREADS) s += exp((double) __fdiv_rn(__fsub_rn(x[k], m), t));
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) out[i] = (float) ((double) __fdiv_rn(__fsub_rn(x[tok], m), t) - log(s));
}

// One block per i with dlogp[i] != 0: d[rows[i], k] += (float) (-g * p_k / T) for every k, then
// d[rows[i], tokens[i]] += g / T, with p = softmax(logits[rows[i]] / T) as above. Rows are distinct.
extern "C" __global__ void logprob_backward_f32(const float* logits, int v, const int* rows, const int* tokens,
                                                const float* dlogp, float t, float* d, i64 nRows, int* err) {
    ORBIT_TRACE_KERNEL();
    __shared__ double sh[LOGP_THREADS];
    __shared__ float shf[32];
    int i = blockIdx.x;
    float g = dlogp[i];
    if (g == 0.0f) return;
    int r = rows[i];
    int tok = tokens[i];
    if (r < 0 || r >= nRows || tok < 0 || tok >= v) {
        if (threadIdx.x == 0) report_error(err, ERR_ROW_OUT_OF_RANGE, r < 0 || r >= nRows ? r : tok, i);
        return;
    }
    const float* x = logits + (i64) r * v;
    float* dr = d + (i64) r * v;
    float m = row_max(x, v, shf);
    double s = 0.0;
    for (int k = threadIdx.x; k < v; k += LOGP_THREADS) s += exp((double) __fdiv_rn(__fsub_rn(x[k], m), t));
    s = block_sum_d(s, sh);
    for (int k = threadIdx.x; k < v; k += LOGP_THREADS) {
        double p = exp((double) __fdiv_rn(__fsub_rn(x[k], m), t)) / s;
        dr[k] = __fadd_rn(dr[k], (float) (-(double) g * p / (double) t));
    }
    __syncthreads();
    if (threadIdx.x == 0) dr[tok] = __fadd_rn(dr[tok], __fdiv_rn(g, t));
}
