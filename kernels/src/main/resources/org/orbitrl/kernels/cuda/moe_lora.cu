// Expert products of the grouped mixture-of-experts block where one side of every product is narrow
// (the experts' LoRA factors, rank r): f32 throughout, each operand streamed once, no atomics (every
// output element is owned by one thread of one block, sums in a fixed order: deterministic).
// Rows are grouped by expert: expert e owns rows [start, start + count) of the grouped operands.

#define ML_ROWS 128   // rows of a product tile (moe_rows_gemm), b columns of a gradient tile (moe_rows_wgrad)
#define ML_COLS 32    // output columns of a product tile, a columns of a gradient tile
#define ML_K 32       // inner depth a step

// out [P, N] rows of a tile = alpha * in [P, K] rows . W_eᵀ + beta * out (beta 0: out is not read),
// W_e(n, k) = w[e][n * wsn + k * wsk] (A_e [r, K] row-major: wsn K, wsk 1; B_e [K, r] as W(n, k) =
// B[k][n]: wsn 1, wsk r). Grid (tiles, ceil(N / 32)), 256 threads; tiles i32 [tiles, 3] = expert,
// first row, rows (1..128). A thread owns 4 rows x 4 columns; the sum over k runs in ascending k.
// vec: N % 4 == 0 and out 16-byte aligned (the output rows are read and written 16 bytes at a time).
extern "C" __global__ void __launch_bounds__(256, 3) moe_rows_gemm(const float* in, int K, const float* const* w, i64 wsn, i64 wsk,
                                                                   const int* tiles, float* out, int N, float alpha, float beta,
                                                                   int vec) {
    ORBIT_TRACE_KERNEL();
    __shared__ __align__(16) float xs[ML_K][ML_ROWS + 4];   // [k, row]
    __shared__ __align__(16) float ws[ML_K][ML_COLS + 4];   // [k, column]
    int e = tiles[3 * blockIdx.x];
    int r0 = tiles[3 * blockIdx.x + 1];
    int rows = tiles[3 * blockIdx.x + 2];
    int c0 = blockIdx.y * ML_COLS;
    const float* we = w[e];
    int tid = threadIdx.x;
    int tx = tid & 7;    // columns 4tx .. 4tx + 3
    int ty = tid >> 3;   // rows 4ty .. 4ty + 3
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    }
    // Operand tiles [lines, 32 k] in pieces of 4 lines x 8 consecutive k a warp (32 bytes of 4 rows), so
    // that their transposed copies [k][line] (row stride 4 mod 32 words) hit 32 distinct banks: element
    // i of a thread is line lb + 8i, depth kb.
    int lane = tid & 31;
    int lb = ((tid >> 5) >> 2 << 2) + (lane >> 3);
    int kb = (((tid >> 5) & 3) << 3) + (lane & 7);
    const float* xp = in + ((i64) r0 + lb) * K + kb;   // + 8i rows, + k0
    float xv[16];
    float wv[4];
    // the next depth step's operands are loaded into registers while the current one is multiplied
#define ML_LOAD(k0)                                                                                         \
    _Pragma("unroll") for (int i = 0; i < 16; i++) {                                                        \
        xv[i] = lb + 8 * i < rows && (k0) + kb < K ? xp[(i64) (8 * i) * K + (k0)] : 0.0f;                   \
    }                                                                                                       \
    _Pragma("unroll") for (int i = 0; i < 4; i++) {                                                         \
        int c = wsk == 1 ? lb + 8 * i : lane;     /* else consecutive threads along W's columns */          \
        int kk = wsk == 1 ? kb : (tid >> 5) + 8 * i;                                                        \
        wv[i] = c0 + c < N && (k0) + kk < K ? we[(i64) (c0 + c) * wsn + (i64) ((k0) + kk) * wsk] : 0.0f;     \
    }
    ML_LOAD(0)
    for (int k0 = 0; k0 < K; k0 += ML_K) {
#pragma unroll
        for (int i = 0; i < 16; i++) xs[kb][lb + 8 * i] = xv[i];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (wsk == 1) {
                ws[kb][lb + 8 * i] = wv[i];
            } else {
                ws[(tid >> 5) + 8 * i][lane] = wv[i];
            }
        }
        __syncthreads();
        if (k0 + ML_K < K) {
            ML_LOAD(k0 + ML_K)
        }
#pragma unroll
        for (int kk = 0; kk < ML_K; kk++) {
            float4 a = *reinterpret_cast<const float4*>(&xs[kk][4 * ty]);
            float4 b = *reinterpret_cast<const float4*>(&ws[kk][4 * tx]);
            float av[4] = {a.x, a.y, a.z, a.w};
            float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
            }
        }
        __syncthreads();
    }
