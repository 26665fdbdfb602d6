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

__device__ __forceinline__ unsigned pd_smem_addr(const void* p) {
    unsigned r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

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
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(pd_smem_addr(dst)), "l"(src) : "memory");
}

__device__ __forceinline__ void pd_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

__device__ __forceinline__ void pd_wait_one() {
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
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

    int split = blockIdx.x % splits;
    int bk = blockIdx.x / splits;
    int kvh = bk % Hkv;
    int b = bk / Hkv;
    int G = Hq / Hkv;
    int pos = lens[b] - 1;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    int ks = split * splitLen;
    int ke = ks + splitLen - 1 < pos ? ks + splitLen - 1 : pos; // last key of this split
    if (ks < lo) ks = lo;
    int tiles = ke >= ks ? (ke - ks) / PD_TK + 1 : 0;
    const int* table = tables + (i64) b * maxBlocks;
    i64 kRow = (i64) Hkv * D;
    i64 vRow = (i64) Hkv * Dv;
    const CT* kb = kc + (i64) kvh * D;
    const CT* vb = vc + (i64) kvh * Dv;

    if (tiles > 0) pd_load_tile(sm, sm + PD_TK * (D + PAD), kb, vb, table, blockSize, kRow, vRow, D, Dv, ks, ke, warp, warps, lane);
    pd_commit();
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
        pd_commit();
        pd_wait_one(); // this tile's copies (all but the newest group) have landed
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
    pdl_enter();
    extern __shared__ __align__(16) float sm[];
    pd_decode<4, float>(sm, PAGED_DECODE_PASS);
}

// Two query heads per warp (the default): blocks of ceil(G / 2) <= 4 warps, each tile read from shared memory by
// twice the warps.
extern "C" __global__ void __launch_bounds__(128) paged_decode_tiled_h2_f32(PAGED_DECODE_ARGS(float)) {
    pdl_enter();
    extern __shared__ __align__(16) float sm[];
    pd_decode<2, float>(sm, PAGED_DECODE_PASS);
}

// The same over a bf16 cache.
extern "C" __global__ void __launch_bounds__(64) paged_decode_tiled_kvbf16(PAGED_DECODE_ARGS(u16)) {
    pdl_enter();
    extern __shared__ __align__(16) float sm[];
    pd_decode<4, u16>((u16*) sm, PAGED_DECODE_PASS);
}

extern "C" __global__ void __launch_bounds__(128) paged_decode_tiled_h2_kvbf16(PAGED_DECODE_ARGS(u16)) {
    pdl_enter();
    extern __shared__ __align__(16) float sm[];
    pd_decode<2, u16>((u16*) sm, PAGED_DECODE_PASS);
}
