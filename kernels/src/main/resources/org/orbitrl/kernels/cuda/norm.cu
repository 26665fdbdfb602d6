// Row-wise reductions: one block per row.

// out[r, i] = w[i] * (x[r, i] / sqrt(mean(x[r]^2) + eps)); w f32 or bf16. In place allowed.
extern "C" __global__ void rmsnorm_f32(const float* x, const void* w, int wBf16, float* out, int h, float eps) {
    pdl_enter();
    __shared__ float sh[32];
    const float* xr = x + (i64) blockIdx.x * h;
    float* yr = out + (i64) blockIdx.x * h;
    float inv = row_rms_inv(xr, h, eps, sh);
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
        float wi = wBf16 ? bf16_to_f32(((const u16*) w)[i]) : ((const float*) w)[i];
        yr[i] = wi * (xr[i] * inv);
    }
}

// The same for short rows (h <= WARP_ROW_MAX, a head's q or k): one warp a row, 8 rows a block, the sum of squares by
// shuffles alone. A block of 128 threads a row of 128 spent its time on the block barriers of the reduction (0.67 ms
// for [524288, 128] on the H200, five times its bytes' time). Chosen by h alone, so a row's result does not depend on
// how many rows a call has.
extern "C" __global__ void rmsnorm_warp_f32(const float* x, const void* w, int wBf16, float* out, int h, float eps,
                                            i64 rows) {
    pdl_enter();
    i64 r = (i64) blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    int lane = threadIdx.x & 31;
    const float* xr = x + r * h;
    float* yr = out + r * h;
    float ss = 0.0f;
    for (int i = lane; i < h; i += 32) {
        float v = xr[i];
        ss += v * v;
    }
    ss = warp_sum(ss);
    float inv = 1.0f / sqrtf(ss / (float) h + eps);
    for (int i = lane; i < h; i += 32) {
        float wi = wBf16 ? bf16_to_f32(((const u16*) w)[i]) : ((const float*) w)[i];
        yr[i] = wi * (xr[i] * inv);
    }
}

// Softmax over each row of n, in place.
extern "C" __global__ void softmax_f32(float* x, int n) {
    __shared__ float sh[32];
    float* xr = x + (i64) blockIdx.x * n;
    float m = -ORBIT_INF;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, xr[i]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += expf(xr[i] - m);
    s = block_sum(s, sh);
    float inv = 1.0f / s;
    for (int i = threadIdx.x; i < n; i += blockDim.x) xr[i] = expf(xr[i] - m) * inv;
}

// Log-softmax over each row of n, in place: x - (max + log(sum(exp(x - max)))).
extern "C" __global__ void log_softmax_f32(float* x, int n) {
    __shared__ float sh[32];
    float* xr = x + (i64) blockIdx.x * n;
    float m = -ORBIT_INF;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, xr[i]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += expf(xr[i] - m);
    s = block_sum(s, sh);
    float lse = m + logf(s);
    for (int i = threadIdx.x; i < n; i += blockDim.x) xr[i] = xr[i] - lse;
}
