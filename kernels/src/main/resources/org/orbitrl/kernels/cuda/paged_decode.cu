// Decode attention over the paged cache with every query head of a kv head sharing each key/value
// tile: the cache is read once per (sequence, kv head, key split).
//
// Layout and semantics as paged_decode_f32 (flash_attention.cu): per layer keys kc [rows, Hkv * D]
// and values vc [rows, Hkv * Dv], f32 (CT float) or bf16 (CT u16: the _kvbf16 entry points, each value
// widened to f32 exactly where it is read); sequence b's position s is row
// tables[b * maxBlocks + s / blockSize] * blockSize + s % blockSize; q [B, Hq, D] (strides qB, qH),
// one query per sequence at position lens[b] - 1; window > 0 keeps keys with pos - s < window; sinks
// null or f32 [Hq], a logit joining split 0's softmax denominator with no value. Splits of splitLen
// keys write partials (unnormalised accumulator, max, sum) that attention_combine merges; with one
// split the block writes out.
//
// Grid B * Hkv * splits; block 32 * warps with warps = ceil(G / HW), G = Hq / Hkv <= 8 and HW = 4 or
// 2 query heads per warp (the two entry points at the end). Warp w owns query heads w * HW .. +
// HW - 1 of the group (slots past G repeat head G - 1 and are not written). Key/value tiles of PD_TK
// keys go through a two-stage cp.async pipeline in dynamic shared memory (16-byte copies of the cache's own bytes, one
// cache row = D or Dv contiguous values). Per tile:
// lane j scores key j against the warp's HW heads (K row from shared memory, q rows broadcast),
// online softmax per head across the warp (running max m, sum l, accumulator rescaled when the max
// grows), probabilities through shared memory, then lane j accumulates value channels 4j .. 4j + 3
// for the HW heads. D, Dv <= 128, multiples of 4 (f32) or 8 (bf16); caches 16-byte aligned.
//
// Dynamic shared memory: 2 stages of [PD_TK][D + PAD] keys and [PD_TK][Dv + PAD] values of CT (PAD: 16 bytes of
// CT), then f32 q [warps * HW][D] and probabilities [warps * HW][PD_TK]. Rows padded by 16 bytes: lane j reading
// row j hits distinct banks.

#define PD_TK 32 // keys per tile: one per lane
static_assert(PD_TK == 32, "lane j scores key j of a tile");

template <typename CT>
struct PdCache {
    static constexpr int PAD = 16 / (int) sizeof(CT); // a row's padding, in values
    static constexpr int CHUNK = 16 / (int) sizeof(CT); // values a 16-byte copy moves
};

// 4 consecutive cache values from shared memory as f32 (bf16 widened exactly).
__device__ __forceinline__ float4 pd_ld4(const float* p) {
    return *(const float4*) p;
}

__device__ __forceinline__ float4 pd_ld4(const u16* p) {
    return bf16x4_to_f32(*(const uint2*) p);
}

__device__ __forceinline__ void pd_cp16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}

// The block's sequence b, kv head kvh and key split (grid B * Hkv * splits, the split fastest), the group G = Hq / Hkv,
// and the split's keys ks .. ke (none when ke < ks): the splitLen keys of the split up to the query's position
// lens[b] - 1, from the sliding window's first key on (window > 0).
struct PdSplit {
    int b, kvh, split, G, ks, ke;
};

// A block's indices alone (ks and ke left 0): what it knows before it reads the length.
__device__ __forceinline__ PdSplit pd_index(int Hq, int Hkv, int splits) {
    PdSplit r;
    r.split = blockIdx.x % splits;
    int bk = blockIdx.x / splits;
    r.kvh = bk % Hkv;
    r.b = bk / Hkv;
    r.G = Hq / Hkv;
    r.ks = 0;
    r.ke = 0;
    return r;
}

__device__ __forceinline__ PdSplit pd_split(const int* lens, int Hq, int Hkv, int window, int splits, int splitLen) {
    PdSplit r = pd_index(Hq, Hkv, splits);
    int pos = lens[r.b] - 1;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    int ks = r.split * splitLen;
    r.ke = ks + splitLen - 1 < pos ? ks + splitLen - 1 : pos; // last key of this split
    r.ks = ks < lo ? lo : ks;
    return r;
}

// Issues the copies of keys tile .. tile + PD_TK - 1 (those <= ke) into one stage; rows past ke
// are zeroed (a zero probability times a stale value must stay zero). Lane l finds key tile + l's
// cache row (PD_TK is the warp width), then warp w copies rows w, w + warps, ... with lane l taking
// the 16-byte columns l, l + 32, ... Called by every thread of the block (it shuffles).
template <typename CT>
__device__ __forceinline__ void pd_load_tile(CT* ksh, CT* vsh, const CT* kb, const CT* vb, const int* table, int blockSize,
                                             i64 kRow, i64 vRow, int D, int Dv, int tile, int ke, int warp, int warps,
                                             int lane) {
    constexpr int PAD = PdCache<CT>::PAD;
    constexpr int CH = PdCache<CT>::CHUNK;
    int sl = tile + lane;
    int rowl = sl <= ke ? table[sl / blockSize] * blockSize + sl % blockSize : 0;
    for (int j = warp; j < PD_TK; j += warps) {
        int row = __shfl_sync(0xffffffffu, rowl, j);
        CT* kd = ksh + j * (D + PAD);
        CT* vd = vsh + j * (Dv + PAD);
        if (tile + j <= ke) {
            const CT* kr = kb + (i64) row * kRow;
            const CT* vr = vb + (i64) row * vRow;
            for (int c = CH * lane; c < D; c += 32 * CH) pd_cp16(kd + c, kr + c);
            for (int c = CH * lane; c < Dv; c += 32 * CH) pd_cp16(vd + c, vr + c);
        } else {
            uint4 z = make_uint4(0u, 0u, 0u, 0u);
            for (int c = CH * lane; c < D; c += 32 * CH) *(uint4*) (kd + c) = z;
            for (int c = CH * lane; c < Dv; c += 32 * CH) *(uint4*) (vd + c) = z;
        }
    }
}

// s[i] = q row i (of the warp's HW, f32 in shared memory) . key row kr, over D in order, 4 values a step: f32 keys
// 16 bytes a load; bf16 keys 8 values (16 bytes) a load, so that the lanes' rows (a 272-byte stride at D = 128)
// fall in distinct banks, then the same fma chain.
template <int HW>
__device__ __forceinline__ void pd_scores(const float* kr, const float* qw, int D, float* s) {
#pragma unroll 4
    for (int c = 0; c < D; c += 4) {
        float4 kk = *(const float4*) (kr + c);
#pragma unroll
        for (int i = 0; i < HW; i++) {
            float4 qq = *(const float4*) (qw + i * D + c);
            s[i] = fmaf(qq.x, kk.x, fmaf(qq.y, kk.y, fmaf(qq.z, kk.z, fmaf(qq.w, kk.w, s[i]))));
        }
    }
}

template <int HW>
__device__ __forceinline__ void pd_scores(const u16* kr, const float* qw, int D, float* s) {
#pragma unroll 2
    for (int c = 0; c < D; c += 8) {
        uint4 u = *(const uint4*) (kr + c);
        float4 k0 = bf16x4_to_f32(make_uint2(u.x, u.y));
        float4 k1 = bf16x4_to_f32(make_uint2(u.z, u.w));
#pragma unroll
        for (int i = 0; i < HW; i++) {
            float4 q0 = *(const float4*) (qw + i * D + c);
            float4 q1 = *(const float4*) (qw + i * D + c + 4);
            s[i] = fmaf(q0.x, k0.x, fmaf(q0.y, k0.y, fmaf(q0.z, k0.z, fmaf(q0.w, k0.w, s[i]))));
            s[i] = fmaf(q1.x, k1.x, fmaf(q1.y, k1.y, fmaf(q1.z, k1.z, fmaf(q1.w, k1.w, s[i]))));
        }
    }
}

