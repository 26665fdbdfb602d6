// Row-wise reductions: one block per row.

// out[r, i] = w[i] * (x[r, i] / sqrt(mean(x[r]^2) + eps)); w f32 or bf16. In place allowed.
extern "C" __global__ void rmsnorm_f32(const float* x, const void* w, int wBf16, float* out, int h, float eps) {
    ORBIT_TRACE_KERNEL();
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

// The same for rows of h % 4 == 0 up to RN_V * 4 * blockDim.x values: thread t holds the values 4 (t + u blockDim.x)
// .. + 3 (u < RN_V) in registers, loaded at once (16-byte loads when vec: x and out 16-byte aligned; else one value at
// a time, the same sums), so a row costs one round trip to memory where rmsnorm_f32 loads a value, adds it and loads
// the next (then reads the row again). Blocks of 256 threads take a model's hidden size (up to 8192 values), of 512 and
// 1024 the longer rows up to 32768 (DeepSeek V4's hyper-connection norm over 4 streams of 4096: 16.5 us a row on an H100
// through rmsnorm_f32); the block is chosen by h alone (CudaRowOps.v4Block), so a row's sums do not depend on how many
// rows a call has. 1024 threads bound the kernels to 64 registers a thread (they need about 50).
#define RN_V 8
#define RN_MAX_THREADS 1024

// The norm of one row held as rmsnorm_v4_f32 holds it (v, zeros past h / 4), written to yr. V: the float4s a thread holds
// (RN_V, or fewer where the row fits: the terms past the row are zeros, so the same sums).
template <int V = RN_V>
__device__ __forceinline__ void rn_v4_row(const float4 (&v)[V], const void* w, int wBf16, float* yr, int h, float eps, int vec,
                                          float* sh) {
    int h4 = h >> 2;
    float ss = 0.0f;
#pragma unroll
    for (int u = 0; u < V; u++) {
        ss = fmaf(v[u].x, v[u].x, ss);
        ss = fmaf(v[u].y, v[u].y, ss);
        ss = fmaf(v[u].z, v[u].z, ss);
        ss = fmaf(v[u].w, v[u].w, ss);
    }
    ss = block_sum(ss, sh);
    float inv = 1.0f / sqrtf(ss / (float) h + eps);
#pragma unroll
    for (int u = 0; u < V; u++) {
        int i = threadIdx.x + u * blockDim.x;
        if (i < h4) {
            float4 wv;
            if (wBf16) {
                const u16* wb = (const u16*) w + 4 * i;
                wv = make_float4(bf16_to_f32(wb[0]), bf16_to_f32(wb[1]), bf16_to_f32(wb[2]), bf16_to_f32(wb[3]));
            } else {
                const float* wf = (const float*) w + 4 * i;
                wv = make_float4(wf[0], wf[1], wf[2], wf[3]);
            }
            float4 o = make_float4(wv.x * (v[u].x * inv), wv.y * (v[u].y * inv), wv.z * (v[u].z * inv), wv.w * (v[u].w * inv));
            if (vec) {
                ((float4*) yr)[i] = o;
            } else {
                yr[4 * i] = o.x;
                yr[4 * i + 1] = o.y;
                yr[4 * i + 2] = o.z;
                yr[4 * i + 3] = o.w;
            }
        }
    }
}

// The 16-byte piece i of a row (one value at a time unless vec).
__device__ __forceinline__ float4 rn_load4(const float* r, int i, int vec) {
    return vec ? ((const float4*) r)[i] : make_float4(r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
}

extern "C" __global__ void __launch_bounds__(RN_MAX_THREADS)
    rmsnorm_v4_f32(const float* x, const void* w, int wBf16, float* out, int h, float eps, int vec) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    __shared__ float sh[32];
    const float* xr = x + (i64) blockIdx.x * h;
    int h4 = h >> 2;
    float4 v[RN_V];
#pragma unroll
    for (int u = 0; u < RN_V; u++) {
        int i = threadIdx.x + u * blockDim.x;
        v[u] = i < h4 ? rn_load4(xr, i, vec) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    rn_v4_row(v, w, wBf16, out + (i64) blockIdx.x * h, h, eps, vec, sh);
}

// A residual add and the norm of its sum in one launch: sum = a + b (add_f32's values), out = rmsnorm_v4_f32 of sum (its
// values): a decoder layer's stream after attention and the norm before its MLP. vec: a, b, sum and out 16-byte aligned.
template <int V = RN_V>
__device__ __forceinline__ void add_rmsnorm_v4_body(const float* a, const float* b, float* sum, const void* w, int wBf16, float* out,
                                                    int h, float eps, int vec) {
    __shared__ float sh[32];
    i64 row = (i64) blockIdx.x * h;
    int h4 = h >> 2;
    float4 v[V];
#pragma unroll
    for (int u = 0; u < V; u++) {
        int i = threadIdx.x + u * blockDim.x;
        if (i < h4) {
            float4 x = rn_load4(a + row, i, vec);
            float4 y = rn_load4(b + row, i, vec);
            v[u] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
            float* sr = sum + row;
            if (vec) {
                ((float4*) sr)[i] = v[u];
            } else {
                sr[4 * i] = v[u].x;
                sr[4 * i + 1] = v[u].y;
                sr[4 * i + 2] = v[u].z;
                sr[4 * i + 3] = v[u].w;
            }
        } else {
            v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }
    rn_v4_row<V>(v, w, wBf16, out + row, h, eps, vec, sh);
}

extern "C" __global__ void __launch_bounds__(RN_MAX_THREADS)
    add_rmsnorm_v4_f32(const float* a, const float* b, float* sum, const void* w, int wBf16, float* out, int h, float eps, int vec) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    add_rmsnorm_v4_body(a, b, sum, w, wBf16, out, h, eps, vec);
}

// add_rmsnorm_v4_f32 for rows of at most 8 values a thread (a model's hidden size up to 2048 at 256 threads): two float4s a
// thread rather than RN_V, the rest of the row's terms being zeros there, so the same sums and bits from a fraction of the
// code (-Dorbit.cuda.narrowNorm=on): a launch of one block runs its code once, and code not in the SM's instruction cache
// costs about 80-180 cycles a KiB from the L2 (CodeFetchProbe).
extern "C" __global__ void __launch_bounds__(RN_MAX_THREADS)
    add_rmsnorm_v2_f32(const float* a, const float* b, float* sum, const void* w, int wBf16, float* out, int h, float eps, int vec) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    add_rmsnorm_v4_body<2>(a, b, sum, w, wBf16, out, h, eps, vec);
}

// The same for short rows (h <= WARP_ROW_MAX, a head's q or k): one warp a row, 8 rows a block, the sum of squares by
// shuffles alone. A block of 128 threads a row of 128 spent its time on the block barriers of the reduction (0.67 ms
// for [524288, 128] on the H200, five times its bytes' time). Chosen by h alone, so a row's result does not depend on
// how many rows a call has.
extern "C" __global__ void rmsnorm_warp_f32(const float* x, const void* w, int wBf16, float* out, int h, float eps,
                                            i64 rows) {
    ORBIT_TRACE_KERNEL();
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
    ORBIT_TRACE_KERNEL();
    pdl_enter();
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
    ORBIT_TRACE_KERNEL();
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
