// Tiled attention kernels: causal prefill over contiguous q/k/v, and decode over a paged KV cache.
// Semantics as attention.cu: query t is at position queryStart + t (prefill) or len - 1 (decode);
// key s is visible when s <= pos and, with window > 0, pos - s < window; sinks null or f32 [Hq], a
// logit joining every softmax denominator with no value. Online softmax in f32 (running max m,
// running sum l, accumulator rescaled when the max grows).
//
// Shared-memory rows are padded by 4 floats so that lane j reading row j with 16-byte loads hits
// distinct banks (rows D + 4 floats apart).

#define FA_TK 32      // keys per tile
#define FA_QW 4       // queries per warp (prefill)
#define FA_WARPS 4    // warps per block (prefill)
#define FA_MAXC 4     // value channels per lane: Dv <= 128
#define FA_MAXD 128

// 4 consecutive values from global memory as f32: f32 (16-byte aligned) or bf16 (8-byte aligned, widened exactly).
__device__ __forceinline__ float4 fa_ld4(const float* p) {
    return *(const float4*) p;
}

__device__ __forceinline__ float4 fa_ld4(const u16* p) {
    return bf16x4_to_f32(*(const uint2*) p);
}

// Cooperative load of up to FA_TK rows of width W (a multiple of 4) into sh [FA_TK][W + 4] f32;
// rowPtr(j) gives row j's address (f32 or bf16 values) or 0 when j is past the tile (filled with zeros).
template <typename RowPtr>
__device__ __forceinline__ void fa_load_tile(float* sh, int W, RowPtr rowPtr) {
    int per = W / 4;
    for (int idx = threadIdx.x; idx < FA_TK * per; idx += blockDim.x) {
        int j = idx / per;
        int c = (idx % per) * 4;
        auto src = rowPtr(j);
        float4 v;
        if (src != 0) {
            v = fa_ld4(src + c);
        } else {
            v.x = 0.0f;
            v.y = 0.0f;
            v.z = 0.0f;
            v.w = 0.0f;
        }
        *(float4*) (sh + j * (W + 4) + c) = v;
    }
}

// Causal prefill: grid (ceil(T / (FA_WARPS * FA_QW)), Hq), block FA_WARPS * 32. Each warp takes
// FA_QW consecutive queries of head h; the block's key/value tiles are shared by its 16 queries.
// D, Dv <= 128 and multiples of 4; rows 16-byte aligned.
extern "C" __global__ void __launch_bounds__(FA_WARPS * 32) flash_prefill_f32(
        const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH, const float* v, i64 vS, i64 vH,
        float* out, i64 oT, i64 oH, int T, int Hq, int Hkv, int D, int Dv, int queryStart, int window, float scale,
        const float* sinks) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float sm[];
    float* qsh = sm;                                   // [FA_WARPS * FA_QW][D]
    float* ksh = qsh + FA_WARPS * FA_QW * D;           // [FA_TK][D + 4]
    float* vsh = ksh + FA_TK * (D + 4);                // [FA_TK][Dv + 4]
    int h = blockIdx.y;
    int kvh = h / (Hq / Hkv);
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int t0 = blockIdx.x * FA_WARPS * FA_QW;            // first query of the block
    int tw = t0 + warp * FA_QW;                        // first query of the warp

    for (int idx = threadIdx.x; idx < FA_WARPS * FA_QW * D; idx += blockDim.x) {
        int qi = idx / D;
        int c = idx % D;
        int t = t0 + qi < T ? t0 + qi : T - 1;
        qsh[idx] = q[(i64) t * qT + (i64) h * qH + c];
    }

    float m[FA_QW], l[FA_QW], acc[FA_QW][FA_MAXC];
    float sink = sinks != 0 ? sinks[h] : -ORBIT_INF;