template <int HW, typename CT>
__device__ __forceinline__ void pd_decode(
        CT* sm, const float* q, i64 qB, i64 qH, const CT* kc, const CT* vc, const int* tables, int maxBlocks,
        const int* lens, int blockSize, float* out, i64 oB, i64 oH, int Hq, int Hkv, int D, int Dv, int window,
        float scale, const float* sinks, int splits, int splitLen, float* partAcc, float* partMl) {
    constexpr int PAD = PdCache<CT>::PAD;
    int warps = blockDim.x >> 5;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int stage = PD_TK * (D + PAD + Dv + PAD); // values of CT
    float* qsh = (float*) (sm + 2 * stage);   // [warps * HW][D]
    float* psh = qsh + warps * HW * D;        // [warps * HW][PD_TK]

    auto [b, kvh, split, G, ks, ke] = pd_split(lens, Hq, Hkv, window, splits, splitLen);
    int tiles = ke >= ks ? (ke - ks) / PD_TK + 1 : 0;
    const int* table = tables + (i64) b * maxBlocks;
    i64 kRow = (i64) Hkv * D;
    i64 vRow = (i64) Hkv * Dv;
    const CT* kb = kc + (i64) kvh * D;
    const CT* vb = vc + (i64) kvh * Dv;

    if (tiles > 0) pd_load_tile(sm, sm + PD_TK * (D + PAD), kb, vb, table, blockSize, kRow, vRow, D, Dv, ks, ke, warp, warps, lane);
    cp_async_commit();
#pragma unroll
    for (int i = 0; i < HW; i++) { // each warp stages the q rows of its own heads
        int hl = warp * HW + i;
        const float* qr = q + (i64) b * qB + (i64) (kvh * G + (hl < G ? hl : G - 1)) * qH;
        for (int c = lane; c < D; c += 32) qsh[hl * D + c] = qr[c];
    }

    float m[HW], l[HW], acc[HW][4];
#pragma unroll
    for (int i = 0; i < HW; i++) {
        int hl = warp * HW + i;
        int h = kvh * G + (hl < G ? hl : G - 1);
        bool sink = sinks != 0 && split == 0;
        m[i] = sink ? sinks[h] : -ORBIT_INF;
        l[i] = sink ? 1.0f : 0.0f;
#pragma unroll
        for (int c = 0; c < 4; c++) acc[i][c] = 0.0f;
    }
    const float* qw = qsh + warp * HW * D;
    float* pw = psh + warp * HW * PD_TK;

    for (int t = 0; t < tiles; t++) {
        int tile = ks + t * PD_TK;
        if (t + 1 < tiles) {
            CT* next = sm + ((t + 1) & 1) * stage;
            pd_load_tile(next, next + PD_TK * (D + PAD), kb, vb, table, blockSize, kRow, vRow, D, Dv, tile + PD_TK, ke, warp,
                         warps, lane);
        }
        cp_async_commit();
        cp_async_wait<1>(); // this tile's copies (all but the newest group) have landed
        __syncthreads();
        const CT* ksh = sm + (t & 1) * stage;      // [PD_TK][D + PAD]
        const CT* vsh = ksh + PD_TK * (D + PAD);   // [PD_TK][Dv + PAD]

        float s[HW];
#pragma unroll
        for (int i = 0; i < HW; i++) s[i] = 0.0f;
        pd_scores<HW>(ksh + lane * (D + PAD), qw, D, s);
        bool vis = tile + lane <= ke;
#pragma unroll
        for (int i = 0; i < HW; i++) {
            float si = vis ? s[i] * scale : -ORBIT_INF;
            float mn = fmaxf(m[i], warp_max(si));
            float corr = mn == -ORBIT_INF ? 1.0f : expf(m[i] - mn);
            float p = vis ? expf(si - mn) : 0.0f;
            l[i] = l[i] * corr + warp_sum(p);
#pragma unroll
            for (int c = 0; c < 4; c++) acc[i][c] *= corr;
            m[i] = mn;
            pw[i * PD_TK + lane] = p;
        }
        __syncwarp();
        if (4 * lane < Dv) {
            const CT* vc4 = vsh + 4 * lane;
#pragma unroll 2
            for (int j = 0; j < PD_TK; j += 4) {
                float4 pp[HW];
#pragma unroll
                for (int i = 0; i < HW; i++) pp[i] = *(const float4*) (pw + i * PD_TK + j);
                float4 v0 = pd_ld4(vc4 + (j + 0) * (Dv + PAD));
                float4 v1 = pd_ld4(vc4 + (j + 1) * (Dv + PAD));
                float4 v2 = pd_ld4(vc4 + (j + 2) * (Dv + PAD));
                float4 v3 = pd_ld4(vc4 + (j + 3) * (Dv + PAD));
#pragma unroll
                for (int i = 0; i < HW; i++) {
                    acc[i][0] = fmaf(pp[i].w, v3.x, fmaf(pp[i].z, v2.x, fmaf(pp[i].y, v1.x, fmaf(pp[i].x, v0.x, acc[i][0]))));
                    acc[i][1] = fmaf(pp[i].w, v3.y, fmaf(pp[i].z, v2.y, fmaf(pp[i].y, v1.y, fmaf(pp[i].x, v0.y, acc[i][1]))));
                    acc[i][2] = fmaf(pp[i].w, v3.z, fmaf(pp[i].z, v2.z, fmaf(pp[i].y, v1.z, fmaf(pp[i].x, v0.z, acc[i][2]))));
                    acc[i][3] = fmaf(pp[i].w, v3.w, fmaf(pp[i].z, v2.w, fmaf(pp[i].y, v1.w, fmaf(pp[i].x, v0.w, acc[i][3]))));
                }
            }
        }
        __syncthreads(); // this stage (and the probabilities) consumed before the next pass refills them
    }

#pragma unroll
    for (int i = 0; i < HW; i++) {
        int hl = warp * HW + i;
        if (hl >= G) continue;
        int h = kvh * G + hl;
        if (splits == 1) {
            float inv = 1.0f / l[i];
            float* orow = out + (i64) b * oB + (i64) h * oH;
            if (4 * lane < Dv) {
#pragma unroll
                for (int c = 0; c < 4; c++) orow[4 * lane + c] = acc[i][c] * inv;
            }
        } else {
            i64 part = ((i64) b * Hq + h) * splits + split;
            if (4 * lane < Dv) {
#pragma unroll
                for (int c = 0; c < 4; c++) partAcc[part * Dv + 4 * lane + c] = acc[i][c];
            }
            if (lane == 0) {
                partMl[2 * part] = m[i];
                partMl[2 * part + 1] = l[i];
            }
        }
    }
}

// Four query heads per warp: blocks of ceil(G / 4) <= 2 warps.
extern "C" __global__ void __launch_bounds__(64) paged_decode_tiled_f32(PAGED_DECODE_ARGS(float)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float sm[];
    pd_decode<4, float>(sm, PAGED_DECODE_PASS);
}

