// Causal attention on bf16 tensor cores (FlashAttention-2 structure), the same three launches as
// attention_mma.cu (prefill forward; backward: dq with the rows' log-sum-exp and delta, then dk/dv),
// on mma.sync m16n8k16 bf16 with f32 accumulation. q, k, v and dout stay f32 in memory and are rounded
// to bf16 (round to nearest even, relative error at most 2^-9) when staged in shared memory; the
// probabilities and score gradients are rounded to bf16 when they enter a product; the softmax
// statistics (running max, sum, log-sum-exp, delta) are f32, delta from the f32 dout.
//
// Semantics as attention_mma.cu: q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], dout [T, Hq, Dv]
// (leading strides in elements, multiples of 4, rows 16-byte aligned); query t sits at position qs + t
// and sees key s when s <= qs + t and (window <= 0 or qs + t - s < window); sinks null or f32 [Hq],
// a logit in every softmax denominator. D = Dv in {64, 128} (template instances below).
//
// Fragments (PTX ISA, m16n8k16 .bf16; g = lane / 4, c = lane % 4; a register holds two bf16, the lower
// column / k in the low half): A 16x16 a0 (g, 2c..2c+1), a1 (g + 8, 2c..), a2 (g, 2c + 8..),
// a3 (g + 8, 2c + 8..); B 16x8 b0 (k 2c..2c+1, n g), b1 (k 2c + 8.., n g); C 16x8 c0, c1 (g, 2c, 2c + 1),
// c2, c3 (g + 8, 2c, 2c + 1). Two C tiles of n 8j and 8j + 8 are, packed pairwise, the A fragment of
// k 16j: {c0c1 of tile 2j, c2c3 of 2j, c0c1 of 2j + 1, c2c3 of 2j + 1}, so P . V, dS . K, P^T . dout and
// dS^T . q take the score tiles as they are (no shuffles). Operands come from shared memory through
// ldmatrix.x4: A of rows r0.. and k0.. from lanes addressing row r0 + (lane & 7) + 8 ((lane >> 3) & 1),
// column k0 + 8 (lane >> 4); B of a row-major [n][k] tile (K for q . k^T) from row n0 + (lane & 7) +
// 8 (lane >> 4), column k0 + 8 ((lane >> 3) & 1), giving b0, b1 of n-tile n0 then of n0 + 8; B of a
// row-major [k][n] tile (V for P . V) with .trans from row k0 + (lane & 7) + 8 ((lane >> 3) & 1),
// column n0 + 8 (lane >> 4), the same four registers. Shared rows are W + 8 bf16 (W = 64 or 128: a row
// stride of 16 mod 128 bytes), so the eight rows of every ldmatrix phase hit distinct banks.
//
// Pipeline: a block loads the next streamed tile's f32 rows into registers before the current tile's
// products, and converts and stores them into the other of two shared buffers after; one barrier a tile.
// Every sum runs in an order fixed by the shapes; no atomics: results are identical run to run.
//
// Two instances of each kernel: ab_* and ab2_* (FAST: the exponent in base 2 with the scale folded into
// one fma, masks only on the tiles a causal or window edge crosses, the running output rescaled only when
// a row maximum grew, dq and dk scaled once at the end; lse in log2 units between ab2_backward_q and
// ab2_backward_kv). Same tiles, launches and summation orders. ab3_* (backward) and ab4_* (forward and
// backward, blocks of 4 warps) take bf16 copies of their inputs (ab_to_bf16_pair: the staging's rounding,
// once per call) and copy tiles by cp.async (16 bytes, zero-filled rows past the end) into the same
// shared layouts; see the comments at their entry points.

#define AB_THREADS 256  // 8 warps
#define AB_BM 128       // queries per block (forward, dq): 8 warps of 16 rows
#define AB_BK 128       // keys per block (dk/dv): 8 warps of 16 rows