#pragma unroll
    for (int i = 0; i < FA_QW; i++) {
        m[i] = sink;
        l[i] = sinks != 0 ? 1.0f : 0.0f;
#pragma unroll
        for (int c = 0; c < FA_MAXC; c++) acc[i][c] = 0.0f;
    }
    int tLast = t0 + FA_WARPS * FA_QW - 1 < T - 1 ? t0 + FA_WARPS * FA_QW - 1 : T - 1;
    int hi = queryStart + tLast;                       // last key any query of the block sees
    int lo = window > 0 ? queryStart + t0 - window + 1 : 0;
    if (lo < 0) lo = 0;
    const float* kb = k + (i64) kvh * kH;
    const float* vb = v + (i64) kvh * vH;

    for (int tile = lo; tile <= hi; tile += FA_TK) {
        __syncthreads(); // previous tile consumed (and q staged, on the first pass)
        fa_load_tile(ksh, D, [&](int j) { return tile + j <= hi ? kb + (i64) (tile + j) * kS : (const float*) 0; });
        fa_load_tile(vsh, Dv, [&](int j) { return tile + j <= hi ? vb + (i64) (tile + j) * vS : (const float*) 0; });
        __syncthreads();
        if (tw >= T) continue;                         // a warp past the last query only helps load

        int key = tile + lane;
        float s[FA_QW];
#pragma unroll
        for (int i = 0; i < FA_QW; i++) s[i] = 0.0f;
        const float* kr = ksh + lane * (D + 4);
        for (int c = 0; c < D; c += 4) {
            float4 kk = *(const float4*) (kr + c);
#pragma unroll
            for (int i = 0; i < FA_QW; i++) {
                float4 qq = *(const float4*) (qsh + (warp * FA_QW + i) * D + c);
                s[i] += qq.x * kk.x + qq.y * kk.y + qq.z * kk.z + qq.w * kk.w;
            }
        }
        float p[FA_QW];
#pragma unroll
        for (int i = 0; i < FA_QW; i++) {
            int pos = queryStart + tw + i;
            bool vis = key <= hi && key <= pos && (window == 0 || pos - key < window) && tw + i < T;
            float si = vis ? s[i] * scale : -ORBIT_INF;
            float mn = fmaxf(m[i], warp_max(si));
            float corr = mn == -ORBIT_INF ? 1.0f : expf(m[i] - mn);
            p[i] = vis ? expf(si - mn) : 0.0f;
            l[i] = l[i] * corr + warp_sum(p[i]);
#pragma unroll
            for (int c = 0; c < FA_MAXC; c++) acc[i][c] *= corr;
            m[i] = mn;
        }
        int valid = hi - tile + 1 < FA_TK ? hi - tile + 1 : FA_TK;
        for (int jj = 0; jj < valid; jj++) {
            const float* vr = vsh + jj * (Dv + 4);
            float vv[FA_MAXC];
#pragma unroll
            for (int c = 0; c < FA_MAXC; c++) vv[c] = lane + 32 * c < Dv ? vr[lane + 32 * c] : 0.0f;
#pragma unroll
            for (int i = 0; i < FA_QW; i++) {
                float pj = __shfl_sync(0xffffffffu, p[i], jj);
#pragma unroll
                for (int c = 0; c < FA_MAXC; c++) acc[i][c] += pj * vv[c];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < FA_QW; i++) {
        int t = tw + i;
        if (t < T) {
            float inv = 1.0f / l[i];
            float* orow = out + (i64) t * oT + (i64) h * oH;
#pragma unroll
            for (int c = 0; c < FA_MAXC; c++) {
                if (lane + 32 * c < Dv) orow[lane + 32 * c] = acc[i][c] * inv;
            }
        }
    }
}

// Decode over the paged cache (the layout of the model's kv.BlockPool): per layer keys
// kc [blocks * blockSize, Hkv * D] and values vc [blocks * blockSize, Hkv * Dv], f32 (paged_decode_f32) or bf16
// (paged_decode_kvbf16, widened to f32 as the tiles are staged); sequence b's
// position s lives in row tables[b * maxBlocks + s / blockSize] * blockSize + s % blockSize.
// q [B, Hq, D] (strides qB, qH): one query per sequence at position lens[b] - 1 (lens[b] >= 1).
// Grid B * Hkv * splits; block 32 * warps; warp w takes the query heads w, w + warps, ... of the
// kv head in rounds (each round re-reads the split's tiles). Splits write partials merged by
// attention_combine (attention.cu), exactly like the contiguous kernel; one split writes out.
template <typename CT>
__device__ __forceinline__ void paged_decode_body(const float* q, i64 qB, i64 qH, const CT* kc, const CT* vc,
                                                  const int* tables, int maxBlocks, const int* lens, int blockSize,
                                                  float* out, i64 oB, i64 oH, int Hq, int Hkv, int D, int Dv, int window,
                                                  float scale, const float* sinks, int splits, int splitLen,
                                                  float* partAcc, float* partMl, float* sm) {
    int warps = blockDim.x >> 5;
    float* qsh = sm;                          // [warps][D]
    float* ksh = qsh + warps * D;             // [FA_TK][D + 4]
    float* vsh = ksh + FA_TK * (D + 4);       // [FA_TK][Dv + 4]
    int split = blockIdx.x % splits;
    int bk = blockIdx.x / splits;
    int kvh = bk % Hkv;
    int b = bk / Hkv;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int G = Hq / Hkv;
    int pos = lens[b] - 1;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    int ks = split * splitLen;
    int ke = ks + splitLen - 1 < pos ? ks + splitLen - 1 : pos;
    if (ks < lo) ks = lo;
    const int* table = tables + (i64) b * maxBlocks;
    i64 kRow = (i64) Hkv * D;
    i64 vRow = (i64) Hkv * Dv;

    for (int h0 = 0; h0 < G; h0 += warps) {
        int hl = h0 + warp;
        int h = kvh * G + (hl < G ? hl : G - 1);
        __syncthreads();
        for (int c = lane; c < D; c += 32) qsh[warp * D + c] = q[(i64) b * qB + (i64) h * qH + c];
        bool sink = sinks != 0 && split == 0;
        float m = sink ? sinks[h] : -ORBIT_INF;
        float l = sink ? 1.0f : 0.0f;
        float acc[FA_MAXC];
#pragma unroll
        for (int c = 0; c < FA_MAXC; c++) acc[c] = 0.0f;

        for (int tile = ks; tile <= ke; tile += FA_TK) {
            __syncthreads();
            fa_load_tile(ksh, D, [&](int j) {
                int s = tile + j;
                return s <= ke ? kc + ((i64) table[s / blockSize] * blockSize + s % blockSize) * kRow + (i64) kvh * D : (const CT*) 0;
            });
            fa_load_tile(vsh, Dv, [&](int j) {
                int s = tile + j;
                return s <= ke ? vc + ((i64) table[s / blockSize] * blockSize + s % blockSize) * vRow + (i64) kvh * Dv : (const CT*) 0;
            });
            __syncthreads();
            int key = tile + lane;
            const float* kr = ksh + lane * (D + 4);
            const float* qw = qsh + warp * D;
            float d = 0.0f;
            for (int c = 0; c < D; c += 4) {
                float4 kk = *(const float4*) (kr + c);
                float4 qq = *(const float4*) (qw + c);
                d += qq.x * kk.x + qq.y * kk.y + qq.z * kk.z + qq.w * kk.w;
            }
            float s = key <= ke ? d * scale : -ORBIT_INF;
            float mn = fmaxf(m, warp_max(s));
            float corr = mn == -ORBIT_INF ? 1.0f : expf(m - mn);
            float p = key <= ke ? expf(s - mn) : 0.0f;
            l = l * corr + warp_sum(p);
#pragma unroll
            for (int c = 0; c < FA_MAXC; c++) acc[c] *= corr;
            m = mn;
            int valid = ke - tile + 1 < FA_TK ? ke - tile + 1 : FA_TK;
            for (int jj = 0; jj < valid; jj++) {
                float pj = __shfl_sync(0xffffffffu, p, jj);
                const float* vr = vsh + jj * (Dv + 4);
#pragma unroll
                for (int c = 0; c < FA_MAXC; c++) {
                    if (lane + 32 * c < Dv) acc[c] += pj * vr[lane + 32 * c];
                }
            }
        }
        if (hl < G) {
            if (splits == 1) {
                float inv = 1.0f / l;
                float* orow = out + (i64) b * oB + (i64) h * oH;
#pragma unroll
                for (int c = 0; c < FA_MAXC; c++) {
                    if (lane + 32 * c < Dv) orow[lane + 32 * c] = acc[c] * inv;
                }
            } else {
                i64 part = ((i64) b * Hq + h) * splits + split;
#pragma unroll
                for (int c = 0; c < FA_MAXC; c++) {
                    if (lane + 32 * c < Dv) partAcc[part * Dv + lane + 32 * c] = acc[c];
                }
                if (lane == 0) {
                    partMl[2 * part] = m;
                    partMl[2 * part + 1] = l;
                }
            }
        }
    }
}

extern "C" __global__ void paged_decode_f32(PAGED_DECODE_ARGS(float)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float sm[];
    paged_decode_body<float>(PAGED_DECODE_PASS, sm);
}

extern "C" __global__ void paged_decode_kvbf16(PAGED_DECODE_ARGS(u16)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float sm[];
    paged_decode_body<u16>(PAGED_DECODE_PASS, sm);
}

// Appends one token per sequence to the paged cache: kc[slots[b]] = k[b], vc[slots[b]] = v[b]
// (k [B, kw], v [B, vw] f32, rows of the caches kw and vw values; vw 0: no values). A negative slot skips the
// sequence. paged_kv_write_kvbf16: bf16 caches, each value rounded to nearest even.
__device__ __forceinline__ void pd_store(float* p, float v) {
    *p = v;
}

__device__ __forceinline__ void pd_store(u16* p, float v) {
    *p = f32_to_bf16_bits(v);
}

template <typename CT>
__device__ __forceinline__ void kv_write_body(const float* k, const float* v, CT* kc, CT* vc, const int* slots, int kw, int vw) {
    int b = blockIdx.x;
    int slot = slots[b];
    if (slot < 0) return;
    for (int c = threadIdx.x; c < kw; c += blockDim.x) pd_store(kc + (i64) slot * kw + c, k[(i64) b * kw + c]);
    for (int c = threadIdx.x; c < vw; c += blockDim.x) pd_store(vc + (i64) slot * vw + c, v[(i64) b * vw + c]);
}

extern "C" __global__ void paged_kv_write(const float* k, const float* v, float* kc, float* vc, const int* slots, int kw,
                                          int vw) {
    ORBIT_TRACE_KERNEL();
    kv_write_body(k, v, kc, vc, slots, kw, vw);
}

extern "C" __global__ void paged_kv_write_kvbf16(const float* k, const float* v, u16* kc, u16* vc, const int* slots, int kw,
                                                int vw) {
    ORBIT_TRACE_KERNEL();
    kv_write_body(k, v, kc, vc, slots, kw, vw);
}

// Decode attention preparation in one launch: per q and k head an optional RMSNorm over D (weights f32 or bf16;
// w * (x / sqrt(mean(x^2) + eps)), as rmsnorm_f32), then rope at pos[b] (tables [maxPos, half], pairs as rope_f32), q
// into qOut [B, Hq, D], k and v into the paged caches at row slots[b] (a negative slot skips the cache write). Block
// (b, head hh < Hq + Hkv): src the head's D values, vsrc (k heads) the matching v head's Dv; dynamic shared D floats.
template <typename CT>
__device__ __forceinline__ void qkv_prep_head(const float* src, const float* vsrc, int Hq, int Hkv, int D, int Dv,
                                              const void* qNorm, const void* kNorm, int normBf16, float eps, const int* pos,
                                              const float* cosT, const float* sinT, int half, int interleaved, int maxPos,
                                              float* qOut, CT* kc, CT* vc, const int* slots, int* err, float* buf,
                                              float* sh) {
    int b = blockIdx.x;
    int hh = blockIdx.y;
    bool isQ = hh < Hq;
    int j = isQ ? hh : hh - Hq;
    const void* w = isQ ? qNorm : kNorm;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float v = src[c];
        buf[c] = v;
        ss += v * v;
    }
    if (w != 0) {
        ss = block_sum(ss, sh);
        float inv = 1.0f / sqrtf(ss / (float) D + eps);
        for (int c = threadIdx.x; c < D; c += blockDim.x) {
            float wi = normBf16 ? bf16_to_f32(((const u16*) w)[c]) : ((const float*) w)[c];
            buf[c] = wi * (buf[c] * inv);
        }
    }
    __syncthreads();
    int p = pos[b];
    bool rot = p >= 0 && p < maxPos;
    if (!rot && hh == 0 && threadIdx.x == 0) report_error(err, ERR_POSITION_OUT_OF_RANGE, p, b);
    int slot = slots[b];
    float* qDst = isQ ? qOut + ((i64) b * Hq + hh) * D : (float*) 0;
    CT* kDst = !isQ && slot >= 0 ? kc + (i64) slot * Hkv * D + (i64) j * D : (CT*) 0;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float out = buf[c];
        if (rot && c < 2 * half) {
            int jj = interleaved ? c >> 1 : (c < half ? c : c - half);
            bool first = interleaved ? (c & 1) == 0 : c < half;
            float x1 = first ? buf[c] : buf[interleaved ? c - 1 : c - half];
            float x2 = first ? buf[interleaved ? c + 1 : c + half] : buf[c];
            float cs = cosT[(i64) p * half + jj];
            float sn = sinT[(i64) p * half + jj];
            out = first ? x1 * cs - x2 * sn : x2 * cs + x1 * sn;
        }
        if (qDst != 0) qDst[c] = out;
        if (kDst != 0) pd_store(kDst + c, out);
    }
    if (!isQ && slot >= 0) {
        CT* vd = vc + (i64) slot * Hkv * Dv + (i64) j * Dv;
        for (int c = threadIdx.x; c < Dv; c += blockDim.x) pd_store(vd + c, vsrc[c]);
    }
}