// Two query heads per warp (the default): blocks of ceil(G / 2) <= 4 warps, each tile read from shared memory by
// twice the warps.
extern "C" __global__ void __launch_bounds__(128) paged_decode_tiled_h2_f32(PAGED_DECODE_ARGS(float)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float sm[];
    pd_decode<2, float>(sm, PAGED_DECODE_PASS);
}

// The same over a bf16 cache.
extern "C" __global__ void __launch_bounds__(64) paged_decode_tiled_kvbf16(PAGED_DECODE_ARGS(u16)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float sm[];
    pd_decode<4, u16>((u16*) sm, PAGED_DECODE_PASS);
}

extern "C" __global__ void __launch_bounds__(128) paged_decode_tiled_h2_kvbf16(PAGED_DECODE_ARGS(u16)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float sm[];
    pd_decode<2, u16>((u16*) sm, PAGED_DECODE_PASS);
}

// Decode attention over a bf16 cache on tensor cores (paged_decode_mma_d64/_d128_kvbf16): the same grid, arguments
// and outputs as the tiled kernels (partials for attention_combine when splits > 1), D == Dv (the entry point's),
// G = Hq / Hkv <= 16. Each of the block's PM_WARPS warps takes the split's 16-key tiles w, w + PM_WARPS, ... through a
// private ring of ST cp.async stages (key and value rows of the tile; rows past the split's last key filled with zeros:
// ST - 1 tiles in flight while one is multiplied; ST = 2, or 3 for paged_decode_mma3_*), and keeps its own online
// softmax; the block merges its warps at the end.
//   Scores: S = Q . K^T per tile, mma m16n8k16 with the group's query heads as the 16 rows (rows past G are zero),
//   q rounded to bf16 (round to nearest even) once, keys as stored, f32 accumulation, then times the scale in f32.
//   Values: O += P . V with P the tile's probabilities rounded to bf16 (the scores' accumulator layout is the mma's A
//   operand layout), the running sum l of the f32 probabilities. So beyond f32 accumulation the kernel rounds q and P
//   to bf16: it differs from the tiled kernels (exact products of f32 q with the widened cache) by that rounding.
#define PM_WARPS 4
#define PM_TK 16 // keys a warp's tile
#define PM_MAX_CLUSTER 16 // blocks of a cluster whose merge issues all its reads at once

__device__ __forceinline__ void pm_wait_all() {
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

__device__ __forceinline__ unsigned pm_pack(float lo, float hi) {
    return f32x2_to_bf16x2(lo, hi);
}

// The preparation a decode step's attention may take in its own launch (paged_decode_mma_prep_*): q [B, Hq, D] and
// the new token's k, v [B, Hkv, D] as the projections wrote them, each q and k head normed over D (qNorm, kNorm f32 or
// bf16 [D], or null: no norm) and roped at pos[b] over the whole of D (tables [maxPos, D / 2], pairs (c, c + D / 2), or
// (2i, 2i + 1) when interleaved), as qkv_prep_head takes them; k and v rounded to bf16 into the caches at row slots[b]
// (negative: not written).
struct PmPrep {
    const float* k;
    const float* v;
    const void* qNorm;
    const void* kNorm;
    int normBf16;
    float eps;
    const int* pos;
    const float* cosT;
    const float* sinT;
    int interleaved;
    int maxPos;
    const int* slots;
    int* err;
};

__device__ __forceinline__ float pm_norm_weight(const void* w, int bf16, int c) {
    return bf16 ? bf16_to_f32(((const u16*) w)[c]) : ((const float*) w)[c];
}

// rope_f32's pair (x1, x2) at the angle of (cs, sn): x1 * cs - x2 * sn into x1, x2 * cs + x1 * sn into x2.
__device__ __forceinline__ void pm_rotate(float& x1, float& x2, float cs, float sn) {
    float a = x1 * cs - x2 * sn;
    float b = x2 * cs + x1 * sn;
    x1 = a;
    x2 = b;
}

// What the new key's row is made of, lane l's channels l * D / 32 .. + D / 32 - 1 (pm_new_row_load): its raw k and v, the
// key norm's weights, the rope's cos and sin for its channels at the sequence's position (rot: the position is in the
// tables) and the cache slot. Loaded by the warp whose tile holds the new key as the kernel starts, so that these round
// trips overlap the tiles' copies rather than follow them.
template <int D>
struct PmNewRow {
    float x[D / 32], v[D / 32], w[D / 32], cs[D / 32], sn[D / 32];
    bool rot;
    int slot;
};

// The norm weight at c as its bits (a bf16's in the low half), made a value by pm_norm_bits_value: a load whose value
// is not used where it is loaded, so that the loads after it go out before its round trip ends.
__device__ __forceinline__ float pm_norm_bits(const void* w, int bf16, int c) {
    return bf16 ? __uint_as_float((u32) ((const u16*) w)[c]) : ((const float*) w)[c];
}

__device__ __forceinline__ float pm_norm_bits_value(float bits, int bf16) {
    return bf16 ? __uint_as_float(__float_as_uint(bits) << 16) : bits; // bf16_to_f32's expression
}

// RAW: the key norm's weights kept as their bits (pm_norm_bits; pm_new_row<D, true> makes them values) and the position
// given (p, read before), so that nothing here waits for a load.
template <int D, bool RAW = false>
__device__ __forceinline__ void pm_new_row_load(PmNewRow<D>& nr, const PmPrep& prep, int b, int kvh, int Hkv, int lane,
                                                int pGiven = 0) {
    constexpr int DL = D / 32;
    int c0 = lane * DL;
    const float* kr = prep.k + ((i64) b * Hkv + kvh) * D + c0;
    const float* vr = prep.v + ((i64) b * Hkv + kvh) * D + c0;
#pragma unroll
    for (int j = 0; j < DL; j++) {
        nr.x[j] = kr[j];
        nr.v[j] = vr[j];
        nr.w[j] = prep.kNorm == nullptr ? 0.0f
                : RAW ? pm_norm_bits(prep.kNorm, prep.normBf16, c0 + j) : pm_norm_weight(prep.kNorm, prep.normBf16, c0 + j);
    }
    nr.slot = prep.slots[b];
    int p = RAW ? pGiven : prep.pos[b];
    nr.rot = p >= 0 && p < prep.maxPos;
    if (nr.rot) {
        const float* cr = prep.cosT + (i64) p * (D / 2);
        const float* sr = prep.sinT + (i64) p * (D / 2);
#pragma unroll
        for (int j = 0; j < DL; j++) {
            int jj = prep.interleaved ? (c0 + (j & ~1)) >> 1 : (lane & 15) * DL + j;
            nr.cs[j] = cr[jj];
            nr.sn[j] = sr[jj];
        }
    }
}

// The new key's row of its tile (krow, vrow: the key and value rows in the warp's stage), made by the warp from what
// pm_new_row_load loaded as qkv_prep_head makes it, and written to the caches at the sequence's slot as well.
template <int D, bool RAW = false>
__device__ __forceinline__ void pm_new_row(u16* krow, u16* vrow, const PmNewRow<D>& nr, const PmPrep& prep, int kvh, int Hkv,
                                           const u16* kc, const u16* vc, int lane) {
    constexpr int DL = D / 32;
    int c0 = lane * DL;
    float x[DL];
#pragma unroll
    for (int j = 0; j < DL; j++) x[j] = nr.x[j];
    if (prep.kNorm != nullptr) {
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < DL; j++) ss += x[j] * x[j];
        ss = warp_sum(ss);
        float inv = 1.0f / sqrtf(ss / (float) D + prep.eps);
#pragma unroll
        for (int j = 0; j < DL; j++) x[j] = (RAW ? pm_norm_bits_value(nr.w[j], prep.normBf16) : nr.w[j]) * (x[j] * inv);
    }
    if (nr.rot) {
        if (prep.interleaved) {
#pragma unroll
            for (int j = 0; j < DL; j += 2) pm_rotate(x[j], x[j + 1], nr.cs[j], nr.sn[j]);
        } else { // channel c < D / 2 pairs with c + D / 2, lane l's with lane l + 16's
            bool low = lane < 16;
#pragma unroll
            for (int j = 0; j < DL; j++) {
                float other = __shfl_xor_sync(0xffffffffu, x[j], 16);
                float x1 = low ? x[j] : other;
                float x2 = low ? other : x[j];
                pm_rotate(x1, x2, nr.cs[j], nr.sn[j]);
                x[j] = low ? x1 : x2;
            }
        }
    }
    int slot = nr.slot;
    u16* kd = slot >= 0 ? (u16*) kc + ((i64) slot * Hkv + kvh) * D + c0 : nullptr;
    u16* vd = slot >= 0 ? (u16*) vc + ((i64) slot * Hkv + kvh) * D + c0 : nullptr;
#pragma unroll
    for (int j = 0; j < DL; j++) {
        u16 kb = f32_to_bf16_bits(x[j]);
        u16 vb = f32_to_bf16_bits(nr.v[j]);
        krow[c0 + j] = kb;
        vrow[c0 + j] = vb;
        if (kd != nullptr) {
            kd[j] = kb;
            vd[j] = vb;
        }
    }
}

