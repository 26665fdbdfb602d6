// Dense bf16-weight GEMV for few rows of x, with the work split of qgemv.cu: a set of L lanes
// computes QG_R consecutive output rows, lane i of a set takes the 16-byte loads i, i + L, ... of
// each row (8 weights a load), widens them to f32 once and uses them for every x row of the chunk.

#define QG_R 4

// Dense bf16 weights [N, K] (K a multiple of 8), f32 x [M, K], f32 y [M, N]: the same work split, a
// 16-byte load being 8 weights; the weights of QG_R rows are widened to f32 once per load and used
// for every x row of the chunk. accumulate: y += x . w^T (a residual add folded into the product).
template <int MT>
__device__ __forceinline__ void bgemv(const float* __restrict__ x, int M, const uint4* __restrict__ w, float* y, int N, int K,
                                      int L, int accumulate) {
    int G = K / 8;
    int sub = threadIdx.x & (L - 1);
    int set = ((int) blockIdx.x * (int) blockDim.x + (int) threadIdx.x) / L;
    int row0 = set * QG_R;
    if (row0 >= N) return;
    unsigned mask = L == 32 ? 0xffffffffu : ((1u << L) - 1u) << ((threadIdx.x & 31) & ~(L - 1));
    i64 grow[QG_R];
#pragma unroll
    for (int r = 0; r < QG_R; r++) grow[r] = row0 + r < N ? row0 + r : N - 1;
    for (int c0 = 0; c0 < M; c0 += MT) {
        float acc[QG_R][MT];
#pragma unroll
        for (int r = 0; r < QG_R; r++)
#pragma unroll
            for (int m = 0; m < MT; m++) acc[r][m] = 0.0f;
        for (int g = sub; g < G; g += L) {
            uint4 q[QG_R];
#pragma unroll
            for (int r = 0; r < QG_R; r++) q[r] = w[grow[r] * G + g];
            float wv[QG_R][8];
#pragma unroll
            for (int r = 0; r < QG_R; r++) {
                u32 words[4] = {q[r].x, q[r].y, q[r].z, q[r].w};
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    wv[r][2 * j] = __uint_as_float(words[j] << 16);
                    wv[r][2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
                }
            }
#pragma unroll
            for (int m = 0; m < MT; m++) {
                if (c0 + m < M) {
                    const float4* xp = (const float4*) (x + (i64) (c0 + m) * K + g * 8);
                    float4 u = xp[0];
                    float4 v = xp[1];
                    float a[8] = {u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w};
#pragma unroll
                    for (int r = 0; r < QG_R; r++) {
                        float d = acc[r][m];
#pragma unroll
                        for (int i = 0; i < 8; i++) d = fmaf(wv[r][i], a[i], d);
                        acc[r][m] = d;
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < QG_R; r++) {
#pragma unroll
            for (int m = 0; m < MT; m++) {
                float v = acc[r][m];
                for (int o = L >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(mask, v, o);
                if (sub == 0 && row0 + r < N && c0 + m < M) {
                    float* o = y + (i64) (c0 + m) * N + row0 + r;
                    *o = accumulate ? *o + v : v;
                }
            }
        }
    }
}

#define BG_KERNEL(MT)                                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) bgemv_m##MT(const float* x, int M, const uint4* w, float* y,     \
                                                                  int N, int K, int L, int accumulate) {               \
        bgemv<MT>(x, M, w, y, N, K, L, accumulate);                                                                    \
    }
BG_KERNEL(1)
BG_KERNEL(4)
BG_KERNEL(8)
BG_KERNEL(16)
