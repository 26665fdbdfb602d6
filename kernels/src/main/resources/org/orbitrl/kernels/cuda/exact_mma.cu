// Exact mode's products on tensor cores: y [M, N] = x [M, K] . w^T, where a row of y is computed by the same
// instructions in the same order whatever M is and wherever the row sits in the batch (a decode step's row equals the
// training forward's row bit for bit), at f32 precision.
//
// Operands as bf16 planes: an f32 value v is the sum of three bf16 values v0 = bf16(v), v1 = bf16(v - v0),
// v2 = bf16(v - v0 - v1) (each difference exact in f32; the sum equals v for every finite v of normal range). x is
// split that way in shared memory, a chunk at a time; the weight comes as J planes: J = 1 a bf16 weight as it is,
// J = 3 an f32 weight split by exact_split_planes. Every product x_i . w_j of bf16 values is exact in the tensor core's
// f32 accumulation, so the sum over the terms with i + j <= 2 (those below f32's rounding left out) is the f32 dot
// product of x and w up to the order and rounding of its f32 additions.
//
// Order: the accumulator of an output starts at 0 and takes, for K's 16-value chunks in increasing order, the terms
// of the chunk in a fixed order (the smallest first): J = 1: x2.w0, x1.w0, x0.w0; J = 3: x2.w0, x1.w1, x0.w2, x1.w0,
// x0.w1, x0.w0; each an mma m16n8k16 into the same accumulator; with K in ranges (below), each range's accumulator
// so, then the ranges' sums added in order. Nothing in that order depends on M, on the row's place in its tile or on
// which block finishes first: no atomics.
//
// Work split: block (blockIdx.x, blockIdx.y) of W warps = tokens [64 blockIdx.x, +64), weight rows [R r, +R) with R =
// 16 RT W and r = blockIdx.y % (gridDim.y / splits), RT tiles of 16 rows a warp (the weights are the mma's A operand,
// the tokens its B operand in n-tiles of 8; each B fragment a warp loads serves its RT tiles), over the (blockIdx.y /
// (gridDim.y / splits))-th of `splits` contiguous ranges of K's chunks (uneven where they do not divide). Consecutive
// blocks share their weight rows (read from DRAM once, then L2) and sweep the tokens, whose f32 rows the L2 holds at
// training sizes. Unsplit, a block writes y; split, it writes its range's sums into part [split][M][N], and
// exact_sum_splits adds the splits in order 0, 1, ... The count of splits depends on N, K and the device alone
// (CudaExactOps), never on M, so a row's sums and their order stay those of any batch.
// Both operands stream through an EM_ST-stage cp.async pipeline, EM_KC values of K a stage; rows past M or N and values
// past K are zero-filled (their products reach no output, or add exact zeros). K is a multiple of 8 and x and the
// planes 16-byte aligned (CudaExactOps sees to both).

#include "quant_formats.cuh"

#define EM_TOK 64                 // tokens a block: 8 n-tiles of 8
#define EM_KC 32                  // values of K a stage
#define EM_ST 4                   // stages
#define EM_XROWB (4 * EM_KC + 16) // bytes of a staged f32 x row (16 of padding)
#define EM_WROWB (2 * EM_KC + 16) // bytes of a staged bf16 row: conflict-free ldmatrix

// planes [3][n]: w = planes[0] + planes[1] + planes[2] as above (bf16 bits).
extern "C" __global__ void exact_split_planes(const float* w, u16* planes, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float v = w[i];
        u16 h0 = f32_to_bf16_bits(v);
        float r1 = v - bf16_to_f32(h0);
        u16 h1 = f32_to_bf16_bits(r1);
        float r2 = r1 - bf16_to_f32(h1);
        planes[i] = h0;
        planes[n + i] = h1;
        planes[2 * n + i] = f32_to_bf16_bits(r2);
    }
}

// The planes of w^T: w [N, K] (f32, or bf16 where wBf16) into planes [J][K][N] (J = 1: bf16(w) itself, exact for a bf16
// w; J = 3: as exact_split_planes), for dx = dy . w as the product dy . (w^T)^T. Blocks of 256 threads over 32 x 32
// tiles (blockIdx.x along K, blockIdx.y along N), through shared memory so that both sides are read and written in rows.
extern "C" __global__ void exact_planes_t(const void* w, int wBf16, u16* planes, int N, int K, int J) {
    ORBIT_TRACE_KERNEL();
    __shared__ float tile[32][33];
    int k0 = blockIdx.x * 32;
    int n0 = blockIdx.y * 32;
    int tx = threadIdx.x & 31;
    int ty = threadIdx.x >> 5;
    for (int r = ty; r < 32; r += 8) {
        int n = n0 + r;
        int k = k0 + tx;
        float v = 0.0f;
        if (n < N && k < K) {
            i64 i = (i64) n * K + k;
            v = wBf16 ? bf16_to_f32(((const u16*) w)[i]) : ((const float*) w)[i];
        }
        tile[r][tx] = v;
    }
    __syncthreads();
    i64 nk = (i64) N * K;
    for (int r = ty; r < 32; r += 8) {
        int k = k0 + r;
        int n = n0 + tx;
        if (k < K && n < N) {
            float v = tile[tx][r];
            i64 o = (i64) k * N + n;
            u16 h0 = f32_to_bf16_bits(v);
            planes[o] = h0;
            if (J > 1) {
                float r1 = v - bf16_to_f32(h0);
                u16 h1 = f32_to_bf16_bits(r1);
                planes[nk + o] = h1;
                planes[2 * nk + o] = f32_to_bf16_bits(r1 - bf16_to_f32(h1));
            }
        }
    }
}

// Four f32 values into their three bf16 planes, two 32-bit words each (the even element in the low half).
__device__ __forceinline__ void em_split4(float4 v, uint2* p0, uint2* p1, uint2* p2) {
    u32 a0 = f32x2_to_bf16x2(v.x, v.y);
    u32 b0 = f32x2_to_bf16x2(v.z, v.w);
    float rx = v.x - __uint_as_float(a0 << 16), ry = v.y - __uint_as_float(a0 & 0xffff0000u);
    float rz = v.z - __uint_as_float(b0 << 16), rw = v.w - __uint_as_float(b0 & 0xffff0000u);
    u32 a1 = f32x2_to_bf16x2(rx, ry);
    u32 b1 = f32x2_to_bf16x2(rz, rw);
    rx -= __uint_as_float(a1 << 16);
    ry -= __uint_as_float(a1 & 0xffff0000u);
    rz -= __uint_as_float(b1 << 16);
    rw -= __uint_as_float(b1 & 0xffff0000u);
    *p0 = make_uint2(a0, b0);
    *p1 = make_uint2(a1, b1);
    *p2 = make_uint2(f32x2_to_bf16x2(rx, ry), f32x2_to_bf16x2(rz, rw));
}