// PREP: the step's preparation folded in (PmPrep), the blocks of a (sequence, kv head) dealing its key tiles out in turn;
// DSM: those blocks one cluster that merges its partials through distributed shared memory (else, with tickets, the last
// block to finish merges them from global memory as the merged kernels do). G8: the group is at most 8 query heads, so the
// mma's rows g + 8 are padding: q's rows there are zeros made without code (no loads, norm or rope), and their scores,
// probabilities and partials are neither made nor stored (the rows a group has come out bit for bit as without it).
// LF (with PREP and QFIRST): the loads issued by rounds (below), the same values. SP (with LF): the length read after
// round one's other loads, the pages of the warp's first tiles read in that round as though its keys start at 0 (they
// do but in a sliding window past its length), no loaded value used before the length's (the norm weights kept as bits,
// pm_norm_bits), and the first copies issued before round two, so that they follow one round trip.
template <int D, int ST, bool PREP = false, bool DSM = PREP, bool QFIRST = false, bool G8 = false, bool LF = false,
          bool SP = false>
__device__ __forceinline__ void pm_decode(u16* sm, const float* q, i64 qB, i64 qH, const u16* kc, const u16* vc, const int* tables,
                                          int maxBlocks, const int* lens, int blockSize, float* out, i64 oB, i64 oH, int Hq, int Hkv,
                                          int window, float scale, const float* sinks, int splits, int splitLen, float* partAcc,
                                          float* partMl, int* tickets = nullptr, const PmPrep* prep = nullptr,
                                          int trigger = 0) {
    constexpr int ROW = D + 8;              // a staged row, bf16: 16 bytes of padding (conflict-free ldmatrix)
    constexpr int TILE = PM_TK * ROW;       // one tile of keys or values
    constexpr int STAGE = 2 * TILE;         // keys, then values
    constexpr int KS = D / 16;              // k-steps of the scores, and pairs of value n-tiles
    constexpr int NT = D / 8;               // value n-tiles of the output
    constexpr int CH = D / 16;              // 16-byte copies a lane makes of a row half
    constexpr int HR = G8 ? 1 : 2;          // the row halves (rows g, g + 8) that may hold a query head
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int g = lane >> 2;
    int t = lane & 3;
    static_assert(!SP || (LF && PREP), "the pages read first with the loads by rounds");

    // SP: the length is read in round one (below), after the loads that do not need it
    PdSplit sp = SP ? pd_index(Hq, Hkv, splits) : pd_split(lens, Hq, Hkv, window, splits, splitLen);
    int split = sp.split;
    int kvh = sp.kvh;
    int b = sp.b;
    int G = sp.G;
    int ks = sp.ks;
    int ke = sp.ke;
    // the warp's tiles of the split: first, first + stride, ...; with PREP the `splits` blocks of a (sequence, kv head)
    // deal the tiles of all its keys out in turn (block `split`'s warp w takes tiles split * PM_WARPS + w, + PM_WARPS *
    // splits, ...), so that every block has keys whatever the context's length
    int first = warp;
    int stride = PM_WARPS;
    if (PREP) {
        if (!SP) {
            int kp = lens[b] - 1;
            ks = window > 0 && kp - window + 1 > 0 ? kp - window + 1 : 0;
            ke = kp;
        }
        first = split * PM_WARPS + warp;
        stride = PM_WARPS * splits;
    }
    int tiles = ke >= ks && !SP ? (ke - ks) / PM_TK + 1 : 0; // SP: set once the length is read
    const int* table = tables + (i64) b * maxBlocks;
    const u16* kb = kc + (i64) kvh * D;
    const u16* vb = vc + (i64) kvh * D;
    i64 rowStride = (i64) Hkv * D;

    u16* wsm = sm + warp * ST * STAGE; // this warp's ring of stages
    unsigned wbase = smem_addr(wsm);
    // this lane's copies: key row lane / 2 of the tile, half lane % 2 of it
    int cr = lane >> 1;
    int ch = (lane & 1) * (D / 2);
    // the page of this lane's key in the warp's tile-th tile of the split (0 past ke): read one tile ahead of its copies,
    // so that the table's round trip overlaps a tile's products instead of preceding every tile's copies
    auto page = [&](int tile) {
        int key = ks + tile * PM_TK + cr;
        return key <= ke ? table[key / blockSize] : 0;
    };
    auto load = [&](int tile, int slot, int pg) { // the warp's tile-th tile of the split (its page pg) into stage slot
        int key = ks + tile * PM_TK + cr;
        bool valid = key <= ke;
        i64 row = valid ? (i64) pg * blockSize + key % blockSize : 0;
        const u16* kr = kb + row * rowStride + ch;
        const u16* vr = vb + row * rowStride + ch;
        unsigned kd = wbase + (unsigned) ((slot * STAGE + cr * ROW + ch) * 2);
#pragma unroll
        for (int c = 0; c < CH; c++) {
            cp_async16_zfill(kd + 16 * c, kr + 8 * c, valid);
            cp_async16_zfill(kd + (unsigned) (TILE * 2) + 16 * c, vr + 8 * c, valid);
        }
    };
    // q as the A operand: rows g and g + 8 are query heads kvh * G + row (zero past G), k-step kk's columns 16 kk + 2t,
    // + 1 (a0, a1) and + 8, + 9 (a2, a3)
    unsigned qa[KS][4];
    if (G8) {
#pragma unroll
        for (int kk = 0; kk < KS; kk++) qa[kk][1] = qa[kk][3] = 0u; // rows g + 8: padding
    }
    // made here (QFIRST: before the first tiles' copies are issued, so that q's round trips overlap the block tables' and
    // the copies'; else after them; LF: in three parts around the copies, below), the same expressions every way
    // the lanes of row r = g + 8h hold its columns 16 kk + 2t + (0, 1, 8, 9) (y[h][kk][0..3]), between the four of
    // them all D: the norm's sum of squares over two shuffles; a pair of the rope is within one lane (c and c + D / 2
    // are k-steps kk and kk + KS / 2; 2i and 2i + 1 adjacent)
    float y[2][KS][4];
    float nwv[KS][4];
    float cs[KS][4], sn[KS][4]; // the rope's factors as each column's pm_rotate takes them
    int p = 0;
    bool rot = false;
    // every load first (both rows' q, the norm's weights and the position), so that their round trips overlap rather
    // than follow one another row by row (4 µs of the attention's 12 in the kernel timeline)
    auto qLoads = [&]() {
        p = prep->pos[b];
#pragma unroll
        for (int h = 0; h < HR; h++) {
            int r = g + 8 * h;
            const float* qr = q + (i64) b * qB + (i64) (kvh * G + (r < G ? r : 0)) * qH;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                float2 x0 = r < G ? *(const float2*) (qr + 16 * kk + 2 * t) : make_float2(0.0f, 0.0f);
                float2 x1 = r < G ? *(const float2*) (qr + 16 * kk + 2 * t + 8) : make_float2(0.0f, 0.0f);
                y[h][kk][0] = x0.x;
                y[h][kk][1] = x0.y;
                y[h][kk][2] = x1.x;
                y[h][kk][3] = x1.y;
            }
        }
        if (prep->qNorm != nullptr) {
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int c = 16 * kk + 2 * t + (e & 1) + 8 * (e >> 1);
                    nwv[kk][e] = SP ? pm_norm_bits(prep->qNorm, prep->normBf16, c) : pm_norm_weight(prep->qNorm, prep->normBf16, c);
                }
        }
    };
    // the rope's row for the lane's columns, which both rows share (a round trip after the position's)
    auto qRopeLoads = [&]() {
        rot = p >= 0 && p < prep->maxPos;
        if (!rot && split == 0 && kvh == 0 && threadIdx.x == 0) report_error(prep->err, ERR_POSITION_OUT_OF_RANGE, p, b);
        if (rot) {
            const float* cr = prep->cosT + (i64) p * (D / 2);
            const float* sr = prep->sinT + (i64) p * (D / 2);
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int jj = prep->interleaved ? (16 * kk + 2 * t + 8 * (e >> 1)) >> 1 : 16 * (kk % (KS / 2)) + 2 * t + (e & 1) + 8 * (e >> 1);
                    bool used = prep->interleaved ? (e & 1) == 0 : kk < KS / 2;
                    cs[kk][e] = used ? cr[jj] : 0.0f;
                    sn[kk][e] = used ? sr[jj] : 0.0f;
                }
        }
    };
    // then the same expressions as before, row by row
    auto qMake = [&]() {
#pragma unroll
        for (int h = 0; h < HR; h++) {
            float ss = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                ss += y[h][kk][0] * y[h][kk][0] + y[h][kk][1] * y[h][kk][1] + y[h][kk][2] * y[h][kk][2] + y[h][kk][3] * y[h][kk][3];
            }
            if (prep->qNorm != nullptr) {
                ss += __shfl_xor_sync(0xffffffffu, ss, 1);
                ss += __shfl_xor_sync(0xffffffffu, ss, 2);
                float inv = 1.0f / sqrtf(ss / (float) D + prep->eps);
#pragma unroll
                for (int kk = 0; kk < KS; kk++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float w = SP ? pm_norm_bits_value(nwv[kk][e], prep->normBf16) : nwv[kk][e];
                        y[h][kk][e] = w * (y[h][kk][e] * inv);
                    }
            }
            if (rot) {
                if (prep->interleaved) {
#pragma unroll
                    for (int kk = 0; kk < KS; kk++)
#pragma unroll
                        for (int e = 0; e < 4; e += 2) pm_rotate(y[h][kk][e], y[h][kk][e + 1], cs[kk][e], sn[kk][e]);
                } else {
#pragma unroll
                    for (int kk = 0; kk < KS / 2; kk++)
#pragma unroll
                        for (int e = 0; e < 4; e++) pm_rotate(y[h][kk][e], y[h][kk + KS / 2][e], cs[kk][e], sn[kk][e]);
                }
            }
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                qa[kk][h] = pm_pack(y[h][kk][0], y[h][kk][1]);
                qa[kk][2 + h] = pm_pack(y[h][kk][2], y[h][kk][3]);
            }
        }
    };
    auto makeQ = [&]() {
        if (PREP) {
            qLoads();
            qRopeLoads();
            qMake();
        } else {
#pragma unroll
            for (int h = 0; h < HR; h++) {
                int r = g + 8 * h;
                const float* qr = q + (i64) b * qB + (i64) (kvh * G + (r < G ? r : 0)) * qH;
#pragma unroll
                for (int kk = 0; kk < KS; kk++) {
                    float2 x0 = r < G ? *(const float2*) (qr + 16 * kk + 2 * t) : make_float2(0.0f, 0.0f);
                    float2 x1 = r < G ? *(const float2*) (qr + 16 * kk + 2 * t + 8) : make_float2(0.0f, 0.0f);
                    qa[kk][h] = pm_pack(x0.x, x0.y);
                    qa[kk][2 + h] = pm_pack(x1.x, x1.y);
                }
            }
        }
    };
    int mine = 0;
    int nextPage = 0;
    int newTile = ke >= ks && !SP ? (ke - ks) / PM_TK : -1; // the new key's tile (with PREP; SP: set below)
    bool holdsNew = false;
    PmNewRow<D> nr;
    if (LF) {
        if (trigger <= 0) pdl_trigger(); // the dependents may start now (trigger: 0), after the first copies (1) or the tiles (2)
        // A warp issues its loads in order and stalls at the first use of one that has not come, so that each chain of
        // loads (the length, then the block table, then the copies; the position, then the rope's row) costs its round
        // trips one after another. Here the loads of each round go out together: q, the norm's weights, the position and
        // the length; then the tables' pages and the rope's row; then the copies, while q is made. SP: the pages of the
        // warp's first ST tiles at keys from 0, then q's loads, then the length, all in round one; where the keys do
        // start at 0 those are the pages `page` reads (a page past the length is never used: its copies are zero
        // fills), so the copies go out as the round returns.
        int sp0[ST]; // SP: the pages of the warp's first tiles at keys from 0 (0 past the table)
        if (SP) {
            int cap = maxBlocks * blockSize;
#pragma unroll
            for (int i = 0; i < ST; i++) {
                int key = (first + i * stride) * PM_TK + cr;
                sp0[i] = key < cap ? table[key / blockSize] : 0;
            }
        }
        qLoads();
        bool fromZero = false;
        if (SP) {
            int kp = lens[b] - 1; // round one's last load
            ks = window > 0 && kp - window + 1 > 0 ? kp - window + 1 : 0;
            ke = kp;
            tiles = ke >= ks ? (ke - ks) / PM_TK + 1 : 0;
            newTile = ke >= ks ? (ke - ks) / PM_TK : -1;
            fromZero = ks == 0;
        }
        mine = tiles > first ? (tiles - first + stride - 1) / stride : 0;
        int pg[ST - 1];
#pragma unroll
        for (int i = 0; i < ST - 1; i++) pg[i] = i < mine ? fromZero ? sp0[i] : page(first + i * stride) : 0;
        nextPage = ST - 1 < mine ? fromZero ? sp0[ST - 1] : page(first + (ST - 1) * stride) : 0;
        if (!SP) { // SP: round two after the copies
            qRopeLoads();
            holdsNew = newTile >= first && (newTile - first) % stride == 0;
            if (holdsNew) pm_new_row_load<D>(nr, *prep, b, kvh, Hkv, lane);
        }
#pragma unroll
        for (int i = 0; i < ST - 1; i++) {
            if (i < mine) load(first + i * stride, i, pg[i]);
            cp_async_commit();
        }
        if (SP) { // the rope's row and the new key's inputs (its position the one q's round read)
            qRopeLoads();
            holdsNew = newTile >= first && (newTile - first) % stride == 0;
            if (holdsNew) pm_new_row_load<D, true>(nr, *prep, b, kvh, Hkv, lane, p);
        }
        ORBIT_TRACE_MARK(0); // the first tiles' copies issued
        if (trigger == 1) pdl_trigger();
        qMake();
    } else {
        if (QFIRST) makeQ();
        mine = tiles > first ? (tiles - first + stride - 1) / stride : 0; // this warp's tiles
#pragma unroll
        for (int i = 0; i < ST - 1; i++) {
            if (i < mine) load(first + i * stride, i, page(first + i * stride));
            cp_async_commit();
        }
        nextPage = ST - 1 < mine ? page(first + (ST - 1) * stride) : 0; // the page of the next tile to copy
        // the warp that takes the new key's tile loads the row's inputs now
        holdsNew = PREP && newTile >= first && (newTile - first) % stride == 0;
        if (holdsNew) pm_new_row_load<D>(nr, *prep, b, kvh, Hkv, lane);
        ORBIT_TRACE_MARK(0); // the first tiles' copies issued
        if (!QFIRST) makeQ();
    }
    ORBIT_TRACE_MARK(1); // q ready
    // running max and this lane's share of the sum for rows g (0) and g + 8 (1); the sink joins split 0 once (warp 0)
    float m[2], l[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        int r = g + 8 * h;
        bool sink = sinks != 0 && split == 0 && warp == 0 && r < G;
        m[h] = sink ? sinks[kvh * G + r] : -ORBIT_INF;
        l[h] = sink && t == 0 ? 1.0f : 0.0f;
    }
    float o[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int c = 0; c < 4; c++) o[j][c] = 0.0f;

    // ldmatrix lane addresses (bytes from a tile's start): scores take matrices (keys 0-7 | 8-15) x (cols +0 | +8),
    // values (keys 0-7 | 8-15) x (cols +0 | +8) transposed
    int mi = lane >> 3;
    unsigned kAddr = (unsigned) ((((mi >> 1) * 8 + (lane & 7)) * ROW + (mi & 1) * 8) * 2);
    unsigned vAddr = (unsigned) ((((mi & 1) * 8 + (lane & 7)) * ROW + (mi >> 1) * 8) * 2);
    for (int i = 0; i < mine; i++) {
        if (i + ST - 1 < mine) load(first + (i + ST - 1) * stride, (i + ST - 1) % ST, nextPage); // the stage of tile i - 1
        cp_async_commit();
        if (i + ST < mine) nextPage = page(first + (i + ST) * stride); // lands while tile i is multiplied
        cp_async_wait<ST - 1>(); // tile i has landed (this lane's copies)
        __syncwarp();
        if (holdsNew && first + i * stride == newTile) {
            // the tile of the new key: its row made here from the projections (what the cache had there was copied and
            // is overwritten) and written to the caches
            pm_new_row<D, SP>(wsm + (i % ST) * STAGE + ((ke - ks) % PM_TK) * ROW,
                              wsm + (i % ST) * STAGE + TILE + ((ke - ks) % PM_TK) * ROW, nr, *prep, kvh, Hkv, kc, vc, lane);
            __syncwarp();
        }
        unsigned kt = wbase + (unsigned) ((i % ST) * STAGE * 2);
        unsigned vt = kt + (unsigned) (TILE * 2);
        float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            unsigned kf[4];
            ldsm_x4(kt + kAddr + (unsigned) (kk * 32), kf);
            mma_bf16_16816(s[0], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], kf[0], kf[1]);
            mma_bf16_16816(s[1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], kf[2], kf[3]);
        }
        int key0 = ks + (first + i * stride) * PM_TK; // key of column 0
        unsigned pa[4];
        if (G8) pa[1] = pa[3] = 0u; // rows g + 8: padding