// bf16 pair, round to nearest even: lo in the low half.
__device__ __forceinline__ u32 ab_pack(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// c += A . B, m16n8k16 bf16, f32 accumulation (A as four registers).
__device__ __forceinline__ void ab_mma(float* c, const u32* a, u32 b0, u32 b1) {
    mma_bf16_16816(c, a[0], a[1], a[2], a[3], b0, b1);
}

// One thread's share of an f32 tile [ROWS, W] in registers: load (rows from rowPtr(r), zeros where it
// gives 0), then store into shared bf16 [ROWS][W + 8]; NT threads a block.
template <int ROWS, int W, int NT = AB_THREADS>
struct AbTile {
    static constexpr int PER = ROWS * (W / 4) / NT;
    float4 x[PER];

    template <typename RowPtr>
    __device__ __forceinline__ void load(RowPtr rowPtr) {
#pragma unroll
        for (int u = 0; u < PER; u++) {
            int idx = threadIdx.x + u * NT;
            int r = idx / (W / 4);
            int c = (idx - r * (W / 4)) * 4;
            const float* src = (const float*) rowPtr(r);   // E = float wherever this runs
            x[u] = src != 0 ? *(const float4*) (src + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
    }

    __device__ __forceinline__ void store(u16* sh) const {
#pragma unroll
        for (int u = 0; u < PER; u++) {
            int idx = threadIdx.x + u * NT;
            int r = idx / (W / 4);
            int c = (idx - r * (W / 4)) * 4;
            *(uint2*) (sh + r * (W + 8) + c) = make_uint2(ab_pack(x[u].x, x[u].y), ab_pack(x[u].z, x[u].w));
        }
    }
};

// The A fragments of 16 rows (from a, [.][W + 8] bf16) over W channels.
template <int W>
__device__ __forceinline__ void ab_frags(const u16* a, u32 af[W / 16][4]) {
    int lane = threadIdx.x & 31;
    u32 base = smem_addr(a + ((lane & 7) + ((lane >> 3) & 1) * 8) * (W + 8) + (lane >> 4) * 8);
#pragma unroll
    for (int j = 0; j < W / 16; j++) ldsm_x4(base + 32 * j, af[j]);
}

// s [16, NB] = A (16 rows, fragments af) . B^T, B rows 0 .. NB - 1 of b ([.][W + 8] bf16) over W channels.
template <int W, int NB>
__device__ __forceinline__ void ab_dot_frags(const u32 af[W / 16][4], const u16* b, float s[NB / 8][4]) {
    int lane = threadIdx.x & 31;
    u32 base = smem_addr(b + ((lane & 7) + (lane >> 4) * 8) * (W + 8) + ((lane >> 3) & 1) * 8);
#pragma unroll
    for (int n = 0; n < NB / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int j = 0; j < W / 16; j++) {
#pragma unroll
        for (int np = 0; np < NB / 16; np++) {
            u32 bf[4];
            ldsm_x4(base + (u32) (np * 16 * (W + 8) * 2 + 32 * j), bf);
            ab_mma(s[2 * np], af[j], bf[0], bf[1]);
            ab_mma(s[2 * np + 1], af[j], bf[2], bf[3]);
        }
    }
}

// As ab_dot_frags with the A rows read from shared memory (16 rows of a) step by step.
template <int W, int NB>
__device__ __forceinline__ void ab_dot_rows(const u16* a, const u16* b, float s[NB / 8][4]) {
    int lane = threadIdx.x & 31;
    u32 abase = smem_addr(a + ((lane & 7) + ((lane >> 3) & 1) * 8) * (W + 8) + (lane >> 4) * 8);
    u32 bbase = smem_addr(b + ((lane & 7) + (lane >> 4) * 8) * (W + 8) + ((lane >> 3) & 1) * 8);
#pragma unroll
    for (int n = 0; n < NB / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int j = 0; j < W / 16; j++) {
        u32 af[4];
        ldsm_x4(abase + 32 * j, af);
#pragma unroll
        for (int np = 0; np < NB / 16; np++) {
            u32 bf[4];
            ldsm_x4(bbase + (u32) (np * 16 * (W + 8) * 2 + 32 * j), bf);
            ab_mma(s[2 * np], af, bf[0], bf[1]);
            ab_mma(s[2 * np + 1], af, bf[2], bf[3]);
        }
    }
}

// acc [16, W] += X [16, NB] . B [NB rows of b ([.][W + 8] bf16), W]; X a C tile in f32, rounded to bf16 here.
template <int W, int NB>
__device__ __forceinline__ void ab_accumulate(const float x[NB / 8][4], const u16* b, float acc[W / 8][4]) {
    int lane = threadIdx.x & 31;
    u32 base = smem_addr(b + ((lane & 7) + ((lane >> 3) & 1) * 8) * (W + 8) + (lane >> 4) * 8);
#pragma unroll
    for (int j = 0; j < NB / 16; j++) {
        u32 a[4] = {ab_pack(x[2 * j][0], x[2 * j][1]), ab_pack(x[2 * j][2], x[2 * j][3]),
                    ab_pack(x[2 * j + 1][0], x[2 * j + 1][1]), ab_pack(x[2 * j + 1][2], x[2 * j + 1][3])};
#pragma unroll
        for (int np = 0; np < W / 16; np++) {
            u32 bf[4];
            ldsm_x4_trans(base + (u32) (j * 16 * (W + 8) * 2 + np * 32), bf);
            ab_mma(acc[2 * np], a, bf[0], bf[1]);
            ab_mma(acc[2 * np + 1], a, bf[2], bf[3]);
        }
    }
}

__device__ __forceinline__ float ab_quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float ab_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// 2^x (ex2.approx.ftz: relative error about 2^-22; 2^-inf = +0).
__device__ __forceinline__ float ab_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

#define AB_LOG2E 1.4426950408889634f

__device__ __forceinline__ bool ab_visible(int pos, int key, int window) {
    return key <= pos && (window <= 0 || pos - key < window);
}

// Streams the key tiles lo, lo + BN, .. <= hi of k and v (rows kb + key * kS, vb + key * vS; rows past hi
// read as zeros) through the two buffers kv[2] (each k [BN][D + 8] then v [BN][DV + 8]) and calls
// body(ksh, vsh, k0) for each, every thread of the block. The caller's earlier shared writes are ordered
// before body by the first barrier; body's reads of a buffer end before the buffer is written again.
template <int D, int DV, int BN, typename Body>
__device__ __forceinline__ void ab_stream_keys(u16* kv, const float* kb, i64 kS, const float* vb, i64 vS, int lo, int hi,
                                               Body body) {
    constexpr int BUF = BN * (D + 8) + BN * (DV + 8);
    AbTile<BN, D> kt;
    AbTile<BN, DV> vt;
    kt.load([&](int r) { return lo + r <= hi ? kb + (i64) (lo + r) * kS : (const float*) 0; });
    vt.load([&](int r) { return lo + r <= hi ? vb + (i64) (lo + r) * vS : (const float*) 0; });
    kt.store(kv);
    vt.store(kv + BN * (D + 8));
    __syncthreads();
    int it = 0;
    for (int k0 = lo; k0 <= hi; k0 += BN, it++) {
        u16* ksh = kv + (it & 1) * BUF;
        int next = k0 + BN;
        bool more = next <= hi;
        if (more) {
            kt.load([&](int r) { return next + r <= hi ? kb + (i64) (next + r) * kS : (const float*) 0; });
            vt.load([&](int r) { return next + r <= hi ? vb + (i64) (next + r) * vS : (const float*) 0; });
        }
        body(ksh, ksh + BN * (D + 8), k0);
        if (more) {
            u16* nsh = kv + ((it + 1) & 1) * BUF;
            kt.store(nsh);
            vt.store(nsh + BN * (D + 8));
        }
        __syncthreads();
    }
}

// 16-byte (4-byte) asynchronous copy global -> shared; zeros in place of the source where !valid (then
// nothing is read; src must still be a valid address).
__device__ __forceinline__ void ab_cp16(u16* dst, const void* src, bool valid) {
    cp_async16_zfill(smem_addr(dst), src, valid);
}

__device__ __forceinline__ void ab_cp4(float* dst, const void* src, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 4 : 0)
                 : "memory");
}

// Issues the copies of a bf16 tile [ROWS, W] (row r from rowPtr(r), zeros where it gives 0; rows 16-byte
// aligned) into shared [ROWS][W + 8] by the block's NT threads; any: a valid address for the zero rows.
// No commit.
template <int ROWS, int W, int NT, typename RowPtr>
__device__ __forceinline__ void ab_cp_tile(u16* sh, const u16* any, RowPtr rowPtr) {
    constexpr int CH = W / 8;                      // 16-byte chunks a row
    static_assert(ROWS * CH % NT == 0, "whole chunks a thread");
#pragma unroll
    for (int u = 0; u < ROWS * CH / NT; u++) {
        int idx = threadIdx.x + u * NT;
        int r = idx / CH;
        int c = (idx - r * CH) * 8;
        const u16* src = rowPtr(r);
        ab_cp16(sh + r * (W + 8) + c, src != 0 ? src + c : any, src != 0);
    }
}

// As ab_stream_keys with bf16 sources (kb, vb: bf16 rows of stride kS, vS elements), copied by cp.async:
// the next tile's copies are issued before the current tile's body; two barriers a tile. Every copy
// group the caller committed earlier is complete (and, through the first barrier, visible) before body.
template <int D, int DV, int BN, int NT, typename Body>
__device__ __forceinline__ void ab_stream_keys16(u16* kv, const u16* kb, i64 kS, const u16* vb, i64 vS, int lo, int hi,
                                                 Body body) {
    constexpr int BUF = BN * (D + 8) + BN * (DV + 8);
    auto issue = [&](int k0, u16* dst) {
        ab_cp_tile<BN, D, NT>(dst, kb, [&](int r) { return k0 + r <= hi ? kb + (i64) (k0 + r) * kS : (const u16*) 0; });
        ab_cp_tile<BN, DV, NT>(dst + BN * (D + 8), vb,
                           [&](int r) { return k0 + r <= hi ? vb + (i64) (k0 + r) * vS : (const u16*) 0; });
        cp_async_commit();
    };
    issue(lo, kv);
    int it = 0;
    for (int k0 = lo; k0 <= hi; k0 += BN, it++) {
        u16* ksh = kv + (it & 1) * BUF;
        if (k0 + BN <= hi) {
            issue(k0 + BN, kv + ((it + 1) & 1) * BUF);   // that buffer's last reader passed the barrier below
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        body(ksh, ksh + BN * (D + 8), k0);
        __syncthreads();
    }
}

// The online softmax of one warp's 16 query rows (fragments qf) over the key tiles lo .. hi: m, l per
// row, acc the unnormalised output. Called by every thread of the block.
// FAST (the bf16v2 kernels): m in log2 units (scores times scale * log2 e, folded into one fma before
// ex2), the mask applied only on tiles where some key is hidden from some row of the warp, and acc, l
// rescaled only when a row maximum of the warp grew (a factor of exactly 1 otherwise).
// E: float (k, v f32, staged through registers; NW = 8) or u16 (bf16 copies, cp.async). NW warps a block.
template <int D, int DV, int BN, bool FAST, typename E, int NW>
__device__ __forceinline__ void ab_online(const u32 qf[D / 16][4], u16* kv, const E* kb, i64 kS, const E* vb,
                                          i64 vS, int t0, int T, int qs, int window, float scale, int lo, int hi,
                                          float m[2], float l[2], float acc[DV / 8][4]) {
    int warp = threadIdx.x >> 5;
    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
    int wFirst = t0 + warp * 16;                           // first query of the warp
    int wLast = min(wFirst + 15, T - 1);
    int pos[2] = {qs + wFirst + g, qs + wFirst + g + 8};
    bool row[2] = {wFirst + g < T, wFirst + g + 8 < T};
    float sc2 = scale * AB_LOG2E;
    auto body = [&](const u16* ksh, const u16* vsh, int k0) {
        // warp-uniform: no key of the tile is visible to a query of the warp
        if (wFirst > wLast || k0 > qs + wLast || (window > 0 && qs + wFirst - (k0 + BN - 1) >= window)) return;
        float s[BN / 8][4];
        ab_dot_frags<D, BN>(qf, ksh, s);
        if constexpr (FAST) {
            // warp-uniform: every key of the tile visible to every row of the warp
            bool full = wLast == wFirst + 15 && k0 + BN - 1 <= qs + wFirst && (window <= 0 || qs + wLast - k0 < window);
            float mx[2] = {-ORBIT_INF, -ORBIT_INF};
            if (!full) {
#pragma unroll
                for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int i = e >> 1;
                        int key = k0 + n * 8 + 2 * c + (e & 1);
                        s[n][e] = row[i] && ab_visible(pos[i], key, window) ? s[n][e] : -ORBIT_INF;
                    }
                }
            }
#pragma unroll
            for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
            }
            float mn[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
            for (int i = 0; i < 2; i++) mn[i] = fmaxf(m[i], ab_quad_max(mx[i]) * sc2);   // scale > 0
            if (__any_sync(0xffffffffu, mn[0] != m[0] || mn[1] != m[1])) {
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    float corr = mn[i] == -ORBIT_INF ? 1.0f : ab_ex2(m[i] - mn[i]);
                    l[i] *= corr;
                    m[i] = mn[i];
#pragma unroll
                    for (int n = 0; n < DV / 8; n++) {
                        acc[n][2 * i] *= corr;
                        acc[n][2 * i + 1] *= corr;
                    }
                }
            }
            if (full) {
#pragma unroll
                for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float p = ab_ex2(fmaf(s[n][e], sc2, -mn[e >> 1]));
                        sum[e >> 1] += p;
                        s[n][e] = p;
                    }
                }
            } else {
#pragma unroll
                for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float p = s[n][e] == -ORBIT_INF ? 0.0f : ab_ex2(fmaf(s[n][e], sc2, -mn[e >> 1]));
                        sum[e >> 1] += p;
                        s[n][e] = p;
                    }
                }
            }
            l[0] += ab_quad_sum(sum[0]);
            l[1] += ab_quad_sum(sum[1]);
            ab_accumulate<DV, BN>(s, vsh, acc);
            return;
        }
        float mx[2] = {-ORBIT_INF, -ORBIT_INF};
