// The routed experts of a decode step per (token, expert) pair, with full-precision expert matrices
// (bf16 base experts, f32 LoRA factors) that are matrices of their own: the experts' addresses come
// from a table on the device, the pair's expert from ids on the device, so nothing waits for the host
// and the launch can be captured in a graph. (Quantized experts take qgemv.cu's mode 3.)
//
// y[p, n] (+)= scale * (x[p / xDiv] . W_e[n]), e = ids[p], W_e = table[e] ([N, K] row-major, bf16 when
// wBf16 else f32). Block (row chunk, pair p = blockIdx.y) of MP_WARPS warps: x's row staged in shared
// memory (dynamic, K floats); warp w takes rows row0 + w * MP_R + i (i < MP_R) together, its lanes
// striding over K in units of 8 values (bf16: one 16-byte load, f32: two) when vec, else one value;
// then a warp sum. f32 accumulation, in the same order for a row whatever the batch.
//
// moe_routed_dense: the same products grouped by expert on the device (moe_route's offsets, active list
// and order): block (row chunk, j-th active expert) takes that expert's pairs one after another, so its
// rows of the matrix come from DRAM once and from cache for the later pairs.

#define ERR_EXPERT_NOT_HELD 5 // a pair routed to an expert this rank does not hold (CudaKernelErrors)
#define MP_WARPS 8
#define MP_R 4 // rows a warp takes at once

template <bool BF16, bool VEC>
__device__ __forceinline__ void mp_rows(const float* xs, const void* w, int K, int n0, int N, int lane, float* acc) {
#pragma unroll
    for (int i = 0; i < MP_R; i++) acc[i] = 0.0f;
    if (VEC) {
        int units = K / 8;
        for (int u = lane; u < units; u += 32) {
            const float* xv = xs + 8 * u;
#pragma unroll
            for (int i = 0; i < MP_R; i++) {
                int n = n0 + i < N ? n0 + i : N - 1;
                float wv[8];
                if (BF16) {
                    uint4 q = ((const uint4*) ((const u16*) w + (i64) n * K))[u];
                    u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        wv[2 * j] = __uint_as_float(words[j] << 16);
                        wv[2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
                    }
                } else {
                    const float4* r = (const float4*) ((const float*) w + (i64) n * K) + 2 * u;
                    float4 a = r[0];
                    float4 b = r[1];
                    wv[0] = a.x; wv[1] = a.y; wv[2] = a.z; wv[3] = a.w;
                    wv[4] = b.x; wv[5] = b.y; wv[6] = b.z; wv[7] = b.w;
                }
                float d = acc[i];
#pragma unroll
                for (int j = 0; j < 8; j++) d = fmaf(wv[j], xv[j], d);
                acc[i] = d;
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            float xv = xs[k];
#pragma unroll
            for (int i = 0; i < MP_R; i++) {
                int n = n0 + i < N ? n0 + i : N - 1;
                float wv = BF16 ? bf16_to_f32(((const u16*) w)[(i64) n * K + k]) : ((const float*) w)[(i64) n * K + k];
                acc[i] = fmaf(wv, xv, acc[i]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < MP_R; i++) acc[i] = warp_sum(acc[i]);
}

// The block's rows of pair p's product (x row staged in xs by the caller) into y.
__device__ __forceinline__ void mp_pair(const float* xs, const void* w, int wBf16, int vec, float scale, float* y, int accumulate,
                                        int N, int K, int p) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int n0 = (blockIdx.x * MP_WARPS + warp) * MP_R;
    if (n0 >= N) return;
    float acc[MP_R];
    if (wBf16) {
        if (vec) mp_rows<true, true>(xs, w, K, n0, N, lane, acc);
        else mp_rows<true, false>(xs, w, K, n0, N, lane, acc);
    } else {
        if (vec) mp_rows<false, true>(xs, w, K, n0, N, lane, acc);
        else mp_rows<false, false>(xs, w, K, n0, N, lane, acc);
    }
    if (lane < MP_R && n0 + lane < N) {
        float v = acc[0];
#pragma unroll
        for (int i = 1; i < MP_R; i++) v = lane == i ? acc[i] : v;
        float* o = y + (i64) p * N + n0 + lane;
        *o = accumulate ? *o + scale * v : scale * v;
    }
}

extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_routed_dense(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                     const unsigned long long* table, int wBf16, int vec, float scale, float* y, int accumulate, int N, int K,
                     int E, int* err) {
    pdl_enter();
    extern __shared__ float xs[]; // [K]
    if ((int) blockIdx.y >= active[0]) return;
    int e = active[1 + blockIdx.y];
    const void* w = (const void*) table[e];
    if (w == 0) { // an expert this rank does not hold
        if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_NOT_HELD, e, -1);
        return;
    }
    for (int i = offsets[e]; i < offsets[e + 1]; i++) {
        int p = order[i];
        const float* xr = x + (i64) (p / xDiv) * K;
        for (int k = threadIdx.x; k < K; k += blockDim.x) xs[k] = xr[k];
        __syncthreads();
        mp_pair(xs, w, wBf16, vec, scale, y, accumulate, N, K, p);
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_pairs_dense(const float* x, int xDiv, const int* ids, const unsigned long long* table, int wBf16, int vec, float scale,
                    float* y, int accumulate, int N, int K, int E, int* err) {
    pdl_enter();
    extern __shared__ float xs[]; // [K]
    int p = blockIdx.y;
    int e = ids[p];
    const void* w = e >= 0 && e < E ? (const void*) table[e] : (const void*) 0;
    if (w == 0) { // the whole block leaves
        if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, e >= 0 && e < E ? ERR_EXPERT_NOT_HELD : ERR_EXPERT_OUT_OF_RANGE, e, p);
        return;
    }
    const float* xr = x + (i64) (p / xDiv) * K;
    for (int k = threadIdx.x; k < K; k += blockDim.x) xs[k] = xr[k];
    __syncthreads();
    mp_pair(xs, w, wBf16, vec, scale, y, accumulate, N, K, p);
}
