// The expert products of moe_lora.cu (one side narrow: the experts' LoRA factors) on tensor cores at
// f32 accuracy (3xTF32): every f32 operand x is split into x = hi + lo, hi = tf32(x), lo = tf32(x - hi)
// (round to nearest), and a product accumulates lo_a.hi_b + hi_a.lo_b + hi_a.hi_b on mma.sync m16n8k8
// tf32 with f32 accumulation. hi + lo represents x to 2^-22 relative; the dropped lo_a.lo_b is below
// 2^-22 |a.b|: a sum's error is that of an f32 sum (a few 2^-24 of sum |a.b|), not tf32's 2^-11.
//
// Same semantics as moe_lora.cu's moe_rows_gemm / moe_rows_wgrad (the product's grid is 1-D, see below),
// the row operands (in; v) streamed into shared memory by 16-byte cp.async copies, the next depth
// step's copies in flight while the current one is multiplied (two buffers); the narrow expert side
// (W; u) loaded a step ahead into registers and stored split once for all warps. Requirements (the caller falls back to moe_lora.cu
// otherwise): moe_rows_gemm_tc: K % 4 == 0 and in 16-byte aligned; moe_rows_wgrad_tc: A % 4 == 0,
// B % 4 == 0, u and v 16-byte aligned. Every output element is owned by one thread of one block and
// its sum runs in an order fixed by the shapes; no atomics: results are identical run to run.
//
// Fragments (PTX ISA, m16n8k8 .tf32; g = lane / 4, c = lane % 4): A 16x8 row-major a0 (g, c),
// a1 (g + 8, c), a2 (g, c + 4), a3 (g + 8, c + 4); B 8x8 b0 (k c, n g), b1 (k c + 4, n g); C/D 16x8
// d0 (g, 2c), d1 (g, 2c + 1), d2 (g + 8, 2c), d3 (g + 8, 2c + 1).

#define MT_ROWS 128   // rows of a product tile: 8 warps of 16 rows
#define MT_COLS 32    // output columns of a product tile: 4 mma tiles of 8
#define MT_K 32       // depth a step (rows of the experts a step in the gradient)
#define MT_XS (MT_K + 4)   // shared row stride of [row][k] tiles: 4 mod 32 banks
#define MT_GA 32      // a (narrow side) of a gradient tile: 4 mma tiles of 8
#define MT_GB 128     // b (wide side) of a gradient tile: 8 warps of 16
#define MT_GS 8       // shared row padding of [row][a|b] tiles: strides 8 mod 32 banks

// 16 bytes from src into shared dst, or 16 zero bytes when !valid (src is then not read).
__device__ __forceinline__ void mt_cp16(float* dst, const float* src, bool valid) {
    cp_async16_zfill(smem_addr(dst), src, valid);
}