// x's staged chunk (TOK rows of EM_KC f32 values, EM_XROWB bytes apart) into its three bf16 planes at planes
// ([3][TOK] rows of EM_WROWB bytes), by THREADS threads.
template <int THREADS, int TOK = EM_TOK>
__device__ __forceinline__ void em_split_x(const u8* xs, u8* planes, int tid) {
#pragma unroll
    for (int u = 0; u < TOK * EM_KC / 4 / THREADS; u++) {
        int i = tid + THREADS * u;
        int tok = i / (EM_KC / 4);
        int k4 = i % (EM_KC / 4);
        float4 v = *(const float4*) (xs + tok * EM_XROWB + k4 * 16);
        u8* p = planes + tok * EM_WROWB + k4 * 8;
        em_split4(v, (uint2*) p, (uint2*) (p + TOK * EM_WROWB), (uint2*) (p + 2 * TOK * EM_WROWB));
    }
}

// The products of one staged chunk of EM_KC values into acc, in the order of the header: the weight's J planes at
// wbase (plane j at wbase + j * wplane; rows EM_WROWB bytes apart, this warp's RT tiles from its aoff), x's three
// planes at planesX (boff), TOK tokens (TOK / 8 n-tiles; an output's sum is the same whatever TOK is).
template <int J, int RT, int TOK = EM_TOK>
__device__ __forceinline__ void em_mma_chunk(u32 wbase, u32 wplane, u32 planesX, u32 aoff, u32 boff,
                                             float (&acc)[RT][TOK / 8][4]) {
#pragma unroll
    for (int kk = 0; kk < EM_KC / 16; kk++) {
        u32 a[RT][J][4];
#pragma unroll
        for (int r = 0; r < RT; r++)
#pragma unroll
            for (int j = 0; j < J; j++) ldsm_x4(wbase + (u32) j * wplane + (u32) (r * 16 * EM_WROWB) + aoff + kk * 32, a[r][j]);
#pragma unroll
        for (int nt = 0; nt < TOK / 8; nt += 2) {
            u32 b[3][4];
#pragma unroll
            for (int i = 0; i < 3; i++) {
                ldsm_x4(planesX + (u32) (i * TOK * EM_WROWB) + boff + (u32) (nt * 8 * EM_WROWB) + kk * 32, b[i]);
            }
#pragma unroll
            for (int r = 0; r < RT; r++) {
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    float* cc = acc[r][nt + h];
                    const u32* a0 = a[r][0];
                    if (J == 1) {
                        mma_bf16_16816(cc, a0[0], a0[1], a0[2], a0[3], b[2][2 * h], b[2][2 * h + 1]);
                        mma_bf16_16816(cc, a0[0], a0[1], a0[2], a0[3], b[1][2 * h], b[1][2 * h + 1]);
                        mma_bf16_16816(cc, a0[0], a0[1], a0[2], a0[3], b[0][2 * h], b[0][2 * h + 1]);
                    } else {
                        const u32* a1 = a[r][J > 1 ? 1 : 0];
                        const u32* a2 = a[r][J > 2 ? 2 : 0];
                        mma_bf16_16816(cc, a0[0], a0[1], a0[2], a0[3], b[2][2 * h], b[2][2 * h + 1]);
                        mma_bf16_16816(cc, a1[0], a1[1], a1[2], a1[3], b[1][2 * h], b[1][2 * h + 1]);
                        mma_bf16_16816(cc, a2[0], a2[1], a2[2], a2[3], b[0][2 * h], b[0][2 * h + 1]);
                        mma_bf16_16816(cc, a0[0], a0[1], a0[2], a0[3], b[1][2 * h], b[1][2 * h + 1]);
                        mma_bf16_16816(cc, a1[0], a1[1], a1[2], a1[3], b[0][2 * h], b[0][2 * h + 1]);
                        mma_bf16_16816(cc, a0[0], a0[1], a0[2], a0[3], b[0][2 * h], b[0][2 * h + 1]);
                    }
                }
            }
        }
    }
}

// total = acc (the first range) or total + acc (a later one, added as exact_sum_splits adds it); acc = 0.
template <int RT, int NT>
__device__ __forceinline__ void em_fold(float (&acc)[RT][NT][4], float (&total)[RT][NT][4], bool first) {
#pragma unroll
    for (int r = 0; r < RT; r++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                total[r][j][q] = first ? acc[r][j][q] : __fadd_rn(total[r][j][q], acc[r][j][q]);
                acc[r][j][q] = 0.0f;
            }
}