#pragma unroll
        for (int h = 0; h < HR; h++) { // rows g, g + 8: values c = 2h, 2h + 1 of both n-tiles
            float mx = -ORBIT_INF;
#pragma unroll
            for (int n = 0; n < 2; n++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    bool vis = key0 + 8 * n + 2 * t + c <= ke;
                    s[n][2 * h + c] = vis ? s[n][2 * h + c] * scale : -ORBIT_INF;
                    mx = fmaxf(mx, s[n][2 * h + c]);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mn = fmaxf(m[h], mx);
            float corr = mn == -ORBIT_INF ? 1.0f : expf(m[h] - mn);
            float sum = 0.0f;
#pragma unroll
            for (int n = 0; n < 2; n++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    float p = mn == -ORBIT_INF ? 0.0f : expf(s[n][2 * h + c] - mn);
                    s[n][2 * h + c] = p;
                    sum += p;
                }
            l[h] = l[h] * corr + sum;
            m[h] = mn;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                o[j][2 * h] *= corr;
                o[j][2 * h + 1] *= corr;
            }
            pa[h] = pm_pack(s[0][2 * h], s[0][2 * h + 1]);     // keys 2t, 2t + 1
            pa[2 + h] = pm_pack(s[1][2 * h], s[1][2 * h + 1]); // keys 2t + 8, 2t + 9
        }