#pragma unroll
        for (int n = 0; n < BN / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = e >> 1;
                int key = k0 + n * 8 + 2 * c + (e & 1);
                s[n][e] = row[i] && ab_visible(pos[i], key, window) ? s[n][e] * scale : -ORBIT_INF;
                mx[i] = fmaxf(mx[i], s[n][e]);
            }
        }
        float mn[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int i = 0; i < 2; i++) {
            mn[i] = fmaxf(m[i], ab_quad_max(mx[i]));
            float corr = mn[i] == -ORBIT_INF ? 1.0f : __expf(m[i] - mn[i]);
            l[i] *= corr;
            m[i] = mn[i];
#pragma unroll
            for (int n = 0; n < DV / 8; n++) {
                acc[n][2 * i] *= corr;
                acc[n][2 * i + 1] *= corr;
            }
        }
#pragma unroll
        for (int n = 0; n < BN / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = e >> 1;
                float p = s[n][e] == -ORBIT_INF ? 0.0f : __expf(s[n][e] - mn[i]);
                sum[i] += p;
                s[n][e] = p;
            }
        }
        l[0] += ab_quad_sum(sum[0]);
        l[1] += ab_quad_sum(sum[1]);
        ab_accumulate<DV, BN>(s, vsh, acc);
    };
    if constexpr (sizeof(E) == 2) {
        ab_stream_keys16<D, DV, BN, 32 * NW>(kv, kb, kS, vb, vS, lo, hi, body);
    } else {
        static_assert(NW == 8, "f32 sources: blocks of AB_THREADS");
        ab_stream_keys<D, DV, BN>(kv, kb, kS, vb, vS, lo, hi, body);
    }
}