// w: plane j at w + j * planeStride, each [N, K] row-major bf16; y: [splits][M][N] (y itself when unsplit). FOLD: the
// block takes every range of K in turn, gridDim.y = the row tiles alone, and adds the ranges' sums as it ends each, in
// order, as exact_sum_splits adds them (the first range's sum, then + the second's, ...), writing y [M][N] itself: the
// bits of the split form, without the split sums' round trip through memory (for calls with blocks enough unsplit).
template <int J, int W, int RT, bool FOLD>
__device__ __forceinline__ void exact_mma_tile(const float* x, int M, int K, const u16* w, i64 planeStride, float* y,
                                               int N, int splits) {
    constexpr int THREADS = 32 * W;                              // W warps
    constexpr int ROWS = 16 * RT * W;                            // weight rows a block: RT tiles of 16 a warp
    constexpr int XBYTES = EM_TOK * EM_XROWB;
    constexpr int WBYTES = ROWS * EM_WROWB;
    constexpr int STAGE = XBYTES + J * WBYTES;
    constexpr int XCP = EM_TOK * (EM_KC / 4) / THREADS;      // 16-byte x copies a thread a stage
    constexpr int WCP = ROWS * (EM_KC / 8) / THREADS;     // 16-byte copies a thread a stage, a plane
    static_assert(XCP * THREADS == EM_TOK * (EM_KC / 4) && WCP * THREADS == ROWS * (EM_KC / 8), "copy rounds");
    extern __shared__ __align__(16) u8 em_shared[];
    int tid = threadIdx.x;
    int lane = tid & 31;
    int warp = tid >> 5;
    int g = lane >> 2;
    int t = lane & 3;
    int m0 = blockIdx.x * EM_TOK;
    int rowTiles = FOLD ? gridDim.y : gridDim.y / splits;
    int split = FOLD ? 0 : blockIdx.y / rowTiles;
    int n0 = (blockIdx.y % rowTiles) * ROWS;
    int all = (K + EM_KC - 1) / EM_KC;
    int c0 = FOLD ? 0 : (int) ((i64) all * split / splits);
    int chunks = FOLD ? all : (int) ((i64) all * (split + 1) / splits) - c0;
    u32 sm = smem_addr(em_shared);
    u32 planesX = sm + (u32) (EM_ST * STAGE); // x's three planes of the stage being multiplied: [3][EM_TOK][EM_WROWB]
    u8* splitPtr = em_shared + EM_ST * STAGE;

    // this thread's copies: x row tid / 8 + (THREADS / 8) it, piece tid % 8 (4 f32); weight row tid / 4 +
    // (THREADS / 4) it, piece tid % 4 (8 bf16) of each plane. Rows past M or N read row 0 (a valid address), zero-filled.
    const float* xsrc[XCP];
    bool xok[XCP];
#pragma unroll
    for (int it = 0; it < XCP; it++) {
        int row = m0 + (tid >> 3) + (THREADS / 8) * it;
        xok[it] = row < M;
        xsrc[it] = x + (i64) (xok[it] ? row : 0) * K + c0 * EM_KC + (tid & 7) * 4;
    }
    const u16* wsrc[WCP];
    bool wok[WCP];
#pragma unroll
    for (int it = 0; it < WCP; it++) {
        int row = n0 + (tid >> 2) + (THREADS / 4) * it;
        wok[it] = row < N;
        wsrc[it] = w + (i64) (wok[it] ? row : 0) * K + c0 * EM_KC + (tid & 3) * 8;
    }
    auto load = [&](int c) { // chunk c0 + c into slot c % EM_ST
        u32 base = sm + (u32) ((c % EM_ST) * STAGE);
        int k0 = c * EM_KC;
#pragma unroll
        for (int it = 0; it < XCP; it++) {
            bool ok = xok[it] && (c0 + c) * EM_KC + (tid & 7) * 4 < K;
            cp_async16_zfill(base + (u32) (((tid >> 3) + (THREADS / 8) * it) * EM_XROWB + (tid & 7) * 16),
                             ok ? xsrc[it] + k0 : x, ok);
        }
#pragma unroll
        for (int j = 0; j < J; j++) {
#pragma unroll
            for (int it = 0; it < WCP; it++) {
                bool ok = wok[it] && (c0 + c) * EM_KC + (tid & 3) * 8 < K;
                cp_async16_zfill(base + (u32) (XBYTES + j * WBYTES + ((tid >> 2) + (THREADS / 4) * it) * EM_WROWB +
                                               (tid & 3) * 16),
                                 ok ? wsrc[it] + j * planeStride + k0 : w, ok);
            }
        }
    };

#pragma unroll
    for (int c = 0; c < EM_ST - 1; c++) {
        if (c < chunks) load(c);
        cp_async_commit();
    }
    float acc[RT][8][4];
    float total[FOLD ? RT : 1][8][4]; // FOLD: the ranges' sums so far
#pragma unroll
    for (int r = 0; r < RT; r++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[r][j][q] = 0.0f;
    int range = 0;   // FOLD: the range of K being summed
    // FOLD: adds into total the sum of every range that ends after `done` chunks (a range of none adds its zeros, as a
    // split block that sums nothing writes them)
    auto foldTo = [&](int done) {
        if constexpr (FOLD) {
            while (range < splits && (int) ((i64) all * (range + 1) / splits) == done) em_fold<RT, 8>(acc, total, range++ == 0);
        }
    };
    foldTo(0);
    // ldmatrix rows (as dmma.cu): A = weight rows 16 (RT warp + r) + (lane % 8) + 8 ((lane / 8) % 2), k + 8 (lane / 16); B =
    // tokens (lane % 8) + 8 (lane / 16) of an n-tile pair, k + 8 ((lane / 8) % 2)
    u32 aoff = (u32) ((warp * 16 * RT + (lane & 7) + ((lane >> 3) & 1) * 8) * EM_WROWB + (lane >> 4) * 16);
    u32 boff = (u32) (((lane & 7) + (lane >> 4) * 8) * EM_WROWB + ((lane >> 3) & 1) * 16);
    for (int c = 0; c < chunks; c++) {
        cp_async_wait<EM_ST - 2>(); // chunk c has landed (this thread's copies)
        __syncthreads();            // everyone's; every warp is done with the planes and with the slot refilled below
        if (c + EM_ST - 1 < chunks) load(c + EM_ST - 1);
        cp_async_commit();
        em_split_x<THREADS>(em_shared + (c % EM_ST) * STAGE, splitPtr, tid); // x's values into their planes
        __syncthreads();
        em_mma_chunk<J, RT>(sm + (u32) ((c % EM_ST) * STAGE + XBYTES), WBYTES, planesX, aoff, boff, acc);
        foldTo(c + 1);
    }
    cp_async_wait<0>();

    // acc[r][j][q]: weight row 16 (RT warp + r) + g (+ 8 for q >= 2), token 8 j + 2 t (+ 1 for odd q)
#pragma unroll
    for (int r = 0; r < RT; r++) {
        int row = n0 + (warp * RT + r) * 16 + g;
#pragma unroll
        for (int j = 0; j < 8; j++) {
#pragma unroll
            for (int q = 0; q < 4; q++) {
                int tok = m0 + 8 * j + 2 * t + (q & 1);
                int n = row + 8 * (q >> 1);
                float v;
                if constexpr (FOLD) v = total[r][j][q];
                else v = acc[r][j][q];
                if (tok < M && n < N) y[((i64) split * M + tok) * N + n] = v;
            }
        }
    }
}

// y [n] = part[0][i] + part[1][i] + ... + part[splits - 1][i], added in that order (part [splits][n]).
extern "C" __global__ void exact_sum_splits(const float* part, int splits, i64 n, float* y) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float s = part[i];
        for (int p = 1; p < splits; p++) s += part[p * n + i];
        y[i] = s;
    }
}

