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

#define EM_TOK 64                 // tokens a block: 8 n-tiles of 8
#define EM_KC 32                  // values of K a stage
#define EM_ST 4                   // stages
#define EM_XROWB (4 * EM_KC + 16) // bytes of a staged f32 x row (16 of padding)
#define EM_WROWB (2 * EM_KC + 16) // bytes of a staged bf16 row: conflict-free ldmatrix

// planes [3][n]: w = planes[0] + planes[1] + planes[2] as above (bf16 bits).
extern "C" __global__ void exact_split_planes(const float* w, u16* planes, i64 n) {
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

// w: plane j at w + j * planeStride, each [N, K] row-major bf16; y: [splits][M][N] (y itself when unsplit).
template <int J, int W, int RT>
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
    int rowTiles = gridDim.y / splits;
    int split = blockIdx.y / rowTiles;
    int n0 = (blockIdx.y % rowTiles) * ROWS;
    int all = (K + EM_KC - 1) / EM_KC;
    int c0 = (int) ((i64) all * split / splits);
    int chunks = (int) ((i64) all * (split + 1) / splits) - c0;
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
#pragma unroll
    for (int r = 0; r < RT; r++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[r][j][q] = 0.0f;
    // ldmatrix rows (as dmma.cu): A = weight rows 16 (RT warp + r) + (lane % 8) + 8 ((lane / 8) % 2), k + 8 (lane / 16); B =
    // tokens (lane % 8) + 8 (lane / 16) of an n-tile pair, k + 8 ((lane / 8) % 2)
    u32 aoff = (u32) ((warp * 16 * RT + (lane & 7) + ((lane >> 3) & 1) * 8) * EM_WROWB + (lane >> 4) * 16);
    u32 boff = (u32) (((lane & 7) + (lane >> 4) * 8) * EM_WROWB + ((lane >> 3) & 1) * 16);
    for (int c = 0; c < chunks; c++) {
        cp_async_wait<EM_ST - 2>(); // chunk c has landed (this thread's copies)
        __syncthreads();            // everyone's; every warp is done with the planes and with the slot refilled below
        if (c + EM_ST - 1 < chunks) load(c + EM_ST - 1);
        cp_async_commit();
        const u8* xs = em_shared + (c % EM_ST) * STAGE;
#pragma unroll
        for (int u = 0; u < EM_TOK * EM_KC / 4 / THREADS; u++) { // x's values into their planes
            int i = tid + THREADS * u;
            int tok = i / (EM_KC / 4);
            int k4 = i % (EM_KC / 4);
            float4 v = *(const float4*) (xs + tok * EM_XROWB + k4 * 16);
            u8* p = splitPtr + tok * EM_WROWB + k4 * 8;
            em_split4(v, (uint2*) p, (uint2*) (p + EM_TOK * EM_WROWB), (uint2*) (p + 2 * EM_TOK * EM_WROWB));
        }
        __syncthreads();
        u32 wbase = sm + (u32) ((c % EM_ST) * STAGE + XBYTES);
#pragma unroll
        for (int kk = 0; kk < EM_KC / 16; kk++) {
            u32 a[RT][J][4];
#pragma unroll
            for (int r = 0; r < RT; r++)
#pragma unroll
                for (int j = 0; j < J; j++) ldsm_x4(wbase + (u32) (j * WBYTES + r * 16 * EM_WROWB) + aoff + kk * 32, a[r][j]);
#pragma unroll
            for (int nt = 0; nt < 8; nt += 2) {
                u32 b[3][4];
#pragma unroll
                for (int i = 0; i < 3; i++) {
                    ldsm_x4(planesX + (u32) (i * EM_TOK * EM_WROWB) + boff + (u32) (nt * 8 * EM_WROWB) + kk * 32, b[i]);
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
                if (tok < M && n < N) y[((i64) split * M + tok) * N + n] = acc[r][j][q];
            }
        }
    }
}

// y [n] = part[0][i] + part[1][i] + ... + part[splits - 1][i], added in that order (part [splits][n]).
extern "C" __global__ void exact_sum_splits(const float* part, int splits, i64 n, float* y) {
    GRID_STRIDE(i, n) {
        float s = part[i];
        for (int p = 1; p < splits; p++) s += part[p * n + i];
        y[i] = s;
    }
}

// J planes of the weight, W warps of RT row tiles (16 RT W weight rows) a block.
#define EXACT_MMA_KERNEL(NAME, J, W, RT)                                                                               \
    extern "C" __global__ void __launch_bounds__(32 * W) NAME(const float* x, int M, int K, const u16* w,              \
                                                              i64 planeStride, float* y, int N, int splits) {          \
        exact_mma_tile<J, W, RT>(x, M, K, w, planeStride, y, N, splits);                                               \
    }

EXACT_MMA_KERNEL(exact_mma_j1, 1, 4, 1)
EXACT_MMA_KERNEL(exact_mma_j1w8, 1, 8, 1)
EXACT_MMA_KERNEL(exact_mma_j1r2, 1, 4, 2)
EXACT_MMA_KERNEL(exact_mma_j3, 3, 4, 1)