// tf32(x) for finite x: round to nearest, ties away from zero (as cvt.rna.tf32.f32), the 13 low bits
// cleared; two integer operations on the bits.
__device__ __forceinline__ u32 mt_tf32(float x) {
    return (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
}

// x = hi + lo as tf32 bit patterns: hi = tf32(x), lo = tf32(x - hi) (x - hi is exact in f32).
__device__ __forceinline__ void mt_split(float x, u32& hi, u32& lo) {
    hi = mt_tf32(x);
    lo = mt_tf32(x - __uint_as_float(hi));
}

// c += A . B, m16n8k8 tf32.
__device__ __forceinline__ void mt_mma(float* c, const u32* a, u32 b0, u32 b1) {
    mma_tf32_1688(c, a[0], a[1], a[2], a[3], b0, b1);
}

// c += A . B in 3xTF32: the small cross terms first, then hi . hi.
__device__ __forceinline__ void mt_mma3(float* c, const u32* ah, const u32* al, u32 bh0, u32 bh1, u32 bl0, u32 bl1) {
    mt_mma(c, al, bh0, bh1);
    mt_mma(c, ah, bl0, bl1);
    mt_mma(c, ah, bh0, bh1);
}

// out [P, N] rows of a tile = alpha * in [P, K] rows . W_e^T + beta * out (beta 0: out is not read),
// W_e(n, k) = w[e][n * wsn + k * wsk] (as moe_rows_gemm); with sets > 1 expert sets that read the same rows (the
// gate's and the up's A), set s's experts at w[s * E + e] and its output at outs[s] (one set: outs[0]). 1-D grid of
// tiles * sets * colTiles blocks, the sets' column tiles of one row tile consecutive (the row tile is read from
// memory once, then from L2); 256 threads; tiles i32 [tiles, 3] = expert, first row, rows (1..128). Warp w owns rows
// 16w .. 16w + 15 of the tile and its 32 columns (4 mma tiles); the sum over k runs in ascending steps of 8.
// vec: N % 4 == 0 and out 16-byte aligned (8-byte accesses to the output rows).
extern "C" __global__ void __launch_bounds__(256, 3) moe_rows_gemm_tc(const float* in, int K, const float* const* w, int E, i64 wsn,
                                                                      i64 wsk, const int* tiles, int colTiles, int sets,
                                                                      float* const* outs, int N, float alpha, float beta, int vec) {
    ORBIT_TRACE_KERNEL();
    __shared__ __align__(16) float xs[2][MT_ROWS][MT_XS];   // [buffer][row, k] the rows of in
    __shared__ __align__(16) float wh[MT_COLS][MT_XS];      // [column, k] tf32 hi of W
    __shared__ __align__(16) float wl[MT_COLS][MT_XS];      // [column, k] tf32 lo of W
    int tile = blockIdx.x / (sets * colTiles);
    int rem = blockIdx.x - tile * sets * colTiles;
    int set = rem / colTiles;
    int c0 = (rem - set * colTiles) * MT_COLS;
    int e = tiles[3 * tile];
    int r0 = tiles[3 * tile + 1];
    int rows = tiles[3 * tile + 2];
    const float* we = w[(i64) set * E + e];
    float* out = outs[set];
    int tid = threadIdx.x;
    int warp = tid >> 5;
    int lane = tid & 31;
    int g = lane >> 2;
    int c = lane & 3;
    int ra = 16 * warp + g;   // the thread's output rows ra and ra + 8 of the tile
    float acc[4][4];
    float old[4][4];   // the accumulated output (beta != 0), read during the last depth step
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
    }
    // in tile [128 rows, 32 k]: 1024 16-byte pieces, 4 a thread; 8 consecutive threads one row
    const float* xrow[4];
    bool xok[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int idx = tid + 256 * i;
        int row = idx >> 3;
        xok[i] = row < rows;
        xrow[i] = in + (i64) (r0 + (xok[i] ? row : 0)) * K + 4 * (idx & 7);
    }
#define MT_STAGE_X(buf, k0)                                                                  \
    _Pragma("unroll") for (int i = 0; i < 4; i++) {                                          \
        int idx = tid + 256 * i;                                                             \
        bool ok = xok[i] && (k0) + 4 * (idx & 7) < K;                                        \
        mt_cp16(&xs[buf][idx >> 3][4 * (idx & 7)], ok ? xrow[i] + (k0) : in, ok);            \
    }                                                                                        \
    cp_async_commit();
    // W tile [32 columns, 32 k]: 4 elements a thread, consecutive threads along W's unit stride
    float wv[4];
#define MT_LOAD_W(k0)                                                                                       \
    _Pragma("unroll") for (int i = 0; i < 4; i++) {                                                         \
        int idx = tid + 256 * i;                                                                            \
        int n = wsk == 1 ? idx >> 5 : idx & 31;                                                             \
        int kk = wsk == 1 ? idx & 31 : idx >> 5;                                                            \
        wv[i] = c0 + n < N && (k0) + kk < K ? we[(i64) (c0 + n) * wsn + (i64) ((k0) + kk) * wsk] : 0.0f;     \
    }
#define MT_LOAD_OLD()                                                                        \
    _Pragma("unroll") for (int j = 0; j < 4; j++) {                                          \
        int col = c0 + 8 * j + 2 * c;                                                        \
        _Pragma("unroll") for (int h = 0; h < 2; h++) {                                      \
            int row = ra + 8 * h;                                                            \
            old[j][2 * h] = 0.0f;                                                            \
            old[j][2 * h + 1] = 0.0f;                                                        \
            if (row < rows && col < N) {                                                     \
                const float* o = out + (i64) (r0 + row) * N + col;                           \
                if (vec) {                                                                   \
                    float2 v = *reinterpret_cast<const float2*>(o);                          \
                    old[j][2 * h] = v.x;                                                     \
                    old[j][2 * h + 1] = v.y;                                                 \
                } else {                                                                     \
                    old[j][2 * h] = o[0];                                                    \
                    if (col + 1 < N) old[j][2 * h + 1] = o[1];                               \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }
    MT_STAGE_X(0, 0)
    MT_LOAD_W(0)
    int s = 0;
    for (int k0 = 0; k0 < K; k0 += MT_K, s ^= 1) {
        bool last = k0 + MT_K >= K;
        if (last && beta != 0.0f) {   // the accumulated output: its latency overlaps the last step's
            MT_LOAD_OLD()
        }
        // W of this step into shared memory as hi and lo (every warp reads all of it: split once here)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int idx = tid + 256 * i;
            int n = wsk == 1 ? idx >> 5 : idx & 31;
            int kk = wsk == 1 ? idx & 31 : idx >> 5;
            u32 hi, lo;
            mt_split(wv[i], hi, lo);
            wh[n][kk] = __uint_as_float(hi);
            wl[n][kk] = __uint_as_float(lo);
        }
        if (!last) {
            MT_STAGE_X(s ^ 1, k0 + MT_K)
            MT_LOAD_W(k0 + MT_K)
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (16 * warp < rows) {   // warp-uniform: a warp whose rows are all past the tile's skips them
#pragma unroll
            for (int ks = 0; ks < MT_K; ks += 8) {
                u32 ah[4], al[4];
                mt_split(xs[s][ra][ks + c], ah[0], al[0]);
                mt_split(xs[s][ra + 8][ks + c], ah[1], al[1]);
                mt_split(xs[s][ra][ks + c + 4], ah[2], al[2]);
                mt_split(xs[s][ra + 8][ks + c + 4], ah[3], al[3]);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    // B(k, n) = W(n, k): b0 (k c, n g), b1 (k c + 4, n g)
                    u32 bh0 = __float_as_uint(wh[8 * j + g][ks + c]);
                    u32 bh1 = __float_as_uint(wh[8 * j + g][ks + c + 4]);
                    u32 bl0 = __float_as_uint(wl[8 * j + g][ks + c]);
                    u32 bl1 = __float_as_uint(wl[8 * j + g][ks + c + 4]);
                    mt_mma3(acc[j], ah, al, bh0, bh1, bl0, bl1);
                }
            }
        }
        __syncthreads();
    }
#undef MT_STAGE_X
#undef MT_LOAD_W
#undef MT_LOAD_OLD
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int col = c0 + 8 * j + 2 * c;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int row = ra + 8 * h;
            if (row < rows && col < N) {
                float* o = out + (i64) (r0 + row) * N + col;
                float v0 = alpha * acc[j][2 * h];
                float v1 = alpha * acc[j][2 * h + 1];
                if (beta != 0.0f) {
                    v0 += beta * old[j][2 * h];
                    v1 += beta * old[j][2 * h + 1];
                }
                if (vec) {   // N even: col + 1 < N
                    *reinterpret_cast<float2*>(o) = make_float2(v0, v1);
                } else {
                    o[0] = v0;
                    if (col + 1 < N) o[1] = v1;
                }
            }
        }
    }
}