#pragma unroll
        for (int dp = 0; dp < KS; dp++) {
            unsigned vf[4];
            ldsm_x4_trans(vt + vAddr + (unsigned) (dp * 32), vf);
            mma_bf16_16816(o[2 * dp], pa[0], pa[1], pa[2], pa[3], vf[0], vf[1]);
            mma_bf16_16816(o[2 * dp + 1], pa[0], pa[1], pa[2], pa[3], vf[2], vf[3]);
        }
        __syncwarp(); // every lane is done with this stage before it is refilled
    }
    ORBIT_TRACE_MARK(2); // the warp's tiles multiplied
    if (LF && trigger >= 2) pdl_trigger();
    pm_wait_all();
    __syncthreads(); // every warp is done with its stages: they take the merge

    // the merge: warp w's max and sum [PM_WARPS][16], and its accumulator [PM_WARPS][16][D] f32
    float* ml = (float*) sm;
    float* acc = ml + 2 * PM_WARPS * 16;
#pragma unroll
    for (int h = 0; h < HR; h++) {
        float lt = l[h];
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        int r = g + 8 * h;
        if (t == 0) {
            ml[(warp * 16 + r) * 2] = m[h];
            ml[(warp * 16 + r) * 2 + 1] = lt;
        }
#pragma unroll
        for (int j = 0; j < NT; j++) {
            *(float2*) (acc + (warp * 16 + r) * D + 8 * j + 2 * t) = make_float2(o[j][2 * h], o[j][2 * h + 1]);
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
        int r = idx / D;
        int d = idx - r * D;
        float mx = -ORBIT_INF;
#pragma unroll
        for (int w = 0; w < PM_WARPS; w++) mx = fmaxf(mx, ml[(w * 16 + r) * 2]);
        float sum = 0.0f;
        float v = 0.0f;
        if (mx != -ORBIT_INF) {
#pragma unroll
            for (int w = 0; w < PM_WARPS; w++) {
                float f = expf(ml[(w * 16 + r) * 2] - mx);
                sum += ml[(w * 16 + r) * 2 + 1] * f;
                v += acc[(w * 16 + r) * D + d] * f;
            }
        }
        int h = kvh * G + r;
        if (splits == 1) {
            out[(i64) b * oB + (i64) h * oH + d] = v / sum;
        } else if (DSM) { // the block's partial, in its shared memory past the warps' (res [G][D], then resMl [G][2])
            float* res = acc + PM_WARPS * 16 * D;
            res[r * D + d] = v;
            if (d == 0) {
                res[G * D + 2 * r] = mx;
                res[G * D + 2 * r + 1] = sum;
            }
        } else {
            i64 part = ((i64) b * Hq + h) * splits + split;
            partAcc[part * D + d] = v;
            if (d == 0) {
                partMl[2 * part] = mx;
                partMl[2 * part + 1] = sum;
            }
        }
    }
    ORBIT_TRACE_MARK(3); // the block's warps merged
    if (DSM && splits > 1) {
        // The cluster's partials merged as attention_combine merges splits (the same expressions, in rank order), block
        // `split` taking its share of the G * D outputs from every block's shared memory; no block leaves while another
        // may still read its partial.
        cluster_sync();
        ORBIT_TRACE_MARK(4); // the cluster's partials ready
        u32 res = smem_addr(acc + PM_WARPS * 16 * D);
        int share = (G * D + splits - 1) / splits;
        int end = min(G * D, (split + 1) * share);
        for (int idx = split * share + threadIdx.x; idx < end; idx += blockDim.x) {
            int r = idx / D;
            int d = idx - r * D;
            float mx = -ORBIT_INF;
            float sum = 0.0f;
            float o = 0.0f;
            if (splits <= PM_MAX_CLUSTER) {
                // every block's values issued at once (one round trip of distributed shared memory, not one a block),
                // then the same expressions in rank order
                float ms[PM_MAX_CLUSTER], ls[PM_MAX_CLUSTER], os[PM_MAX_CLUSTER];
#pragma unroll
                for (int s = 0; s < PM_MAX_CLUSTER; s++) {
                    if (s < splits) {
                        u32 a = cluster_addr(res, s);
                        ms[s] = ld_cluster_f32(a + 4 * (G * D + 2 * r));
                        ls[s] = ld_cluster_f32(a + 4 * (G * D + 2 * r + 1));
                        os[s] = ld_cluster_f32(a + 4 * (r * D + d));
                    }
                }
#pragma unroll
                for (int s = 0; s < PM_MAX_CLUSTER; s++)
                    if (s < splits) mx = fmaxf(mx, ms[s]);
#pragma unroll
                for (int s = 0; s < PM_MAX_CLUSTER; s++) {
                    if (s < splits) {
                        float e = expf(ms[s] - mx);
                        sum += ls[s] * e;
                        o += os[s] * e;
                    }
                }
            } else {
                for (int s = 0; s < splits; s++) mx = fmaxf(mx, ld_cluster_f32(cluster_addr(res + 4 * (G * D + 2 * r), s)));
                for (int s = 0; s < splits; s++) {
                    u32 a = cluster_addr(res, s);
                    float e = expf(ld_cluster_f32(a + 4 * (G * D + 2 * r)) - mx);
                    sum += ld_cluster_f32(a + 4 * (G * D + 2 * r + 1)) * e;
                    o += ld_cluster_f32(a + 4 * (r * D + d)) * e;
                }
            }
            float inv = 1.0f / sum;
            out[(i64) b * oB + (i64) (kvh * G + r) * oH + d] = o * inv;
        }
        ORBIT_TRACE_MARK(5); // the block's share merged
        cluster_sync();
        return;
    }
    if (splits == 1 || tickets == nullptr) return;
    // The splits merged by the block of (b, kvh) that writes its partials last (a ticket counted per (b, kvh), re-armed
    // to 0 by that block): attention_combine's values (the same products and sums in its order), its launch left out.
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(tickets + (i64) b * Hkv + kvh, 1) == splits - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    // each head's split weights e^(m_s - M) and 1 / sum_s l_s e^(m_s - M) once, in the stages' shared memory (G * (splits +
    // 1) floats: the launcher merges here only where they fit), then four channels of out a thread at a time from 16-byte
    // reads of the partials; reads past L1 (__ldcg): the other splits' blocks wrote them. Up to PM_MAX_CLUSTER splits
    // every split's values are issued at once (one round trip, not one for each few splits), then the same expressions
    // in split order.
    float* wsh = (float*) sm; // [G][splits]
    float* ish = wsh + G * splits;
    if ((int) threadIdx.x < G) {
        int r = threadIdx.x;
        i64 base = ((i64) b * Hq + kvh * G + r) * splits;
        float mx = -ORBIT_INF;
        float sum = 0.0f;
        if (splits <= PM_MAX_CLUSTER) {
            float2 ml2[PM_MAX_CLUSTER]; // (max, sum) of each split
#pragma unroll
            for (int s = 0; s < PM_MAX_CLUSTER; s++)
                if (s < splits) ml2[s] = __ldcg((const float2*) (partMl + 2 * (base + s)));
#pragma unroll
            for (int s = 0; s < PM_MAX_CLUSTER; s++)
                if (s < splits) mx = fmaxf(mx, ml2[s].x);
#pragma unroll
            for (int s = 0; s < PM_MAX_CLUSTER; s++) {
                if (s < splits) {
                    float w = expf(ml2[s].x - mx);
                    wsh[r * splits + s] = w;
                    sum += ml2[s].y * w;
                }
            }
        } else {
            for (int s = 0; s < splits; s++) mx = fmaxf(mx, __ldcg(partMl + 2 * (base + s)));
            for (int s = 0; s < splits; s++) {
                float w = expf(__ldcg(partMl + 2 * (base + s)) - mx);
                wsh[r * splits + s] = w;
                sum += __ldcg(partMl + 2 * (base + s) + 1) * w;
            }
        }
        ish[r] = 1.0f / sum;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * (D / 4); idx += blockDim.x) {
        int r = idx / (D / 4);
        int d4 = idx - r * (D / 4);
        int h = kvh * G + r;
        i64 base = ((i64) b * Hq + h) * splits;
        float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        auto add = [&](float4 a, int s) {
            float w = wsh[r * splits + s];
            o.x += a.x * w;
            o.y += a.y * w;
            o.z += a.z * w;
            o.w += a.w * w;
        };
        if (splits <= PM_MAX_CLUSTER) {
            float4 a[PM_MAX_CLUSTER];
#pragma unroll
            for (int s = 0; s < PM_MAX_CLUSTER; s++)
                if (s < splits) a[s] = __ldcg((const float4*) (partAcc + (base + s) * D) + d4);
#pragma unroll
            for (int s = 0; s < PM_MAX_CLUSTER; s++)
                if (s < splits) add(a[s], s);
        } else {
            for (int s = 0; s < splits; s++) add(__ldcg((const float4*) (partAcc + (base + s) * D) + d4), s);
        }
        float inv = ish[r];
        float* orow = out + (i64) b * oB + (i64) h * oH + 4 * d4;
        orow[0] = o.x * inv;
        orow[1] = o.y * inv;
        orow[2] = o.z * inv;
        orow[3] = o.w * inv;
    }
    if (threadIdx.x == 0) tickets[(i64) b * Hkv + kvh] = 0;
}