// Grid ceil(T / AB_BM) * Hq, block AB_THREADS; dynamic shared 2 * (AB_BM * (D + 8) + 2 * BN * (D + DV + 16))
// bytes. out [T, Hq, DV]. Later query tiles (more keys) launch first. lse, unless null: each row's log-sum-exp
// [T, Hq] as ab_backward_q<FAST>'s first pass writes it (FAST: log2 units), for that pass to be skipped.
// E: float (k, v as given; NW = 8) or u16 (bf16 copies, cp.async); q f32 either way. NW warps a block of
// BM = 16 NW queries: the grid and shared size above with BM, 32 NW threads in place of AB_BM, AB_THREADS.
template <int D, int DV, int BN, bool FAST, typename E, int NW>
__device__ __forceinline__ void ab_forward(const float* q, i64 qT, i64 qH, const E* k, i64 kS, i64 kH, const E* v,
                                           i64 vS, i64 vH, float* out, i64 oT, i64 oH, int T, int Hq, int Hkv, int qs,
                                           int window, float scale, const float* sinks, float* lse) {
    constexpr int BM = 16 * NW;
    extern __shared__ __align__(16) u16 ab_sm[];
    u16* qsh = ab_sm;                         // [BM][D + 8]
    u16* kv = qsh + BM * (D + 8);             // 2 x (k [BN][D + 8], v [BN][DV + 8])
    int tiles = (T + BM - 1) / BM;
    int h = blockIdx.x % Hq;
    int t0 = (tiles - 1 - (int) (blockIdx.x / Hq)) * BM;
    int kvh = h / (Hq / Hkv);
    int tLast = min(t0 + BM - 1, T - 1);
    int hi = qs + tLast;
    int lo = window > 0 ? max(0, qs + t0 - window + 1) : 0;
    {
        AbTile<BM, D, 32 * NW> qt;
        qt.load([&](int r) { return t0 + r < T ? q + (i64) (t0 + r) * qT + (i64) h * qH : (const float*) 0; });
        qt.store(qsh);
    }
    __syncthreads();
    u32 qf[D / 16][4];
    ab_frags<D>(qsh + (threadIdx.x >> 5) * 16 * (D + 8), qf);

    float m[2], l[2], acc[DV / 8][4];
    float sink = sinks != 0 ? sinks[h] * (FAST ? AB_LOG2E : 1.0f) : -ORBIT_INF;
    m[0] = m[1] = sink;
    l[0] = l[1] = sinks != 0 ? 1.0f : 0.0f;
#pragma unroll
    for (int n = 0; n < DV / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    ab_online<D, DV, BN, FAST, E, NW>(qf, kv, k + (i64) kvh * kH, kS, v + (i64) kvh * vH, vS, t0, T, qs, window, scale, lo, hi, m, l,
                         acc);

    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int t = t0 + (threadIdx.x >> 5) * 16 + g + 8 * i;
        if (t < T) {
            if (lse != 0 && c == 0) {   // the statistic ab_backward_q's first pass would compute (the same expression)
                lse[(i64) t * Hq + h] = FAST ? m[i] + __log2f(l[i]) : m[i] + logf(l[i]);
            }
            float inv = 1.0f / l[i];
            float* o = out + (i64) t * oT + (i64) h * oH + 2 * c;
#pragma unroll
            for (int n = 0; n < DV / 8; n++) {
                o[n * 8] = acc[n][2 * i] * inv;
                o[n * 8 + 1] = acc[n][2 * i + 1] * inv;
            }
        }
    }
}

