// Dense bf16 products of a decode batch on tensor cores, with their LoRA terms:
//   y_i [M, N_i] = xb [M, K] . W_i^T (+ s_i . lo_i [M, R_i] . B_i^T)
// for up to three weights that read the same x (an attention block's q, k and v, or one projection). W_i bf16 [N_i, K]
// row-major, xb the x rows rounded to bf16 once (narrow_matmul3_f32 writes them beside the LoRA A products lo_i), lo_i
// and B_i f32, y f32. M is at most 8 * NT tokens; K a multiple of 64, N_i of 128.
//
// Operands: the weights are the mma's A operand (a warp owns 16 rows), the tokens its B operand (n-tiles of 8 tokens,
// all NT of them a warp). Both stream through one DM_ST-stage cp.async pipeline a block, KC values of K a stage (64;
// 128 for the wide kernels, whose four stages take most of an SM's shared memory), rows padded to ROWB bytes
// (conflict-free ldmatrix); a thread's copies advance pointers set up once.
//
// Work split: block (blockIdx.x, blockIdx.y) = rows [128 r, +128) of weight i (blockIdx.x counts the weights' row
// blocks in order: W_0's, then W_1's, then W_2's) over the blockIdx.y-th of gridDim.y contiguous ranges of K's
// 64-value chunks (at most DM_SPLITS, uneven where they do not divide), 16 rows a warp. The LoRA term (f32, r in
// order) of token m joins the sums of split m % splits. Unsplit, a block writes y (or adds into it); split, each
// block leaves its partial tile in part (f32 [split][row block][8 NT tokens][128 rows]) and the last block of a row
// block to arrive (a counter per row block, which that block sets back to 0) adds the partials in split order 0, 1,
// ... and writes y. A row of y depends on its row of x alone (batch-invariant: the splits depend on the shapes, not
// on M), and not on the order in which the blocks finish.

#define DM_WARPS 8
#define DM_THREADS (32 * DM_WARPS)
#define DM_ROWS (16 * DM_WARPS)        // weight rows a block
#define DM_KC 64                       // values of K a stage (the wide kernels: 128)
#define DM_ST 4                        // stages
#define DM_RMAX 64                     // LoRA rank at most
#define DM_SPLITS 8                    // ranges of K at most