#undef ML_LOAD
    int c = c0 + 4 * tx;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int row = 4 * ty + i;
        if (row < rows) {
            float* o = out + (i64) (r0 + row) * N;
            if (vec && c + 3 < N) {   // N % 4 == 0 and out 16-byte aligned: one 16-byte access a row
                float4 v = make_float4(alpha * acc[i][0], alpha * acc[i][1], alpha * acc[i][2], alpha * acc[i][3]);
                if (beta != 0.0f) {
                    float4 old = *reinterpret_cast<const float4*>(o + c);
                    v.x += beta * old.x;
                    v.y += beta * old.y;
                    v.z += beta * old.z;
                    v.w += beta * old.w;
                }
                *reinterpret_cast<float4*>(o + c) = v;
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if (c + j < N) {
                        float v = alpha * acc[i][j];
                        o[c + j] = beta == 0.0f ? v : v + beta * o[c + j];
                    }
                }
            }
        }
    }
}

// Per expert over its rows: G_e(a, b) += scale * sum over the expert's rows p (ascending, in steps of
// 32) of u[p, a] * v[p, b], u f32 [P, A], v f32 [P, B], G_e(a, b) = g[e][a * gsa + b * gsb]. Grid
// (experts * ceil(B / 128), ceil(A / 32)), 256 threads; experts i32 [n, 3] = expert, first row, rows
// (at least 1); block x = slot * bTiles + b tile. A thread owns 4 a x 4 b.
extern "C" __global__ void __launch_bounds__(256, 3) moe_rows_wgrad(const float* u, int A, const float* v, int B, const int* experts,
                                                                 int bTiles, float* const* g, i64 gsa, i64 gsb, float scale) {
    ORBIT_TRACE_KERNEL();
    __shared__ __align__(16) float us[ML_K][ML_COLS + 4];    // [row, a]
    __shared__ __align__(16) float vs[ML_K][ML_ROWS + 4];    // [row, b]
    int slot = blockIdx.x / bTiles;
    int b0 = (blockIdx.x % bTiles) * ML_ROWS;
    int a0 = blockIdx.y * ML_COLS;
    int e = experts[3 * slot];
    int r0 = experts[3 * slot + 1];
    int rows = experts[3 * slot + 2];
    int tid = threadIdx.x;
    int ta = tid & 7;    // a 4ta .. 4ta + 3
    int tb = tid >> 3;   // b 4tb .. 4tb + 3
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    }
    float uv[4];
    float vv[16];
    // the next rows' operands are loaded into registers while the current ones are multiplied
#define MW_LOAD(p0)                                                                                         \
    _Pragma("unroll") for (int i = 0; i < 4; i++) {                                                         \
        int idx = tid + 256 * i;                                                                            \
        int row = idx >> 5;                                                                                 \
        int a = idx & 31;                                                                                   \
        uv[i] = (p0) + row < rows && a0 + a < A ? u[(i64) (r0 + (p0) + row) * A + a0 + a] : 0.0f;           \
    }                                                                                                       \
    _Pragma("unroll") for (int i = 0; i < 16; i++) {                                                        \
        int idx = tid + 256 * i;                                                                            \
        int row = idx >> 7;                                                                                 \
        int b = idx & 127;                                                                                  \
        vv[i] = (p0) + row < rows && b0 + b < B ? v[(i64) (r0 + (p0) + row) * B + b0 + b] : 0.0f;           \
    }
    MW_LOAD(0)
    for (int p0 = 0; p0 < rows; p0 += ML_K) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int idx = tid + 256 * i;
            us[idx >> 5][idx & 31] = uv[i];
        }
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int idx = tid + 256 * i;
            vs[idx >> 7][idx & 127] = vv[i];
        }
        __syncthreads();
        if (p0 + ML_K < rows) {
            MW_LOAD(p0 + ML_K)
        }
#pragma unroll
        for (int kk = 0; kk < ML_K; kk++) {
            float4 a = *reinterpret_cast<const float4*>(&us[kk][4 * ta]);
            float4 b = *reinterpret_cast<const float4*>(&vs[kk][4 * tb]);
            float av[4] = {a.x, a.y, a.z, a.w};
            float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
            }
        }
        __syncthreads();
    }
#undef MW_LOAD
    float* ge = g[e];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int a = a0 + 4 * ta + i;
        if (a < A) {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int b = b0 + 4 * tb + j;
                if (b < B) {
                    float* o = ge + a * gsa + b * gsb;
                    *o += scale * acc[i][j];
                }
            }
        }
    }
}