// Grid ceil(T / AB_BM) * Hq, block AB_THREADS; dynamic shared
// 2 * (AB_BM * (D + DV + 16) + 2 * BN * (D + DV + 16)) bytes.
// Pass 1 recomputes the rows' softmax (as ab_forward) and writes lse and delta = dout . o [T, Hq];
// pass 2 sums dq = scale * sum_j p_j (dp_j - delta) k_j over the key tiles. dq [T, Hq, D].
// lseIn, fwdOut (unless null): the forward's lse (ab_forward's, the same units) and output [T, Hq, DV] (strides ooT, ooH):
// pass 1 is skipped, lse copied and delta = dout . o summed in pass 1's order (the forward's o is pass 1's acc / l).
// FAST: lse in log2 units (log2 of the row's softmax denominator of 2^(scale log2 e q.k)), the mask only
// on tiles where some key is hidden from some row of the warp, scale applied to dq once at the end.
// E: float (q, k, v, dout as given) or u16 (bf16 copies of the same shapes: q, k, v, do point at them,
// cp.async); dout (f32) feeds delta either way. NW warps a block of BM = 16 NW queries (8 for f32 sources);
// the grid and shared size above with BM, 32 NW threads, in place of AB_BM, AB_THREADS.
template <int D, int DV, int BN, bool FAST, typename E, int NW>
__device__ __forceinline__ void ab_backward_q(const E* q, i64 qT, i64 qH, const E* k, i64 kS, i64 kH,
                                              const E* v, i64 vS, i64 vH, const E* dob, i64 dobT, i64 dobH,
                                              const float* dout, i64 oT, i64 oH,
                                              float* dq, i64 dqT, i64 dqH, float* lse, float* delta, int T, int Hq,
                                              int Hkv, int qs, int window, float scale, const float* sinks,
                                              const float* lseIn, const float* fwdOut, i64 ooT, i64 ooH) {
    constexpr int BM = 16 * NW;
    extern __shared__ __align__(16) u16 ab_sm[];
    u16* qsh = ab_sm;                         // [BM][D + 8]
    u16* osh = qsh + BM * (D + 8);         // [BM][DV + 8] dout
    u16* kv = osh + BM * (DV + 8);         // 2 x (k [BN][D + 8], v [BN][DV + 8])
    int tiles = (T + BM - 1) / BM;
    int h = blockIdx.x % Hq;
    int t0 = (tiles - 1 - (int) (blockIdx.x / Hq)) * BM;
    int kvh = h / (Hq / Hkv);
    int tLast = min(t0 + BM - 1, T - 1);
    int hi = qs + tLast;
    int lo = window > 0 ? max(0, qs + t0 - window + 1) : 0;
    const E* kb = k + (i64) kvh * kH;
    const E* vb = v + (i64) kvh * vH;
    if constexpr (sizeof(E) == 2) {
        ab_cp_tile<BM, D, 32 * NW>(qsh, q, [&](int r) { return t0 + r < T ? q + (i64) (t0 + r) * qT + (i64) h * qH : (const E*) 0; });
        ab_cp_tile<BM, DV, 32 * NW>(osh, dob,
                              [&](int r) { return t0 + r < T ? dob + (i64) (t0 + r) * dobT + (i64) h * dobH : (const E*) 0; });
        cp_async_commit();
        cp_async_wait<0>();
    } else {
        static_assert(NW == 8, "f32 sources: blocks of AB_THREADS");
        AbTile<BM, D> qt;
        qt.load([&](int r) { return t0 + r < T ? q + (i64) (t0 + r) * qT + (i64) h * qH : (const float*) 0; });
        qt.store(qsh);
        AbTile<BM, DV> ot;
        ot.load([&](int r) { return t0 + r < T ? dob + (i64) (t0 + r) * dobT + (i64) h * dobH : (const float*) 0; });
        ot.store(osh);
    }
    __syncthreads();
    int warp = threadIdx.x >> 5;
    u32 qf[D / 16][4];
    ab_frags<D>(qsh + warp * 16 * (D + 8), qf);

    float m[2], l[2], acc[DV / 8][4];
    float sink = sinks != 0 ? sinks[h] * (FAST ? AB_LOG2E : 1.0f) : -ORBIT_INF;
    m[0] = m[1] = sink;
    l[0] = l[1] = sinks != 0 ? 1.0f : 0.0f;
#pragma unroll
    for (int n = 0; n < DV / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    if (lseIn == 0) {   // pass 1: the rows' softmax again (block-uniform)
        ab_online<D, DV, BN, FAST, E, NW>(qf, kv, kb, kS, vb, vS, t0, T, qs, window, scale, lo, hi, m, l, acc);
    }

    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
    int wFirst = t0 + warp * 16;
    int wLast = min(wFirst + 15, T - 1);
    int pos[2] = {qs + wFirst + g, qs + wFirst + g + 8};
    bool row[2] = {wFirst + g < T, wFirst + g + 8 < T};
    float L[2], dl[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int t = wFirst + g + 8 * i;
        float part = 0.0f;
        if (row[i]) {
            // delta from dout in f32 (not the bf16 copy in shared memory)
            const float* dor = dout + (i64) t * oT + (i64) h * oH + 2 * c;
            if (lseIn != 0) {
                const float* orow = fwdOut + (i64) t * ooT + (i64) h * ooH + 2 * c;
#pragma unroll
                for (int n = 0; n < DV / 8; n++) {
                    float o0 = orow[n * 8];
                    float o1 = orow[n * 8 + 1];
                    part += o0 * dor[n * 8] + o1 * dor[n * 8 + 1];
                }
            } else {
                float inv = 1.0f / l[i];
#pragma unroll
                for (int n = 0; n < DV / 8; n++) {
                    float o0 = acc[n][2 * i] * inv;
                    float o1 = acc[n][2 * i + 1] * inv;
                    part += o0 * dor[n * 8] + o1 * dor[n * 8 + 1];
                }
            }
        }
        dl[i] = ab_quad_sum(part);
        L[i] = !row[i] ? 0.0f : lseIn != 0 ? lseIn[(i64) t * Hq + h] : FAST ? m[i] + __log2f(l[i]) : m[i] + logf(l[i]);
        if (c == 0 && row[i]) {
            lse[(i64) t * Hq + h] = L[i];
            delta[(i64) t * Hq + h] = dl[i];
        }
    }

    float dqa[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.0f;
    const u16* orows = osh + warp * 16 * (DV + 8);
    float sc2 = scale * AB_LOG2E;
    auto body = [&](const u16* ksh, const u16* vsh, int k0) {
        if (wFirst > wLast || k0 > qs + wLast || (window > 0 && qs + wFirst - (k0 + BN - 1) >= window)) return;
        float s[BN / 8][4], dp[BN / 8][4];
        ab_dot_frags<D, BN>(qf, ksh, s);
        ab_dot_rows<DV, BN>(orows, vsh, dp);
        if constexpr (FAST) {
            bool full = wLast == wFirst + 15 && k0 + BN - 1 <= qs + wFirst && (window <= 0 || qs + wLast - k0 < window);
            if (full) {
#pragma unroll
                for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int i = e >> 1;
                        float p = ab_ex2(fmaf(s[n][e], sc2, -L[i]));
                        s[n][e] = p * (dp[n][e] - dl[i]);
                    }
                }
            } else {
#pragma unroll
                for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int i = e >> 1;
                        int key = k0 + n * 8 + 2 * c + (e & 1);
                        bool vis = row[i] && ab_visible(pos[i], key, window);
                        float p = ab_ex2(fmaf(s[n][e], sc2, -L[i]));
                        s[n][e] = vis ? p * (dp[n][e] - dl[i]) : 0.0f;
                    }
                }
            }
        } else {
#pragma unroll
            for (int n = 0; n < BN / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int i = e >> 1;
                    int key = k0 + n * 8 + 2 * c + (e & 1);
                    bool vis = row[i] && ab_visible(pos[i], key, window);
                    float p = vis ? __expf(s[n][e] * scale - L[i]) : 0.0f;
                    s[n][e] = vis ? p * (dp[n][e] - dl[i]) * scale : 0.0f;
                }
            }
        }
        ab_accumulate<D, BN>(s, ksh, dqa);
    };
    if constexpr (sizeof(E) == 2) {
        ab_stream_keys16<D, DV, BN, 32 * NW>(kv, kb, kS, vb, vS, lo, hi, body);
    } else {
        ab_stream_keys<D, DV, BN>(kv, kb, kS, vb, vS, lo, hi, body);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int t = wFirst + g + 8 * i;
        if (row[i]) {
            float* o = dq + (i64) t * dqT + (i64) h * dqH + 2 * c;
            float f = FAST ? scale : 1.0f;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                o[n * 8] = dqa[n][2 * i] * f;
                o[n * 8 + 1] = dqa[n][2 * i + 1] * f;
            }
        }
    }
}