template <int NT, int KC = DM_KC>
__device__ __forceinline__ void dmma_tile(const u16* xb, int M, int K, const u16* w, float* y, int N, const float* lo,
                                          const float* bl, float s, int R, int accumulate, int rb, float* part,
                                          int* counters) {
    constexpr int MT = 8 * NT;
    constexpr int PR = KC / 8;                     // 16-byte pieces of a row in a stage
    constexpr int PS = KC == 64 ? 3 : 4;           // log2(PR)
    static_assert(KC == 64 || KC == 128, "stages of 64 or 128 values of K");
    constexpr int RI = DM_THREADS / PR;            // rows a round of copies covers
    constexpr int ROWB = 2 * KC + 16;              // bytes of a row in a stage: KC bf16 + 16 (conflict-free ldmatrix)
    constexpr int WBYTES = DM_ROWS * ROWB;         // the weight tile of a stage
    constexpr int WCP = DM_ROWS / RI;              // 16-byte weight copies a thread a stage
    constexpr int XCP = MT / RI;                   // 16-byte x copies a thread a stage (1 to 4)
    constexpr int STAGE = WBYTES + MT * ROWB;
    extern __shared__ __align__(16) u8 dm_shared[];
    __shared__ int dm_last;
    int tid = threadIdx.x;
    int lane = tid & 31;
    int warp = tid >> 5;
    int g = lane >> 2;
    int t = lane & 3;
    int splits = gridDim.y;
    int ks = blockIdx.y;
    int rbg = blockIdx.x;
    int chunks = K / KC;
    int c0 = chunks * ks / splits;
    int nk = chunks * (ks + 1) / splits - c0;
    int n0 = rb * DM_ROWS;
    u32 sm = smem_addr(dm_shared);

    // this thread's copies: weight rows tid / PR + RI it and token rows tid / PR + RI it (rows past M read row M - 1:
    // their products reach no output), piece tid % PR of each, from chunk c0 on
    const u16* wsrc[WCP];
    const u16* xsrc[XCP];
    u32 dst = (u32) ((tid >> PS) * ROWB + (tid & (PR - 1)) * 16);
#pragma unroll
    for (int it = 0; it < WCP; it++) {
        wsrc[it] = w + (i64) (n0 + (tid >> PS) + RI * it) * K + c0 * KC + (tid & (PR - 1)) * 8;
    }
#pragma unroll
    for (int it = 0; it < XCP; it++) {
        int row = (tid >> PS) + RI * it;
        xsrc[it] = xb + (i64) (row < M ? row : M - 1) * K + c0 * KC + (tid & (PR - 1)) * 8;
    }
    auto load = [&](int st) { // chunk c0 + st into slot st % DM_ST
        u32 base = sm + (u32) ((st % DM_ST) * STAGE) + dst;
#pragma unroll
        for (int it = 0; it < WCP; it++) {
            cp_async16_zfill(base + (u32) (RI * it * ROWB), wsrc[it] + st * KC, true);
        }
#pragma unroll
        for (int it = 0; it < XCP; it++) {
            cp_async16_zfill(base + (u32) (WBYTES + RI * it * ROWB), xsrc[it] + st * KC, true);
        }
    };

#pragma unroll
    for (int st = 0; st < DM_ST - 1; st++) {
        if (st < nk) load(st);
        cp_async_commit();
    }
    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;
    // ldmatrix rows: A = rows 16 warp + (lane % 8) + 8 ((lane / 8) % 2), k + 8 (lane / 16); B = tokens (lane % 8) +
    // 8 (lane / 16) of an n-tile pair, k + 8 ((lane / 8) % 2): d[0], d[1] the n-tile j's b0, b1, d[2], d[3] tile j + 1's
    u32 aoff = (u32) ((warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ROWB + (lane >> 4) * 16);
    u32 boff = (u32) (WBYTES + ((lane & 7) + (lane >> 4) * 8) * ROWB + ((lane >> 3) & 1) * 16);
    for (int st = 0; st < nk; st++) {
        cp_async_wait<DM_ST - 2>(); // stage st has landed (this thread's copies)
        __syncthreads();            // everyone's, and every reader of the slot refilled below is done with it
        if (st + DM_ST - 1 < nk) load(st + DM_ST - 1);
        cp_async_commit();
        u32 base = sm + (u32) ((st % DM_ST) * STAGE);
#pragma unroll
        for (int kk = 0; kk < KC / 16; kk++) {
            u32 a[4];
            ldsm_x4(base + aoff + kk * 32, a);
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                u32 b[4];
                ldsm_x4(base + boff + (u32) (j * 8 * ROWB) + kk * 32, b);
                mma_bf16_16816(acc[j], a[0], a[1], a[2], a[3], b[0], b[1]);
                mma_bf16_16816(acc[j + 1], a[0], a[1], a[2], a[3], b[2], b[3]);
            }
        }
    }
    cp_async_wait<0>();
    __syncthreads(); // every warp is done with the stages: their memory takes the LoRA factors below

    // acc[j][q]: row 16 warp + g (+ 8 for q >= 2), token 8 j + 2 t (+ 1 for odd q)
    int rowA = warp * 16 + g;
    if (lo != 0) { // the LoRA term of the tokens m with m % splits == ks (all of them unsplit), into this block's sums
        int rs = R + 4;                   // row stride in floats: 16-byte rows, conflict-free reads below
        float* bs = (float*) dm_shared;   // [DM_ROWS rows][rs]: B's rows of the block
        float* ls = bs + DM_ROWS * rs;    // [M][rs]: lo
        float* lt = ls + MT * rs;         // [MT][DM_ROWS + 4]: s . lo . B^T of this split's tokens, 0 elsewhere
        u32 bsa = smem_addr(bs);
        u32 lsa = smem_addr(ls);
        int pieces = R >> 2; // 16-byte pieces of a row, at most DM_RMAX / 4 = 16
#pragma unroll
        for (int it = 0; it < DM_ROWS * (DM_RMAX / 4) / DM_THREADS; it++) {
            int i = tid + DM_THREADS * it;
            int rr = i >> 4;
            int c = i & 15;
            if (c < pieces) cp_async16_zfill(bsa + (u32) ((rr * rs + 4 * c) * 4), bl + (i64) (n0 + rr) * R + 4 * c, true);
        }
#pragma unroll
        for (int it = 0; it < MT * (DM_RMAX / 4) / DM_THREADS; it++) {
            int i = tid + DM_THREADS * it;
            int mm = i >> 4;
            int c = i & 15;
            if (c < pieces && mm < M) cp_async16_zfill(lsa + (u32) ((mm * rs + 4 * c) * 4), lo + (i64) mm * R + 4 * c, true);
        }
        cp_async_commit();
        for (int i = tid; i < MT * (DM_ROWS + 4); i += DM_THREADS) lt[i] = 0.0f;
        cp_async_wait<0>();
        __syncthreads();
        // (row, token) pairs of this split's tokens: row tid % DM_ROWS, tokens ks + splits (tid / DM_ROWS + 2 i)
        int row = tid & (DM_ROWS - 1);
        const float4* br = (const float4*) (bs + row * rs);
        for (int m = ks + splits * (tid / DM_ROWS); m < M; m += splits * (DM_THREADS / DM_ROWS)) {
            const float4* lr = (const float4*) (ls + m * rs);
            float d = 0.0f;
#pragma unroll 4
            for (int c = 0; c < pieces; c++) {
                float4 a = lr[c];
                float4 b = br[c];
                d = fmaf(a.x, b.x, d);
                d = fmaf(a.y, b.y, d);
                d = fmaf(a.z, b.z, d);
                d = fmaf(a.w, b.w, d);
            }
            lt[m * (DM_ROWS + 4) + row] = s * d;
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < NT; j++) {
#pragma unroll
            for (int q = 0; q < 4; q++) {
                acc[j][q] += lt[(8 * j + 2 * t + (q & 1)) * (DM_ROWS + 4) + rowA + 8 * (q >> 1)];
            }
        }
    }
    if (splits == 1) {
#pragma unroll
        for (int j = 0; j < NT; j++) {
#pragma unroll
            for (int q = 0; q < 4; q++) {
                int tok = 8 * j + 2 * t + (q & 1);
                if (tok < M) {
                    float* o = y + (i64) tok * N + n0 + rowA + 8 * (q >> 1);
                    *o = accumulate ? *o + acc[j][q] : acc[j][q];
                }
            }
        }
        return;
    }

    // split: this block's partial tile, then the last block of the row block sums them all in split order
    float* mine = part + (i64) (ks * gridDim.x + rbg) * MT * DM_ROWS;
#pragma unroll
    for (int j = 0; j < NT; j++) {
        int tok = 8 * j + 2 * t;
        __stcg(mine + tok * DM_ROWS + rowA, acc[j][0]);
        __stcg(mine + (tok + 1) * DM_ROWS + rowA, acc[j][1]);
        __stcg(mine + tok * DM_ROWS + rowA + 8, acc[j][2]);
        __stcg(mine + (tok + 1) * DM_ROWS + rowA + 8, acc[j][3]);
    }
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        int before = atomicAdd(counters + rbg, 1);
        dm_last = before == splits - 1;
        if (dm_last) counters[rbg] = 0; // every split has arrived: ready for the next launch
    }
    __syncthreads();
    if (!dm_last) return;
    __threadfence();
    // positions of 4 rows x 1 token, tid + DM_THREADS i (token p / 32, rows 4 (p % 32)); every split's loads of 2
    // positions in flight together, then the sums in split order
    constexpr int POS = MT * DM_ROWS / 4 / DM_THREADS;