// J planes of the weight, W warps of RT row tiles (16 RT W weight rows) a block.
#define EXACT_MMA_KERNEL(NAME, J, W, RT, FOLD)                                                                         \
    extern "C" __global__ void __launch_bounds__(32 * W) NAME(const float* x, int M, int K, const u16* w,              \
                                                              i64 planeStride, float* y, int N, int splits) {          \
        ORBIT_TRACE_KERNEL();                                                                                          \
        exact_mma_tile<J, W, RT, FOLD>(x, M, K, w, planeStride, y, N, splits);                                         \
    }

EXACT_MMA_KERNEL(exact_mma_j1, 1, 4, 1, false)
EXACT_MMA_KERNEL(exact_mma_j1w8, 1, 8, 1, false)
EXACT_MMA_KERNEL(exact_mma_j1r2, 1, 4, 2, false)
EXACT_MMA_KERNEL(exact_mma_j3, 3, 4, 1, false)
// every range of K in one block, their sums added as they end (the bits of the kernels above and exact_sum_splits)
EXACT_MMA_KERNEL(exact_mma_j1_fold, 1, 4, 1, true)
EXACT_MMA_KERNEL(exact_mma_j1w8_fold, 1, 8, 1, true)
EXACT_MMA_KERNEL(exact_mma_j1r2_fold, 1, 4, 2, true)
EXACT_MMA_KERNEL(exact_mma_j3_fold, 3, 4, 1, true)

// ---------------------------------------------------------------------------------------------------------------------
// Grouped exact products of mixture-of-experts layers: for every expert e with rows, out rows [o_e, o_(e+1)) =
// x rows [o_e, o_(e+1)) . W_e^T, all of a call's experts in one launch (or a few: the split sums bound the rows a launch
// takes), each row by the instructions and order of the dense kernels above at 64 weight rows a block (J = 3 with
// exact_mma_j3's tiles; a bf16 weight J = 1 with exact_mma_j1's), so a row's result is that of the dense product of its
// expert's weight, alone or in any batch. The weight is read as stored and made into its planes in shared memory a
// chunk at a time: an f32 weight split into three; a quantized one (codes, scales, zeros as quant_formats.cuh) decoded
// to f32 exactly as dequant does (code value times scale, one f32 multiply) and split into three; a bf16 weight is its
// own plane.
//
// Block (blockIdx.x, blockIdx.y): tile[blockIdx.x] = {slot, first row, rows (<= 64), 0} of the launch's tiles (an
// expert's rows cut into tiles of 64 from its first row); blockIdx.y as exact_mma_tile (row tile and range of K). The
// weight of slot s is wtab[4 s ..]: {data (codes for a quantized weight), scales, zeros (0: symmetric), global scale
// bits}. Unsplit, rows go straight to y; split, to part [splits][L][N] at row (row - r0), the launch's rows being
// [r0, r0 + L) (a tile's rows outside them are left to another launch), then added in order by exact_sum_splits into
// y + r0 N. A tile of no rows returns at once: the table may be made on the device for the most tiles a call can have
// (exact_group_tiles), its unused entries {0, 0, 0, 0}. Which tile a row falls in changes none of its bits.

#define EMG_F32 3   // source kinds beside FMT_INT4, FMT_MXFP4, FMT_NVFP4
#define EMG_BF16 4
#define EMG_ROWS 64 // weight rows a block: 4 warps of one 16-row tile

// Raw bytes a stage holds of the weight's 64 rows: f32 rows as x's, bf16 rows as a plane, a quantized row's 16 code
// bytes with the 4-byte words holding its scales and its zero nibble.
template <int SRC, bool TRANS>
__host__ __device__ constexpr int emg_raw_bytes() {
    return TRANS ? (SRC == EMG_BF16 ? EM_KC * 2 * EMG_ROWS : EM_KC * (EMG_ROWS / 2 + 8 + 8))
                 : SRC == EMG_F32 ? EMG_ROWS * EM_XROWB : SRC == EMG_BF16 ? EMG_ROWS * EM_WROWB : EMG_ROWS * (16 + 4 + 4);
}

// Byte offset of the scales of chunk c of row n (K values a row) in the scales array.
template <int SRC>
__device__ __forceinline__ i64 emg_scale_byte(i64 n, int c, int K) {
    if (SRC == FMT_INT4) return (n * (K / 32) + c) * 2;
    if (SRC == FMT_MXFP4) return n * (K / 32) + c;
    return n * (K / 16) + 2 * c;
}