// Grid ceil(S / AB_BK) * Hkv * splits, block AB_THREADS; dynamic shared
// 2 * (AB_BK * (D + DV + 16) + 2 * BQ * (D + DV + 16)) + 16 * BQ bytes. Split p of kv head g sums the
// query heads g * G + p * (G / splits) .. + G / splits - 1 (G = Hq / Hkv), query tiles ascending, heads
// ascending within a tile, and writes its dk, dv rows to dk + p * dkP, dv + p * dvP. lse, delta from
// ab_backward_q<FAST> (FAST: lse in log2 units, the mask only on tiles where some query of the tile does
// not see some key of the warp, scale applied to dk once at the end).
// E: float (q, k, v, dout as given, staged through registers) or u16 (bf16 copies, cp.async). NW warps a
// block of BK = 16 NW keys (8 for f32 sources); grid and shared size above with BK, 32 NW threads.
template <int D, int DV, int BQ, bool FAST, typename E, int NW>
__device__ __forceinline__ void ab_backward_kv(const E* q, i64 qT, i64 qH, const E* k, i64 kS, i64 kH,
                                               const E* v, i64 vS, i64 vH, const E* dout, i64 oT, i64 oH,
                                               float* dk, i64 dkS, i64 dkH, i64 dkP, float* dv, i64 dvS, i64 dvH,
                                               i64 dvP, const float* lse, const float* delta, int T, int S, int Hq,
                                               int Hkv, int qs, int window, float scale, int splits) {
    constexpr int BUF = BQ * (D + 8) + BQ * (DV + 8);
    constexpr int BK = 16 * NW;
    static_assert(2 * BQ <= 32 * NW, "a thread for each lse and delta of a tile");
    extern __shared__ __align__(16) u16 ab_sm[];
    u16* ksh = ab_sm;                         // [BK][D + 8] resident keys
    u16* vsh = ksh + BK * (D + 8);         // [BK][DV + 8] resident values
    u16* qo = vsh + BK * (DV + 8);         // 2 x (q [BQ][D + 8], dout [BQ][DV + 8]) streamed
    float* ld = (float*) (qo + 2 * BUF);      // 2 x (lse [BQ], delta [BQ])
    int split = blockIdx.x % splits;
    int gk = (blockIdx.x / splits) % Hkv;
    int s0 = (int) (blockIdx.x / (splits * Hkv)) * BK;
    int G = Hq / Hkv;
    int per = G / splits;
    int h0 = gk * G + split * per;
    int warp = threadIdx.x >> 5;
    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
    int tBeg = max(0, s0 - qs);               // first query that sees a key of the block
    int tEnd = T - 1;
    if (window > 0) tEnd = min(tEnd, s0 + BK - 1 + window - 1 - qs);
    int wKey = s0 + warp * 16;                // first key of the warp
    int key[2] = {wKey + g, wKey + g + 8};
    int nItems = tBeg <= tEnd ? ((tEnd - tBeg) / BQ + 1) * per : 0; // (query tile, head) pairs

    AbTile<BQ, D> qt;
    AbTile<BQ, DV> ot;
    float pl = 0.0f, pd = 0.0f;               // lse, delta of query threadIdx.x of the tile (threads < BQ)
    // bf16 sources: the copies of an item's q, dout, lse, delta into buffer buf, one commit group
    auto issue = [&](auto item, int buf) {
        int tq = tBeg + (item / per) * BQ;
        int h = h0 + item % per;
        u16* qd = qo + buf * BUF;
        ab_cp_tile<BQ, D, 32 * NW>(qd, q, [&](int r) { return tq + r <= tEnd ? q + (i64) (tq + r) * qT + (i64) h * qH : (const E*) 0; });
        ab_cp_tile<BQ, DV, 32 * NW>(qd + BQ * (D + 8), dout,
                           [&](int r) { return tq + r <= tEnd ? dout + (i64) (tq + r) * oT + (i64) h * oH : (const E*) 0; });
        if (threadIdx.x < 2 * BQ) {
            int j = threadIdx.x < BQ ? threadIdx.x : threadIdx.x - BQ;
            int t = tq + j;
            const float* src = threadIdx.x < BQ ? lse : delta;
            ab_cp4(ld + buf * 2 * BQ + threadIdx.x, src + (t <= tEnd ? (i64) t * Hq + h : 0), t <= tEnd);
        }
        cp_async_commit();
    };
    // f32 sources (E = float; compiled but never called for u16): an item's rows into registers (load),
    // then into buffer buf (store)
    auto load = [&](auto item) {
        int tq = tBeg + (item / per) * BQ;
        int h = h0 + item % per;
        qt.load([&](int r) { return tq + r <= tEnd ? q + (i64) (tq + r) * qT + (i64) h * qH : (const E*) 0; });
        ot.load([&](int r) { return tq + r <= tEnd ? dout + (i64) (tq + r) * oT + (i64) h * oH : (const E*) 0; });
        if (threadIdx.x < BQ) {
            int t = tq + threadIdx.x;
            pl = t <= tEnd ? lse[(i64) t * Hq + h] : 0.0f;
            pd = t <= tEnd ? delta[(i64) t * Hq + h] : 0.0f;
        }
    };
    auto store = [&](auto buf) {
        qt.store(qo + buf * BUF);
        ot.store(qo + buf * BUF + BQ * (D + 8));
        if (threadIdx.x < BQ) {
            ld[buf * 2 * BQ + threadIdx.x] = pl;
            ld[buf * 2 * BQ + BQ + threadIdx.x] = pd;
        }
    };
    if constexpr (sizeof(E) == 2) {
        ab_cp_tile<BK, D, 32 * NW>(ksh, k, [&](int r) { return s0 + r < S ? k + (i64) (s0 + r) * kS + (i64) gk * kH : (const E*) 0; });
        ab_cp_tile<BK, DV, 32 * NW>(vsh, v, [&](int r) { return s0 + r < S ? v + (i64) (s0 + r) * vS + (i64) gk * vH : (const E*) 0; });
        if (nItems > 0) {
            issue(0, 0);                      // one group with the resident keys and values
        } else {
            cp_async_commit();
            cp_async_wait<0>();
        }
    } else {
        static_assert(NW == 8, "f32 sources: blocks of AB_THREADS");
        AbTile<BK, D> kt;
        kt.load([&](int r) { return s0 + r < S ? k + (i64) (s0 + r) * kS + (i64) gk * kH : (const float*) 0; });
        kt.store(ksh);
        AbTile<BK, DV> vt;
        vt.load([&](int r) { return s0 + r < S ? v + (i64) (s0 + r) * vS + (i64) gk * vH : (const float*) 0; });
        vt.store(vsh);
        if (nItems > 0) {
            load(0);
            store(0);
        }
        __syncthreads();
    }

    float ak[D / 8][4], av[DV / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) ak[n][0] = ak[n][1] = ak[n][2] = ak[n][3] = 0.0f;
#pragma unroll
    for (int n = 0; n < DV / 8; n++) av[n][0] = av[n][1] = av[n][2] = av[n][3] = 0.0f;
    const u16* krows = ksh + warp * 16 * (D + 8);
    const u16* vrows = vsh + warp * 16 * (DV + 8);
    float sc2 = scale * AB_LOG2E;
    for (int item = 0; item < nItems; item++) {
        int buf = item & 1;
        bool more = item + 1 < nItems;
        if constexpr (sizeof(E) == 2) {
            if (more) {
                issue(item + 1, buf ^ 1);   // that buffer's last reader passed the barrier ending the previous item
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
        } else {
            if (more) load(item + 1);
        }
        int tq = tBeg + (item / per) * BQ;
        int qLast = min(tq + BQ - 1, tEnd);
        // warp-uniform: no query of the tile sees a key of the warp
        bool idle = wKey >= S || wKey > qs + qLast || (window > 0 && qs + tq - (wKey + 15) >= window);
        if (!idle) {
            const u16* qsh = qo + buf * BUF;
            const u16* osh = qsh + BQ * (D + 8);
            const float* lsh = ld + buf * 2 * BQ;
            const float* dsh = lsh + BQ;
            float s[BQ / 8][4], dp[BQ / 8][4];
            ab_dot_rows<D, BQ>(krows, qsh, s);   // s^T [16 keys, BQ queries]
            ab_dot_rows<DV, BQ>(vrows, osh, dp); // dp^T
            if constexpr (FAST) {
                bool full = tq + BQ - 1 <= tEnd && wKey + 15 < S && wKey + 15 <= qs + tq
                        && (window <= 0 || qs + tq + BQ - 1 - wKey < window);
                if (full) {
#pragma unroll
                    for (int n = 0; n < BQ / 8; n++) {
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int j = n * 8 + 2 * c + (e & 1);
                            float p = ab_ex2(fmaf(s[n][e], sc2, -lsh[j]));
                            dp[n][e] = p * (dp[n][e] - dsh[j]);
                            s[n][e] = p;
                        }
                    }
                } else {
#pragma unroll
                    for (int n = 0; n < BQ / 8; n++) {
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int j = n * 8 + 2 * c + (e & 1);
                            int t = tq + j;
                            int kk = key[e >> 1];
                            bool vis = t <= tEnd && kk < S && ab_visible(qs + t, kk, window);
                            float p = vis ? ab_ex2(fmaf(s[n][e], sc2, -lsh[j])) : 0.0f;
                            dp[n][e] = vis ? p * (dp[n][e] - dsh[j]) : 0.0f;
                            s[n][e] = p;
                        }
                    }
                }
            } else {
#pragma unroll
            for (int n = 0; n < BQ / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int j = n * 8 + 2 * c + (e & 1);           // query of the tile
                    int t = tq + j;
                    int kk = key[e >> 1];
                    bool vis = t <= tEnd && kk < S && ab_visible(qs + t, kk, window);
                    float p = vis ? __expf(s[n][e] * scale - lsh[j]) : 0.0f;
                    dp[n][e] = vis ? p * (dp[n][e] - dsh[j]) * scale : 0.0f;
                    s[n][e] = p;
                }
            }
            }
            ab_accumulate<DV, BQ>(s, osh, av);
            ab_accumulate<D, BQ>(dp, qsh, ak);
        }
        if constexpr (sizeof(E) != 2) {
            if (more) store(buf ^ 1);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int kk = key[i];
        if (kk < S) {
            float* ok = dk + (i64) split * dkP + (i64) kk * dkS + (i64) gk * dkH + 2 * c;
            float f = FAST ? scale : 1.0f;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                ok[n * 8] = ak[n][2 * i] * f;
                ok[n * 8 + 1] = ak[n][2 * i + 1] * f;
            }
            float* ov = dv + (i64) split * dvP + (i64) kk * dvS + (i64) gk * dvH + 2 * c;
#pragma unroll
            for (int n = 0; n < DV / 8; n++) {
                ov[n * 8] = av[n][2 * i];
                ov[n * 8 + 1] = av[n][2 * i + 1];
            }
        }
    }
}