#define PM_KERNEL(NAME, D, ST)                                                                                         \
    extern "C" __global__ void __launch_bounds__(32 * PM_WARPS) NAME(PAGED_DECODE_ARGS(u16)) {                         \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        extern __shared__ __align__(16) u16 NAME##_sm[];                                                               \
        pm_decode<D, ST>(NAME##_sm, q, qB, qH, kc, vc, tables, maxBlocks, lens, blockSize, out, oB, oH, Hq, Hkv,       \
                         window, scale, sinks, splits, splitLen, partAcc, partMl);                                     \
    }

PM_KERNEL(paged_decode_mma_d128_kvbf16, 128, 2)
PM_KERNEL(paged_decode_mma_d64_kvbf16, 64, 2)
PM_KERNEL(paged_decode_mma3_d128_kvbf16, 128, 3)
PM_KERNEL(paged_decode_mma3_d64_kvbf16, 64, 3)

// The prepared kernels' parameters past PAGED_DECODE_ARGS, and their body past the wait (PM_PREP_KERNEL, PM_PREP_LF_KERNEL)
#define PM_PREP_ARGS                                                                                                         \
    const float *pk, const float *pv, const void *qNorm, const void *kNorm, int normBf16, float eps, const int *pos,         \
            const float *cosT, const float *sinT, int interleaved, int maxPos, const int *slots, int *err, int *tickets,     \
            int trigger