// Per expert over its rows: G_e(a, b) += scale * sum over the expert's rows p of u[p, a] * v[p, b]
// (as moe_rows_wgrad), u f32 [P, A] (the narrow side), v f32 [P, B], G_e(a, b) = g[e][a * gsa + b * gsb].
// Grid (experts * ceil(B / 128), ceil(A / 32)), 256 threads; experts i32 [n, 3] = expert, first row, rows
// (at least 1); block x = slot * bTiles + b tile. The product is D [b, a] += V^T [b, p] . U [p, a]: warp
// w owns b 16w .. 16w + 15 of the tile and its 32 a (4 mma tiles); v streams through shared memory by
// cp.async, u (small, read by every warp) is loaded a step ahead into registers and stored split into
// hi and lo. The sum over the rows runs in ascending steps of 8.
extern "C" __global__ void __launch_bounds__(256, 3) moe_rows_wgrad_tc(const float* u, int A, const float* v, int B,
                                                                       const int* experts, int bTiles, float* const* g,
                                                                       i64 gsa, i64 gsb, float scale) {
    ORBIT_TRACE_KERNEL();
    __shared__ __align__(16) float vs[2][MT_K][MT_GB + MT_GS];   // [buffer][row, b]
    __shared__ __align__(16) float uh[MT_K][MT_GA + MT_GS];      // [row, a] tf32 hi of u
    __shared__ __align__(16) float ul[MT_K][MT_GA + MT_GS];      // [row, a] tf32 lo of u
    int slot = blockIdx.x / bTiles;
    int b0 = (blockIdx.x - slot * bTiles) * MT_GB;
    int a0 = blockIdx.y * MT_GA;
    int e = experts[3 * slot];
    int r0 = experts[3 * slot + 1];
    int rows = experts[3 * slot + 2];
    int tid = threadIdx.x;
    int warp = tid >> 5;
    int lane = tid & 31;
    int gq = lane >> 2;
    int c = lane & 3;
    int wb = 16 * warp;   // the warp's b (mma rows) within the tile
    float acc[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
    }
    // v tile [32 rows, 128 b]: 1024 16-byte pieces, 4 a thread, 32 consecutive threads one row
    int vb = 4 * (tid & 31);
    bool vok = b0 + vb < B;
    const float* vp = v + (i64) r0 * B + b0 + vb;   // + row * B
#define MT_STAGE_V(buf, p0)                                                                      \
    _Pragma("unroll") for (int i = 0; i < 4; i++) {                                              \
        int row = (tid >> 5) + 8 * i;                                                            \
        bool ok = vok && (p0) + row < rows;                                                      \
        mt_cp16(&vs[buf][row][vb], ok ? vp + (i64) ((p0) + row) * B : v, ok);                    \
    }                                                                                            \
    cp_async_commit();
    // u tile [32 rows, 32 a]: 4 elements a thread, 32 consecutive threads along a row
    int ua = tid & 31;
    bool uok = a0 + ua < A;
    const float* up = u + (i64) r0 * A + a0 + ua;   // + row * A
    float uv[4];
#define MT_LOAD_U(p0)                                                                            \
    _Pragma("unroll") for (int i = 0; i < 4; i++) {                                              \
        int row = (tid >> 5) + 8 * i;                                                            \
        uv[i] = uok && (p0) + row < rows ? up[(i64) ((p0) + row) * A] : 0.0f;                    \
    }
    MT_STAGE_V(0, 0)
    MT_LOAD_U(0)
    int s = 0;
    for (int p0 = 0; p0 < rows; p0 += MT_K, s ^= 1) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int row = (tid >> 5) + 8 * i;
            u32 hi, lo;
            mt_split(uv[i], hi, lo);
            uh[row][ua] = __uint_as_float(hi);
            ul[row][ua] = __uint_as_float(lo);
        }
        if (p0 + MT_K < rows) {
            MT_STAGE_V(s ^ 1, p0 + MT_K)
            MT_LOAD_U(p0 + MT_K)
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (b0 + wb < B) {   // warp-uniform: a warp whose b are all past B skips them
#pragma unroll
            for (int ks = 0; ks < MT_K; ks += 8) {
                // A(m, k) = v[p0 + ks + k][b0 + wb + m]: a0 (m g, k c), a1 (g + 8, c), a2 (g, c + 4), a3 (g + 8, c + 4)
                u32 ah[4], al[4];
                mt_split(vs[s][ks + c][wb + gq], ah[0], al[0]);
                mt_split(vs[s][ks + c][wb + gq + 8], ah[1], al[1]);
                mt_split(vs[s][ks + c + 4][wb + gq], ah[2], al[2]);
                mt_split(vs[s][ks + c + 4][wb + gq + 8], ah[3], al[3]);
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    // B(k, n) = u[p0 + ks + k][a0 + 8j + n]: b0 (k c, n g), b1 (k c + 4, n g)
                    u32 bh0 = __float_as_uint(uh[ks + c][8 * j + gq]);
                    u32 bh1 = __float_as_uint(uh[ks + c + 4][8 * j + gq]);
                    u32 bl0 = __float_as_uint(ul[ks + c][8 * j + gq]);
                    u32 bl1 = __float_as_uint(ul[ks + c + 4][8 * j + gq]);
                    mt_mma3(acc[j], ah, al, bh0, bh1, bl0, bl1);
                }
            }
        }
        __syncthreads();
    }
#undef MT_STAGE_V
#undef MT_LOAD_U
    float* ge = g[e];
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int b = b0 + wb + gq + 8 * (i >> 1);
            int a = a0 + 8 * j + 2 * c + (i & 1);
            if (a < A && b < B) {
                float* o = ge + a * gsa + b * gsb;
                *o += scale * acc[j][i];
            }
        }
    }
}