// CODES (INT4, forward only): the weight's plane is its codes (q - zero, small integers, exact in bf16) and each
// chunk of 32 values (one scale group) is summed on its own, x's three planes times the codes in the J = 1 order, then
// added into the range's sum times the row's scale, acc = fma(s, chunk sum, acc): three products a 16-value step where
// the dequantized weight's three planes take six, and no dequantization. Other bits than the planes' form (within f32
// rounding of the same sum); every exact INT4 forward product takes one form or the other (CudaExactExperts).
// tile: {slot, first row of x, rows, 0}; the weight: its data (codes), scales, zero points and global scale.
template <int SRC, bool TRANS, int TOK, bool FOLD, bool CODES = false>
__device__ __forceinline__ void exact_mma_group_tile(const float* xAll, int K, int4 tile, const u8* wdata, const u8* scales,
                                                     const u32* zeros, float global, int N, float* y, float* part, int r0,
                                                     int L, int splits) {
    static_assert(!CODES || (SRC == FMT_INT4 && !TRANS), "the codes form is INT4's forward product");
    constexpr int THREADS = 128;
    // weight planes a product takes: a bf16 weight and INT4's codes are one plane; so is an MXFP4 weight, whose values
    // (an E2M1 value times a power of two) are bf16 exactly: its second and third planes are zeros, and the products
    // of those planes (the 3-plane order's 2nd, 3rd and 5th) would leave the sums as they are, so the bits are the
    // three planes' (em_mma_chunk keeps the other products' order)
    constexpr int J = SRC == EMG_BF16 || CODES || SRC == FMT_MXFP4 ? 1 : 3;
    constexpr bool QUANT = SRC <= FMT_NVFP4;
    constexpr int XBYTES = TOK * EM_XROWB;
    constexpr int STAGE = XBYTES + emg_raw_bytes<SRC, TRANS>();
    constexpr int PLANE = EMG_ROWS * EM_WROWB;  // bytes of one weight plane in shared memory
    constexpr int XCP = TOK * (EM_KC / 4) / THREADS;
    static_assert(XCP * THREADS == TOK * (EM_KC / 4), "x copy rounds");
    extern __shared__ __align__(16) u8 em_shared[];
    int tid = threadIdx.x;
    int lane = tid & 31;
    int warp = tid >> 5;
    int g = lane >> 2;
    int t = lane & 3;
    int xRow = tile.y;
    int M = tile.z;
    if (splits > 1 && !FOLD) {   // the launch's rows [r0, r0 + L): a tile across either end keeps its rows within them
        int end = min(xRow + M, r0 + L);
        xRow = max(xRow, r0);
        M = end - xRow;
    }
    if (M <= 0) return; // an unused entry of a table made on the device (exact_group_tiles), or no rows in range
    const float* x = xAll + (i64) xRow * K;
    int rowTiles = FOLD ? gridDim.y : gridDim.y / splits;
    int split = FOLD ? 0 : blockIdx.y / rowTiles;
    int n0 = (blockIdx.y % rowTiles) * EMG_ROWS;
    int all = (K + EM_KC - 1) / EM_KC;
    int c0 = FOLD ? 0 : (int) ((i64) all * split / splits);
    int chunks = FOLD ? all : (int) ((i64) all * (split + 1) / splits) - c0;
    u32 sm = smem_addr(em_shared);
    u32 planesX = sm + (u32) (EM_ST * STAGE);
    u8* splitPtr = em_shared + EM_ST * STAGE;
    u8* wplanes = splitPtr + 3 * TOK * EM_WROWB;  // the weight's three planes (not for bf16: the stage's rows are its plane)

    const float* xsrc[XCP];
    bool xok[XCP];
#pragma unroll
    for (int it = 0; it < XCP; it++) {
        int row = (tid >> 3) + (THREADS / 8) * it;
        xok[it] = row < M;
        xsrc[it] = x + (i64) (xok[it] ? row : 0) * K + c0 * EM_KC + (tid & 7) * 4;
    }
    auto load = [&](int c) { // chunk c0 + c into slot c % EM_ST
        u32 base = sm + (u32) ((c % EM_ST) * STAGE);
        int k0 = c * EM_KC;
        int kc = c0 + c;
#pragma unroll
        for (int it = 0; it < XCP; it++) {
            bool ok = xok[it] && kc * EM_KC + (tid & 7) * 4 < K;
            cp_async16_zfill(base + (u32) (((tid >> 3) + (THREADS / 8) * it) * EM_XROWB + (tid & 7) * 16),
                             ok ? xsrc[it] + k0 : x, ok);
        }
        u32 raw = base + (u32) XBYTES;
        if (TRANS) {
            // W [K, N] as stored: its rows kc * 32 .. + 31 (all within K), columns n0 .. n0 + 63 (those past N zero-filled)
            if (SRC == EMG_BF16) {
                const u16* w = (const u16*) wdata;
#pragma unroll
                for (int it = 0; it < EM_KC * 8 / THREADS; it++) {
                    int i = tid + THREADS * it;
                    int r = i >> 3;
                    int col = n0 + (i & 7) * 8;
                    bool ok = col < N;
                    cp_async16_zfill(raw + (u32) (r * 2 * EMG_ROWS + (i & 7) * 16), ok ? w + (i64) (kc * EM_KC + r) * N + col : w, ok);
                }
            } else {
                int r = (tid >> 1) & (EM_KC - 1);     // W row kc * 32 + r
                int h = tid & 1;                      // its first or second 32 columns (one scale group each)
                i64 row = (i64) kc * EM_KC + r;
                int grp = n0 / 32 + h;
                bool ok = grp < N / 32;
                if (tid < 2 * EM_KC) {
                    cp_async16_zfill(raw + (u32) (r * 32 + h * 16), ok ? wdata + row * (N / 2) + grp * 16 : wdata, ok);
                    if (zeros != 0) cp_async4(raw + (u32) (EM_KC * 40 + r * 8 + h * 4), zeros + (row >> 3) * (N / 32) + (ok ? grp : 0));
                } else {
                    cp_async4(raw + (u32) (EM_KC * 32 + r * 8 + h * 4), scales + (emg_scale_byte<SRC>(row, ok ? grp : 0, N) & ~3ll));
                }
            }
        } else if (SRC == EMG_F32) {
            const float* w = (const float*) wdata;
#pragma unroll
            for (int it = 0; it < EMG_ROWS * 8 / THREADS; it++) {
                int r = (tid >> 3) + (THREADS / 8) * it;
                int k = kc * EM_KC + (tid & 7) * 4;
                bool ok = n0 + r < N && k < K;
                cp_async16_zfill(raw + (u32) (r * EM_XROWB + (tid & 7) * 16), ok ? w + (i64) (n0 + r) * K + k : w, ok);
            }
        } else if (SRC == EMG_BF16) {
            const u16* w = (const u16*) wdata;
#pragma unroll
            for (int it = 0; it < EMG_ROWS * 4 / THREADS; it++) {
                int r = (tid >> 2) + (THREADS / 4) * it;
                int k = kc * EM_KC + (tid & 3) * 8;
                bool ok = n0 + r < N && k < K;
                cp_async16_zfill(raw + (u32) (r * EM_WROWB + (tid & 3) * 16), ok ? w + (i64) (n0 + r) * K + k : w, ok);
            }
        } else {
            // rows past N read row 0 (their outputs are never written)
            int r = tid & (EMG_ROWS - 1);
            i64 n = n0 + r < N ? n0 + r : 0;
            if (tid < EMG_ROWS) {
                cp_async16_zfill(raw + (u32) (r * 16), wdata + n * (K / 2) + (i64) kc * 16, true);
                if (zeros != 0) cp_async4(raw + (u32) (EMG_ROWS * 20 + r * 4), zeros + (n >> 3) * (K / 32) + kc);
            } else {
                cp_async4(raw + (u32) (EMG_ROWS * 16 + r * 4), scales + (emg_scale_byte<SRC>(n, kc, K) & ~3ll));
            }
        }
    };
    // the staged chunk c (of this block's range) as the weight's three bf16 planes in wplanes
    auto planes = [&](int c) {
        const u8* raw = em_shared + (c % EM_ST) * STAGE + XBYTES;
        if (TRANS) {
            // raw W rows (the 32 values of K this chunk sums over) into plane rows (the block's 64 output columns):
            // 8 values a unit, each written to its column's row of the planes
            int kc = c0 + c;
#pragma unroll
            for (int u = 0; u < EM_KC * 8 / THREADS; u++) {
                int i = tid + THREADS * u;
                int r = i >> 3;       // W row kc * 32 + r: the value's place along K
                int wd = i & 7;       // output columns 8 wd .. 8 wd + 7 of the block
                float v[8];
                if (SRC == EMG_BF16) {
                    uint4 b = *(const uint4*) (raw + r * 2 * EMG_ROWS + wd * 16);
                    u32 wds[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        v[2 * j] = __uint_as_float(wds[j] << 16);
                        v[2 * j + 1] = __uint_as_float(wds[j] & 0xffff0000u);
                    }
                } else {
                    i64 row = (i64) kc * EM_KC + r;
                    int h = wd >> 2;
                    int grp = n0 / 32 + h;
                    int g = grp < N / 32 ? grp : 0;
                    u32 q = *(const u32*) (raw + r * 32 + h * 16 + (wd & 3) * 4);
                    u32 sw = *(const u32*) (raw + EM_KC * 32 + r * 8 + h * 4);
                    int sh = 8 * (int) (emg_scale_byte<SRC>(row, g, N) & 3);
                    float s;
                    if (SRC == FMT_INT4) {
                        s = bf16_to_f32((u16) (sw >> sh));
                    } else if (SRC == FMT_MXFP4) {
                        s = e8m0((sw >> sh) & 0xffu);
                    } else {
                        s = e4m3((sw >> (sh + ((wd & 3) < 2 ? 0 : 8))) & 0xffu) / global;
                    }
                    int zero = 8;
                    if (SRC == FMT_INT4 && zeros != 0) {
                        zero = (int) ((*(const u32*) (raw + EM_KC * 40 + r * 8 + h * 4) >> (4 * (int) (row & 7))) & 15u);
                    }
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        v[j] = code_value<SRC == FMT_INT4 ? FMT_INT4 : SRC == FMT_MXFP4 ? FMT_MXFP4 : FMT_NVFP4>((q >> (4 * j)) & 15u, zero);
                        v[j] *= s;
                    }
                }
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    u8* p = wplanes + (8 * wd + j) * EM_WROWB + r * 2;
                    u16 h0 = f32_to_bf16_bits(v[j]);
                    *(u16*) p = h0;
                    if (J > 1) {
                        float r1 = v[j] - bf16_to_f32(h0);
                        u16 h1 = f32_to_bf16_bits(r1);
                        *(u16*) (p + PLANE) = h1;
                        *(u16*) (p + 2 * PLANE) = f32_to_bf16_bits(r1 - bf16_to_f32(h1));
                    }
                }
            }
        } else if (SRC == EMG_F32) {
#pragma unroll
            for (int u = 0; u < EMG_ROWS * 8 / THREADS; u++) {
                int i = tid + THREADS * u;
                int r = i >> 3;
                int k4 = i & 7;
                if (n0 + r >= N) continue; // no output reads a row past N (a narrow weight: a LoRA factor's 16 rows)
                float4 v = *(const float4*) (raw + r * EM_XROWB + k4 * 16);
                u8* p = wplanes + r * EM_WROWB + k4 * 8;
                em_split4(v, (uint2*) p, (uint2*) (p + PLANE), (uint2*) (p + 2 * PLANE));
            }
        } else if (CODES) {
            // the codes as one bf16 plane: q - zero, the scales applied to each chunk's sums after its products
#pragma unroll
            for (int u = 0; u < EMG_ROWS * 4 / THREADS; u++) {
                int i = tid + THREADS * u;
                int r = i >> 2;
                int wd = i & 3;           // values 8 wd .. 8 wd + 7 of the chunk
                if (n0 + r >= N) continue;
                i64 n = n0 + r;
                u32 q = *(const u32*) (raw + r * 16 + wd * 4);
                int zero = 8;
                if (zeros != 0) {
                    zero = (int) ((*(const u32*) (raw + EMG_ROWS * 20 + r * 4) >> (4 * (int) (n & 7))) & 15u);
                }
                u32 h[4];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    h[j] = f32x2_to_bf16x2((float) ((int) ((q >> (8 * j)) & 15u) - zero), (float) ((int) ((q >> (8 * j + 4)) & 15u) - zero));
                }
                *(uint4*) (wplanes + r * EM_WROWB + wd * 16) = make_uint4(h[0], h[1], h[2], h[3]);
            }
        } else if (QUANT) {
            int kc = c0 + c;
#pragma unroll
            for (int u = 0; u < EMG_ROWS * 4 / THREADS; u++) {
                int i = tid + THREADS * u;
                int r = i >> 2;
                int wd = i & 3;           // values 8 wd .. 8 wd + 7 of the chunk
                if (n0 + r >= N) continue;
                i64 n = n0 + r;
                u32 q = *(const u32*) (raw + r * 16 + wd * 4);
                u32 sw = *(const u32*) (raw + EMG_ROWS * 16 + r * 4);
                int sh = 8 * (int) (emg_scale_byte<SRC>(n, kc, K) & 3);
                float s0, s1;
                if (SRC == FMT_INT4) {
                    s0 = bf16_to_f32((u16) (sw >> sh));
                    s1 = s0;
                } else if (SRC == FMT_MXFP4) {
                    s0 = e8m0((sw >> sh) & 0xffu);
                    s1 = s0;
                } else {
                    s0 = e4m3((sw >> sh) & 0xffu) / global;
                    s1 = e4m3((sw >> (sh + 8)) & 0xffu) / global;
                }
                float s = wd < 2 ? s0 : s1;
                int zero = 8;
                if (SRC == FMT_INT4 && zeros != 0) {
                    zero = (int) ((*(const u32*) (raw + EMG_ROWS * 20 + r * 4) >> (4 * (int) (n & 7))) & 15u);
                }
                float v[8];
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    v[j] = code_value<SRC == FMT_INT4 ? FMT_INT4 : SRC == FMT_MXFP4 ? FMT_MXFP4 : FMT_NVFP4>((q >> (4 * j)) & 15u, zero);
                    v[j] *= s;
                }
                u8* p = wplanes + r * EM_WROWB + wd * 16;
                em_split4(make_float4(v[0], v[1], v[2], v[3]), (uint2*) p, (uint2*) (p + PLANE), (uint2*) (p + 2 * PLANE));
                em_split4(make_float4(v[4], v[5], v[6], v[7]), (uint2*) (p + 8), (uint2*) (p + PLANE + 8),
                          (uint2*) (p + 2 * PLANE + 8));
            }
        }
    };