#define QKV_PREP_ARGS(CT)                                                                                              \
    const void *qNorm, const void *kNorm, int normBf16, float eps, const int *pos, const float *cosT, const float *sinT, \
            int half, int interleaved, int maxPos, float *qOut, CT *kc, CT *vc, const int *slots, int *err
#define QKV_PREP_PASS qNorm, kNorm, normBf16, eps, pos, cosT, sinT, half, interleaved, maxPos, qOut, kc, vc, slots, err

// From the fused projection qkv [B, Hq*D + Hkv*D + Hkv*Dv] (q heads, then k heads, then v heads). Grid (B, Hq + Hkv).
template <typename CT>
__device__ __forceinline__ void qkv_prep_fused(const float* qkv, int Hq, int Hkv, int D, int Dv, QKV_PREP_ARGS(CT)) {
    extern __shared__ float buf[]; // [D]
    __shared__ float sh[32];
    int b = blockIdx.x;
    int hh = blockIdx.y;
    i64 rowW = (i64) (Hq + Hkv) * D + (i64) Hkv * Dv;
    const float* row = qkv + (i64) b * rowW;
    const float* vsrc = hh < Hq ? (const float*) 0 : row + (i64) (Hq + Hkv) * D + (i64) (hh - Hq) * Dv;
    qkv_prep_head<CT>(row + (i64) hh * D, vsrc, Hq, Hkv, D, Dv, QKV_PREP_PASS, buf, sh);
}