#define AB_FORWARD_ARGS                                                                                                \
    const float *q, i64 qT, i64 qH, const float *k, i64 kS, i64 kH, const float *v, i64 vS, i64 vH, float *out, i64 oT, \
        i64 oH, int T, int Hq, int Hkv, int qs, int window, float scale, const float *sinks
#define AB_BACKWARD_Q_ARGS                                                                                             \
    const float *q, i64 qT, i64 qH, const float *k, i64 kS, i64 kH, const float *v, i64 vS, i64 vH, const float *dout, \
        i64 oT, i64 oH, float *dq, i64 dqT, i64 dqH, float *lse, float *delta, int T, int Hq, int Hkv, int qs,         \
        int window, float scale, const float *sinks
#define AB_BACKWARD_KV_ARGS                                                                                            \
    const float *q, i64 qT, i64 qH, const float *k, i64 kS, i64 kH, const float *v, i64 vS, i64 vH, const float *dout, \
        i64 oT, i64 oH, float *dk, i64 dkS, i64 dkH, i64 dkP, float *dv, i64 dvS, i64 dvH, i64 dvP, const float *lse,  \
        const float *delta, int T, int S, int Hq, int Hkv, int qs, int window, float scale, int splits

// Streamed tile sizes (CudaMmaAttention mirrors them): keys a forward / dq tile, queries a dk/dv tile.
#define AB_BN64 64
#define AB_BN128 32
#define AB_BQ64 64
#define AB_BQ128 32

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab_forward_d64(AB_FORWARD_ARGS) {
    ORBIT_TRACE_KERNEL();
    ab_forward<64, 64, AB_BN64, false, float, 8>(q, qT, qH, k, kS, kH, v, vS, vH, out, oT, oH, T, Hq, Hkv, qs, window, scale, sinks, 0);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab_forward_d128(AB_FORWARD_ARGS) {
    ORBIT_TRACE_KERNEL();
    ab_forward<128, 128, AB_BN128, false, float, 8>(q, qT, qH, k, kS, kH, v, vS, vH, out, oT, oH, T, Hq, Hkv, qs, window, scale, sinks, 0);
}

#define AB_BACKWARD_Q_CALL(D, BN, FAST)                                                                                \
    ab_backward_q<D, D, BN, FAST, float, 8>(q, qT, qH, k, kS, kH, v, vS, vH, dout, oT, oH, dout, oT, oH, dq, dqT, dqH, lse, \
                                         delta, T, Hq, Hkv, qs, window, scale, sinks, 0, 0, 0, 0)
#define AB_BACKWARD_KV_CALL(D, BQ, FAST)                                                                               \
    ab_backward_kv<D, D, BQ, FAST, float, 8>(q, qT, qH, k, kS, kH, v, vS, vH, dout, oT, oH, dk, dkS, dkH, dkP, dv, dvS,     \
                                          dvH, dvP, lse, delta, T, S, Hq, Hkv, qs, window, scale, splits)

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab_backward_q_d64(AB_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB_BACKWARD_Q_CALL(64, AB_BN64, false);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab_backward_q_d128(AB_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB_BACKWARD_Q_CALL(128, AB_BN128, false);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab_backward_kv_d64(AB_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB_BACKWARD_KV_CALL(64, AB_BQ64, false);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab_backward_kv_d128(AB_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB_BACKWARD_KV_CALL(128, AB_BQ128, false);
}

// The bf16v2 kernels (FAST above): same tiles and launch shapes.
extern "C" __global__ void __launch_bounds__(AB_THREADS) ab2_forward_d64(AB_FORWARD_ARGS) {
    ORBIT_TRACE_KERNEL();
    ab_forward<64, 64, AB_BN64, true, float, 8>(q, qT, qH, k, kS, kH, v, vS, vH, out, oT, oH, T, Hq, Hkv, qs, window, scale, sinks, 0);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab2_forward_d128(AB_FORWARD_ARGS) {
    ORBIT_TRACE_KERNEL();
    ab_forward<128, 128, AB_BN128, true, float, 8>(q, qT, qH, k, kS, kH, v, vS, vH, out, oT, oH, T, Hq, Hkv, qs, window, scale, sinks, 0);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab2_backward_q_d64(AB_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB_BACKWARD_Q_CALL(64, AB_BN64, true);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab2_backward_q_d128(AB_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB_BACKWARD_Q_CALL(128, AB_BN128, true);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab2_backward_kv_d64(AB_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB_BACKWARD_KV_CALL(64, AB_BQ64, true);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab2_backward_kv_d128(AB_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB_BACKWARD_KV_CALL(128, AB_BQ128, true);
}

// The bf16v3 (ab3_*, 8 warps a block) and bf16v4 (ab4_*, 4 warps: 64 queries or keys a block, two blocks an
// SM) backward: the bf16v2 kernels reading bf16 copies of q, dout, k and v (ab_to_bf16_pair) by cp.async,
// with the tiles below. q16, do16 [T, Hq, D], k16, v16 [S, Hkv, D], contiguous; dout (f32) for delta.
#define AB3_BN64 64
#define AB3_BN128 64
#define AB3_BQ64 64
#define AB3_BQ128 32

#define AB3_BACKWARD_Q_ARGS                                                                                            \
    const u16 *q16, const u16 *k16, const u16 *v16, const u16 *do16, const float *dout, i64 oT, i64 oH, float *dq,     \
        i64 dqT, i64 dqH, float *lse, float *delta, int T, int Hq, int Hkv, int qs, int window, float scale,          \
        const float *sinks, const float *lseIn, const float *fwdOut, i64 ooT, i64 ooH
#define AB3_BACKWARD_KV_ARGS                                                                                           \
    const u16 *q16, const u16 *k16, const u16 *v16, const u16 *do16, float *dk, i64 dkS, i64 dkH, i64 dkP, float *dv, \
        i64 dvS, i64 dvH, i64 dvP, const float *lse, const float *delta, int T, int S, int Hq, int Hkv, int qs,       \
        int window, float scale, int splits
#define AB3_BACKWARD_Q_CALL(D, BN, NW)                                                                                 \
    ab_backward_q<D, D, BN, true, u16, NW>(q16, (i64) Hq * D, D, k16, (i64) Hkv * D, D, v16, (i64) Hkv * D, D, do16,         \
                                       (i64) Hq * D, D, dout, oT, oH, dq, dqT, dqH, lse, delta, T, Hq, Hkv, qs, window,  \
                                       scale, sinks, lseIn, fwdOut, ooT, ooH)
#define AB3_BACKWARD_KV_CALL(D, BQ, NW)                                                                                \
    ab_backward_kv<D, D, BQ, true, u16, NW>(q16, (i64) Hq * D, D, k16, (i64) Hkv * D, D, v16, (i64) Hkv * D, D, do16,        \
                                        (i64) Hq * D, D, dk, dkS, dkH, dkP, dv, dvS, dvH, dvP, lse, delta, T, S, Hq,     \
                                        Hkv, qs, window, scale, splits)

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab3_backward_q_d64(AB3_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB3_BACKWARD_Q_CALL(64, AB3_BN64, 8);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab3_backward_q_d128(AB3_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB3_BACKWARD_Q_CALL(128, AB3_BN128, 8);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab3_backward_kv_d64(AB3_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB3_BACKWARD_KV_CALL(64, AB3_BQ64, 8);
}

extern "C" __global__ void __launch_bounds__(AB_THREADS) ab3_backward_kv_d128(AB3_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB3_BACKWARD_KV_CALL(128, AB3_BQ128, 8);
}

extern "C" __global__ void __launch_bounds__(128, 2) ab4_backward_q_d64(AB3_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB3_BACKWARD_Q_CALL(64, AB3_BN64, 4);
}

extern "C" __global__ void __launch_bounds__(128, 2) ab4_backward_q_d128(AB3_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB3_BACKWARD_Q_CALL(128, AB3_BN128, 4);
}

extern "C" __global__ void __launch_bounds__(128, 2) ab4_backward_kv_d64(AB3_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB3_BACKWARD_KV_CALL(64, AB3_BQ64, 4);
}

extern "C" __global__ void __launch_bounds__(128, 2) ab4_backward_kv_d128(AB3_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB3_BACKWARD_KV_CALL(128, AB3_BQ128, 4);
}

// The bf16v4 forward: q f32, k16, v16 bf16 copies [S, Hkv, D] (ab_to_bf16_pair), 4 warps (64 queries) a
// block, 64 keys a tile; lse (null: none) the rows' statistics for ab4_backward_q (its lseIn: the tiles agree).
#define AB4_FORWARD_ARGS                                                                                               \
    const float *q, i64 qT, i64 qH, const u16 *k16, const u16 *v16, float *out, i64 oT, i64 oH, int T, int Hq, int Hkv, \
        int qs, int window, float scale, const float *sinks, float *lse
#define AB4_FORWARD_CALL(D)                                                                                            \
    ab_forward<D, D, 64, true, u16, 4>(q, qT, qH, k16, (i64) Hkv * D, D, v16, (i64) Hkv * D, D, out, oT, oH, T, Hq, Hkv, \
                                       qs, window, scale, sinks, lse)

extern "C" __global__ void __launch_bounds__(128, 2) ab4_forward_d64(AB4_FORWARD_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB4_FORWARD_CALL(64);
}

extern "C" __global__ void __launch_bounds__(128, 2) ab4_forward_d128(AB4_FORWARD_ARGS) {
    ORBIT_TRACE_KERNEL();
    AB4_FORWARD_CALL(128);
}

// bf16 copies (round to nearest even, as the staging of the f32 kernels above) of two f32 tensors
// [rows, H, D] (leading strides a multiple of 4, 16-byte aligned) into contiguous [rows, H, D]:
// blockIdx.y picks the tensor. Grid (ceil(rows * H * D / 4 / 256), 2), block 256.
extern "C" __global__ void ab_to_bf16_pair(const float* x0, i64 x0S, i64 x0H, u16* y0, const float* x1, i64 x1S, i64 x1H,
                                           u16* y1, int rows, int H, int D) {
    ORBIT_TRACE_KERNEL();
    const float* x = blockIdx.y == 0 ? x0 : x1;
    i64 xS = blockIdx.y == 0 ? x0S : x1S;
    i64 xH = blockIdx.y == 0 ? x0H : x1H;
    u16* y = blockIdx.y == 0 ? y0 : y1;
    i64 i = ((i64) blockIdx.x * blockDim.x + threadIdx.x) * 4;   // first of 4 elements of y
    if (i >= (i64) rows * H * D) return;
    int d = (int) (i % D);
    i64 rh = i / D;
    int h = (int) (rh % H);
    i64 r = rh / H;
    float4 v = *(const float4*) (x + r * xS + (i64) h * xH + d);
    *(uint2*) (y + i) = make_uint2(ab_pack(v.x, v.y), ab_pack(v.z, v.w));
}