#pragma unroll
    for (int c = 0; c < EM_ST - 1; c++) {
        if (c < chunks) load(c);
        cp_async_commit();
    }
    float acc[1][TOK / 8][4];
    float total[1][FOLD ? TOK / 8 : 1][4]; // FOLD: the ranges' sums so far (as exact_mma_tile)
#pragma unroll
    for (int j = 0; j < TOK / 8; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[0][j][q] = 0.0f;
    int range = 0;
    auto foldTo = [&](int done) {
        if constexpr (FOLD) {
            while (range < splits && (int) ((i64) all * (range + 1) / splits) == done) em_fold<1, TOK / 8>(acc, total, range++ == 0);
        }
    };
    foldTo(0);
    u32 aoff = (u32) ((warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * EM_WROWB + (lane >> 4) * 16);
    u32 boff = (u32) (((lane & 7) + (lane >> 4) * 8) * EM_WROWB + ((lane >> 3) & 1) * 16);
    for (int c = 0; c < chunks; c++) {
        cp_async_wait<EM_ST - 2>();
        __syncthreads();
        if (c + EM_ST - 1 < chunks) load(c + EM_ST - 1);
        cp_async_commit();
        em_split_x<THREADS, TOK>(em_shared + (c % EM_ST) * STAGE, splitPtr, tid);
        planes(c);
        __syncthreads();
        u32 wbase = SRC == EMG_BF16 && !TRANS ? sm + (u32) ((c % EM_ST) * STAGE + XBYTES) : smem_addr(wplanes);
        if (!TRANS && n0 + warp * 16 >= N) {
            // this warp's 16 weight rows are all past N: nothing to sum (their plane rows were not made)
        } else if constexpr (CODES) {
            float chunk[1][TOK / 8][4];
#pragma unroll
            for (int j = 0; j < TOK / 8; j++)
#pragma unroll
                for (int q = 0; q < 4; q++) chunk[0][j][q] = 0.0f;
            em_mma_chunk<1, 1, TOK>(wbase, PLANE, planesX, aoff, boff, chunk);
            // the scales of this thread's two weight rows (g and g + 8 of its warp's 16) for this chunk, from the stage
            const u8* raw = em_shared + (c % EM_ST) * STAGE + XBYTES;
            float s[2];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = warp * 16 + g + 8 * h;
                i64 n = n0 + r < N ? n0 + r : 0;
                u32 sw = *(const u32*) (raw + EMG_ROWS * 16 + r * 4);
                s[h] = bf16_to_f32((u16) (sw >> (8 * (int) (emg_scale_byte<FMT_INT4>(n, c0 + c, K) & 3))));
            }
#pragma unroll
            for (int j = 0; j < TOK / 8; j++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[0][j][q] = __fmaf_rn(s[q >> 1], chunk[0][j][q], acc[0][j][q]);
        } else {
            em_mma_chunk<J, 1, TOK>(wbase, PLANE, planesX, aoff, boff, acc);
        }
        foldTo(c + 1);
    }
    cp_async_wait<0>();

    int row = n0 + warp * 16 + g;
#pragma unroll
    for (int j = 0; j < TOK / 8; j++) {
#pragma unroll
        for (int q = 0; q < 4; q++) {
            int tok = 8 * j + 2 * t + (q & 1);
            int n = row + 8 * (q >> 1);
            if (tok < M && n < N) {
                if constexpr (FOLD) {
                    y[(i64) (xRow + tok) * N + n] = total[0][j][q];
                } else if (splits == 1) {
                    y[(i64) (xRow + tok) * N + n] = acc[0][j][q];
                } else {
                    part[((i64) split * L + (xRow - r0) + tok) * N + n] = acc[0][j][q];
                }
            }
        }
    }
}

// The tile table of a grouped call from its offsets on the device (offsets [E + 1], moe_group_*'s): expert e's rows
// [o_e, o_(e+1)) cut into tiles of `tile` rows from its first, the experts in order, each {e, first row, rows, 0} (the
// slot is the expert: wtab then holds every expert), and the entries past the last tile up to `cap` {0, 0, 0, 0}. The
// host sizes cap for the most tiles the call's rows can take. One block of 1024 threads.
extern "C" __global__ void exact_group_tiles(const int* offsets, int E, int tile, int cap, int4* tiles) {
    ORBIT_TRACE_KERNEL();
    __shared__ int scan[1024];
    __shared__ int carry;
    int tid = threadIdx.x;
    if (tid == 0) carry = 0;
    __syncthreads();
    for (int e0 = 0; e0 < E; e0 += 1024) {
        int e = e0 + tid;
        int first = e < E ? offsets[e] : 0;
        int rows = e < E ? offsets[e + 1] - first : 0;
        int n = (rows + tile - 1) / tile;
        scan[tid] = n;
        __syncthreads();
        for (int d = 1; d < 1024; d <<= 1) { // inclusive scan of the tile counts
            int v = tid >= d ? scan[tid - d] : 0;
            __syncthreads();
            scan[tid] += v;
            __syncthreads();
        }
        int at = carry + scan[tid] - n;
        for (int j = 0; j < n && at + j < cap; j++) {
            tiles[at + j] = make_int4(e, first + j * tile, min(tile, rows - j * tile), 0);
        }
        __syncthreads();
        if (tid == 1023) carry += scan[1023];
        __syncthreads();
    }
    for (int i = carry + tid; i < cap; i += 1024) tiles[i] = make_int4(0, 0, 0, 0);
}

#define EXACT_MMA_GROUP_KERNEL_C(NAME, SRC, TRANS, TOK, FOLD, CODES)                                                  \
    extern "C" __global__ void __launch_bounds__(128)                                                                  \
        NAME(const float* x, int K, const int4* tiles, const unsigned long long* wtab, int N, float* y, float* part,    \
             int r0, int L, int splits) {                                                                              \
        ORBIT_TRACE_KERNEL();                                                                                          \
        int4 tile = tiles[blockIdx.x];                                                                                 \
        const unsigned long long* ent = wtab + 4 * (i64) tile.x;                                                       \
        exact_mma_group_tile<SRC, TRANS, TOK, FOLD, CODES>(x, K, tile, (const u8*) ent[0], (const u8*) ent[1],         \
                                                           (const u32*) ent[2], __uint_as_float((u32) (ent[3] & 0xffffffffull)), \
                                                           N, y, part, r0, L, splits);                                  \
    }
#define EXACT_MMA_GROUP_KERNEL_F(NAME, SRC, TRANS, TOK, FOLD) EXACT_MMA_GROUP_KERNEL_C(NAME, SRC, TRANS, TOK, FOLD, false)
#define EXACT_MMA_GROUP_KERNEL(NAME, SRC, TRANS, TOK) EXACT_MMA_GROUP_KERNEL_F(NAME, SRC, TRANS, TOK, false)

// INT4 forward: the codes form (CODES above), the default; the _planes kernels below keep the dequantized planes' form
EXACT_MMA_GROUP_KERNEL_C(exact_mma_group_int4, FMT_INT4, false, 64, false, true)
EXACT_MMA_GROUP_KERNEL_C(exact_mma_group_int4_m16, FMT_INT4, false, 16, false, true)
EXACT_MMA_GROUP_KERNEL_C(exact_mma_group_int4_fold, FMT_INT4, false, 64, true, true)
EXACT_MMA_GROUP_KERNEL_C(exact_mma_group_int4_m16_fold, FMT_INT4, false, 16, true, true)
// the dense INT4 product y [M, N] = x [M, K] . w^T in the codes form (CudaExactOps' matmulQuantized): one weight, its
// addresses as arguments, tiles of TOK rows of x from blockIdx.x (nothing read from a table: a decode step captures it),
// the sums of the grouped kernels above bit for bit (a row's bits depend on neither its tile nor the other rows)
#define EXACT_MMA_INT4_CODES_KERNEL(NAME, TOK, FOLD)                                                                   \
    extern "C" __global__ void __launch_bounds__(128)                                                                  \
        NAME(const float* x, int M, int K, const u8* codes, const u8* scales, const u32* zeros, int N, float* y,      \
             float* part, int splits) {                                                                                \
        ORBIT_TRACE_KERNEL();                                                                                          \
        int r = blockIdx.x * TOK;                                                                                      \
        exact_mma_group_tile<FMT_INT4, false, TOK, FOLD, true>(x, K, make_int4(0, r, min(TOK, M - r), 0), codes,      \
                                                               scales, zeros, 0.0f, N, y, part, 0, M, splits);          \
    }
EXACT_MMA_INT4_CODES_KERNEL(exact_mma_int4_codes, 64, false)
EXACT_MMA_INT4_CODES_KERNEL(exact_mma_int4_codes_m16, 16, false)
EXACT_MMA_INT4_CODES_KERNEL(exact_mma_int4_codes_fold, 64, true)
EXACT_MMA_INT4_CODES_KERNEL(exact_mma_int4_codes_m16_fold, 16, true)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_int4_planes, FMT_INT4, false, 64)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_int4_planes_m16, FMT_INT4, false, 16)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_int4_planes_fold, FMT_INT4, false, 64, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_int4_planes_m16_fold, FMT_INT4, false, 16, true)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_mxfp4, FMT_MXFP4, false, 64)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_nvfp4, FMT_NVFP4, false, 64)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_f32, EMG_F32, false, 64)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_bf16, EMG_BF16, false, 64)
// tiles of 16 rows of x, for calls of few rows an expert (a decode step): the same sums, a quarter of the idle products
EXACT_MMA_GROUP_KERNEL(exact_mma_group_mxfp4_m16, FMT_MXFP4, false, 16)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_nvfp4_m16, FMT_NVFP4, false, 16)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_f32_m16, EMG_F32, false, 16)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_bf16_m16, EMG_BF16, false, 16)
// transposed (dx = dy . W_e, W_e [K, N] as stored: an activation gradient, for speed; not batch-invariant by contract)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_t_int4, FMT_INT4, true, 64)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_t_mxfp4, FMT_MXFP4, true, 64)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_t_nvfp4, FMT_NVFP4, true, 64)
EXACT_MMA_GROUP_KERNEL(exact_mma_group_t_bf16, EMG_BF16, true, 64)
// every range of K in one block, their sums added as they end, y written directly (the bits of the kernels above and
// exact_sum_splits; for calls with blocks enough without the splits)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_mxfp4_fold, FMT_MXFP4, false, 64, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_nvfp4_fold, FMT_NVFP4, false, 64, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_f32_fold, EMG_F32, false, 64, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_bf16_fold, EMG_BF16, false, 64, true)
// the same for tiles of 16 rows (a decode step's experts: its tiles and weight-row blocks are blocks enough)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_mxfp4_m16_fold, FMT_MXFP4, false, 16, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_nvfp4_m16_fold, FMT_NVFP4, false, 16, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_f32_m16_fold, EMG_F32, false, 16, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_bf16_m16_fold, EMG_BF16, false, 16, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_t_int4_fold, FMT_INT4, true, 64, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_t_mxfp4_fold, FMT_MXFP4, true, 64, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_t_nvfp4_fold, FMT_NVFP4, true, 64, true)
EXACT_MMA_GROUP_KERNEL_F(exact_mma_group_t_bf16_fold, EMG_BF16, true, 64, true)