// From the three projections' outputs q [B, Hq, D], k [B, Hkv, D], v [B, Hkv, Dv] (contiguous). Grid (B, Hq + Hkv).
template <typename CT>
__device__ __forceinline__ void qkv_prep_apart(const float* q, const float* k, const float* v, int Hq, int Hkv, int D, int Dv,
                                               QKV_PREP_ARGS(CT)) {
    extern __shared__ float buf[]; // [D]
    __shared__ float sh[32];
    int b = blockIdx.x;
    int hh = blockIdx.y;
    const float* src = hh < Hq ? q + ((i64) b * Hq + hh) * D : k + ((i64) b * Hkv + hh - Hq) * D;
    const float* vsrc = hh < Hq ? (const float*) 0 : v + ((i64) b * Hkv + hh - Hq) * Dv;
    qkv_prep_head<CT>(src, vsrc, Hq, Hkv, D, Dv, QKV_PREP_PASS, buf, sh);
}

// The entry points: f32 caches (_f32) and bf16 caches (_kvbf16, k and v rounded to nearest even).
extern "C" __global__ void qkv_prep_f32(const float* qkv, int Hq, int Hkv, int D, int Dv, QKV_PREP_ARGS(float)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    qkv_prep_fused<float>(qkv, Hq, Hkv, D, Dv, QKV_PREP_PASS);
}

extern "C" __global__ void qkv_prep_kvbf16(const float* qkv, int Hq, int Hkv, int D, int Dv, QKV_PREP_ARGS(u16)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    qkv_prep_fused<u16>(qkv, Hq, Hkv, D, Dv, QKV_PREP_PASS);
}

extern "C" __global__ void qkv_prep3_f32(const float* q, const float* k, const float* v, int Hq, int Hkv, int D, int Dv,
                                         QKV_PREP_ARGS(float)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    qkv_prep_apart<float>(q, k, v, Hq, Hkv, D, Dv, QKV_PREP_PASS);
}

extern "C" __global__ void qkv_prep3_kvbf16(const float* q, const float* k, const float* v, int Hq, int Hkv, int D, int Dv,
                                            QKV_PREP_ARGS(u16)) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    qkv_prep_apart<u16>(q, k, v, Hq, Hkv, D, Dv, QKV_PREP_PASS);
}