#define PM_PREP_BODY(NAME, D, ST, DSM, QF, G8, LF, SP)                                                                     \
    extern __shared__ __align__(16) u16 NAME##_sm[];                                                                       \
    PmPrep prep{pk, pv, qNorm, kNorm, normBf16, eps, pos, cosT, sinT, G8 ? 0 : interleaved, maxPos, slots, err};           \
    pm_decode<D, ST, true, DSM, QF, G8, LF, SP>(NAME##_sm, q, qB, qH, kc, vc, tables, maxBlocks, lens, blockSize, out, oB, oH, \
                                            Hq, Hkv, window, scale, sinks, splits, splitLen, partAcc, partMl, tickets,     \
                                            &prep, trigger)

// The same kernels with the step's q/k/v preparation folded in (PmPrep; qkv_prep3's launch left out): q holds the
// projection's raw q, pk and pv its raw k and v [B, Hkv, D]; the `splits` blocks of a (sequence, kv head) deal its key
// tiles out in turn, so that attention_combine's launch is left out too. The new key's row is made by the warp whose tile
// holds it and written to the caches there. splitLen is unused. DSM: those blocks are one cluster (the launch's cluster
// dimension, up to 16) merging their partials through each other's shared memory; partAcc, partMl and tickets unused.
// G8: see pm_decode; the rope in halves. `trigger`: see PM_PREP_LF_KERNEL (unused here: the trigger comes with the wait).
#define PM_PREP_KERNEL(NAME, D, ST, DSM, QF, G8)                                                             \
    extern "C" __global__ void __launch_bounds__(32 * PM_WARPS) NAME(PAGED_DECODE_ARGS(u16), PM_PREP_ARGS) { \
        ORBIT_TRACE_KERNEL();                                                                                \
        pdl_enter();                                                                                         \
        PM_PREP_BODY(NAME, D, ST, DSM, QF, G8, false, false);                                                \
    }

PM_PREP_KERNEL(paged_decode_mma_prep_d128_kvbf16, 128, 2, true, false, false)
PM_PREP_KERNEL(paged_decode_mma_prep_d64_kvbf16, 64, 2, true, false, false)
PM_PREP_KERNEL(paged_decode_mma3_prep_d128_kvbf16, 128, 3, true, false, false)
PM_PREP_KERNEL(paged_decode_mma3_prep_d64_kvbf16, 64, 3, true, false, false)
// The cluster form with q made before the first tiles' copies are issued (the default; -Dorbit.cuda.prepQFirst=off for the
// kernels above): the same bits.
PM_PREP_KERNEL(paged_decode_mma_prep_qf_d128_kvbf16, 128, 2, true, true, false)
PM_PREP_KERNEL(paged_decode_mma_prep_qf_d64_kvbf16, 64, 2, true, true, false)
// The q-first cluster form for groups of at most 8 query heads with the rope in halves (c, c + D / 2), as Qwen3's and
// gpt-oss's are (G8: the mma's padding rows made and kept without code; `interleaved` ignored, taken as 0): 18% less
// code for the same bits (the default there; -Dorbit.cuda.prepGroup8=off for the kernels above).
PM_PREP_KERNEL(paged_decode_mma_prep_qf8_d128_kvbf16, 128, 2, true, true, true)
PM_PREP_KERNEL(paged_decode_mma_prep_qf8_d64_kvbf16, 64, 2, true, true, true)
// The q-first cluster forms with each round of loads issued together (LF, -Dorbit.cuda.prepLoadsFirst=on): q's, the
// norm's, the position's and the length's; then the block tables' and the rope's row; then the first copies, with q
// made after them. The same bits. They wait without the trigger (pdl_enter_late) and let the launch after them
// start at `trigger`: 0 at once, 1 once a block's first copies are issued, 2 once its tiles are multiplied.
#define PM_PREP_LF_KERNEL(NAME, D, G8, SP)                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * PM_WARPS) NAME(PAGED_DECODE_ARGS(u16), PM_PREP_ARGS) { \
        ORBIT_TRACE_KERNEL();                                                                                \
        pdl_enter_late();                                                                                    \
        PM_PREP_BODY(NAME, D, 2, true, true, G8, true, SP);                                                  \
    }

PM_PREP_LF_KERNEL(paged_decode_mma_prep_qfl_d128_kvbf16, 128, false, false)
PM_PREP_LF_KERNEL(paged_decode_mma_prep_qfl_d64_kvbf16, 64, false, false)
PM_PREP_LF_KERNEL(paged_decode_mma_prep_qf8l_d128_kvbf16, 128, true, false)
PM_PREP_LF_KERNEL(paged_decode_mma_prep_qf8l_d64_kvbf16, 64, true, false)
// The group-8 loads-first forms with the pages read first (SP, -Dorbit.cuda.prepPagesFirst=on): the length read after
// round one's other loads, the first tiles' pages in that round, the norm weights kept as bits until q is made, and the
// first copies issued before round two (the rope's row, the new key's inputs), so that the copies follow one round trip
// where the SASS of the forms above has them follow three. The same bits.
PM_PREP_LF_KERNEL(paged_decode_mma_prep_qf8p_d128_kvbf16, 128, true, true)
PM_PREP_LF_KERNEL(paged_decode_mma_prep_qf8p_d64_kvbf16, 64, true, true)

// The same kernels merging their key splits themselves (tickets: i32 [B * Hkv] of zeros, left zero): the block of a
// (sequence, kv head) that writes its split's partials last merges them into out as attention_combine does, whose
// launch is then left out. With one split they are the kernels above.
#define PM_KERNEL_MERGED(NAME, D, ST)                                                                                  \
    extern "C" __global__ void __launch_bounds__(32 * PM_WARPS) NAME(PAGED_DECODE_ARGS(u16), int* tickets) {           \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        extern __shared__ __align__(16) u16 NAME##_sm[];                                                               \
        pm_decode<D, ST>(NAME##_sm, q, qB, qH, kc, vc, tables, maxBlocks, lens, blockSize, out, oB, oH, Hq, Hkv,       \
                         window, scale, sinks, splits, splitLen, partAcc, partMl, tickets);                            \
    }

PM_KERNEL_MERGED(paged_decode_mma_merged_d128_kvbf16, 128, 2)
PM_KERNEL_MERGED(paged_decode_mma_merged_d64_kvbf16, 64, 2)
PM_KERNEL_MERGED(paged_decode_mma3_merged_d128_kvbf16, 128, 3)
PM_KERNEL_MERGED(paged_decode_mma3_merged_d64_kvbf16, 64, 3)