#pragma unroll
    for (int h = 0; h < POS; h += 2) {
        float4 a[DM_SPLITS][2];
#pragma unroll
        for (int q = 0; q < DM_SPLITS; q++) {
            const float4* pq = (const float4*) (part + (i64) (q * gridDim.x + rbg) * MT * DM_ROWS);
#pragma unroll
            for (int u = 0; u < 2; u++) {
                if (q < splits) a[q][u] = __ldcg(pq + tid + DM_THREADS * (h + u));
            }
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            int p = tid + DM_THREADS * (h + u);
            int tok = p / (DM_ROWS / 4);
            if (tok < M) {
                float4 v = a[0][u];
#pragma unroll
                for (int q = 1; q < DM_SPLITS; q++) {
                    if (q < splits) {
                        v.x += a[q][u].x;
                        v.y += a[q][u].y;
                        v.z += a[q][u].z;
                        v.w += a[q][u].w;
                    }
                }
                float4* o = (float4*) (y + (i64) tok * N + n0 + 4 * (p % (DM_ROWS / 4)));
                if (accumulate) {
                    float4 old = *o;
                    v = make_float4(old.x + v.x, old.y + v.y, old.z + v.z, old.w + v.w);
                }
                *o = v;
            }
        }
    }
}

// The weights' row blocks along blockIdx.x: W_0's N_0 / 128, then W_1's, then W_2's (n_i = 0: none). lo_i = 0: no LoRA
// term.
#define DMMA_KERNEL(NAME, NT, KC)                                                                                       \
    extern "C" __global__ void __launch_bounds__(DM_THREADS, 2)                                                         \
        NAME(const u16* xb, int M, int K, float* part, int* counters, int accumulate, const u16* w0, float* y0, int n0, \
             const float* lo0, const float* b0, float s0, int r0, const u16* w1, float* y1, int n1, const float* lo1,   \
             const float* b1, float s1, int r1, const u16* w2, float* y2, int n2, const float* lo2, const float* b2,    \
             float s2, int r2) {                                                                                        \
        ORBIT_TRACE_KERNEL();                                                                                           \
        pdl_enter();                                                                                                    \
        int rb = blockIdx.x;                                                                                            \
        int blocks0 = n0 / DM_ROWS;                                                                                     \
        int blocks1 = n1 / DM_ROWS;                                                                                     \
        int i = rb < blocks0 ? 0 : rb < blocks0 + blocks1 ? 1 : 2;                                                      \
        dmma_tile<NT, KC>(xb, M, K, i == 0 ? w0 : i == 1 ? w1 : w2, i == 0 ? y0 : i == 1 ? y1 : y2,                     \
                          i == 0 ? n0 : i == 1 ? n1 : n2, i == 0 ? lo0 : i == 1 ? lo1 : lo2,                            \
                          i == 0 ? b0 : i == 1 ? b1 : b2, i == 0 ? s0 : i == 1 ? s1 : s2,                               \
                          i == 0 ? r0 : i == 1 ? r1 : r2, accumulate,                                                   \
                          rb - (i > 0 ? blocks0 : 0) - (i > 1 ? blocks1 : 0), part, counters);                          \
    }

DMMA_KERNEL(dmma_bf16_m32_f32, 4, 64)
DMMA_KERNEL(dmma_bf16_m64_f32, 8, 64)
DMMA_KERNEL(dmma_bf16_wide_m32_f32, 4, 128)
DMMA_KERNEL(dmma_bf16_wide_m64_f32, 8, 128)
