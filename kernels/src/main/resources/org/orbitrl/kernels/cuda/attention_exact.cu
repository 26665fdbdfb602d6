// Exact mode's causal attention for head dims up to 128 (multiples of 4), f32 on CUDA cores: a block holds a tile of
// query rows (queries x heads of one kv head's group) in shared memory and walks tiles of 64 keys, as a tiled
// attention does, but every row's arithmetic is fixed by the row alone, so that a decoded token's attention equals
// the same query's in any prefill bit for bit, whatever the launch's shape, tile of rows or thread layout:
//   key tile j holds keys 64j .. 64j+63; a row at position pos with first seen key lo (0, or pos - window + 1)
//   walks the tiles from lo's to pos's, from m = sink (or -inf), l = 1 (or 0), acc = 0;
//   s_k = (q_0 k_0 + q_1 k_1 + ... in ascending c, one fused multiply-add a term) * scale for each key of the tile;
//   m' = max(m, max over the seen keys of s_k); corr = 1 if m' == m, else e^(m - m');
//   p_k = e^(s_k - m') for a seen key (lo <= k <= pos), else 0;
//   l = l corr + ((S_0 + S_1) + (S_2 + S_3)), S_i the sum of p_k over the tile's keys k = i mod 4 in ascending k;
//   acc_c = acc_c corr, then acc_c = p_k v_kc + acc_c (one fused multiply-add) for the tile's keys in ascending k;
//   out_c = acc_c * (1 / l) + 0.
// Unseen keys of a walked tile add p_k v_kc = ±0; keys past the block's last position (and before its first seen
// key) are read as zeros and may be left out of the walk; tiles outside a row's range leave it as it is (corr 1,
// p 0). An added zero changes acc only where acc is zero, and then only the sign of that zero, which the final
// "+ 0" clears; so the launch's rows and key range never reach a row's bits. Every operation is an explicit
// round-to-nearest intrinsic (no contraction left to the compiler), e^x is expf.
//
// q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], out [T, Hq, Dv] (strides in elements for the two leading dimensions,
// the last contiguous); query t at position queryStart + t. Paged (tables != null, a decode step): query t is the
// one new token of sequence t at position lens[t] - 1, and key s of that sequence is row
// tables[t, s / blockSize] * blockSize + s % blockSize of k and v; a block then holds one sequence (qpb = 1).
// Block b: query tile, kv head and head block from b (the last query tiles first: they walk the most keys); its
// rows are qpb queries x hpb heads (row i: query tile * qpb + i / hpb, head hb * hpb + i % hpb of the group).
// vec: k and v rows may be read 16 bytes at a time (how they are read does not change the arithmetic).
// lse: null, or f32 [T, Hq] that receives each row's log-sum-exp m + log(l) (the sink in l), what the tiled attention
// backward reads instead of running the softmax again.

#define AX_KT 64
#define AX_PS (AX_KT + 4)

// Rows [0, 64) of a key tile into shared memory (row stride W + 4): keys outside [kLo, kHi] as zeros. ASYNC: by
// cp.async (16 bytes, zero-filled; vec rows only), waited for by the caller.
template <bool ASYNC>
__device__ __forceinline__ void ax_load_tile(float* dst, const float* src, i64 sS, int W, int key0, int kLo, int kHi,
                                             const int* tables, int t, int maxBlocks, int blockSize, int vec,
                                             int tid, int threads) {
    int n4 = W >> 2;
    for (int e = tid; e < AX_KT * n4; e += threads) {
        int j = e / n4;
        int c = (e - j * n4) << 2;
        int key = key0 + j;
        bool in = key >= kLo && key <= kHi;
        float* d = dst + j * (W + 4) + c;
        if (ASYNC && vec) {
            cp_async16_zfill(smem_addr(d), in ? src + paged_row(tables, t, maxBlocks, blockSize, key) * sS + c : src, in);
            continue;
        }
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (in) {
            const float* r = src + paged_row(tables, t, maxBlocks, blockSize, key) * sS + c;
            if (vec) {
                x = *(const float4*) r;
            } else {
                x = make_float4(r[0], r[1], r[2], r[3]);
            }
        }
        *(float4*) d = x;
    }
}

// ROWS query rows, THREADS threads; the scores as RM rows x KM keys a thread, the outputs as PR rows x two 4-column
// pieces (columns 4g.. and 64 + 4g..) a thread; the softmax by four threads a row. STAGES 2: two key and value
// buffers, the next tile copied (cp.async) while this one is used. STAGES 1 with ASYNC: one buffer, its tile copied by
// cp.async (every copy of the tile in flight at once, then waited for) where a thread's plain loads go one after another.
template <int ROWS, int THREADS, int RM, int KM, int STAGES, bool ASYNC = false>
__device__ __forceinline__ void attention_exact_body(const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH,
                                                     const float* v, i64 vS, i64 vH, float* out, i64 oT, i64 oH,
                                                     int T, int Hq, int Hkv, int D, int Dv, int queryStart, int window,
                                                     float scale, const float* sinks, int vec, int qpb, int hpb,
                                                     const int* tables, const int* lens, int maxBlocks, int blockSize,
                                                     float* lse) {
    constexpr int KG = AX_KT / KM;            // key groups of the scores
    constexpr int RG = ROWS / RM;             // row groups of the scores
    static_assert(KG * RG == THREADS, "scores: one thread a row group and key group");
    constexpr int PG = THREADS / 16;          // row groups of the outputs (16 column groups)
    constexpr int PR = ROWS / PG;
    static_assert(PG * PR == ROWS && 4 * ROWS <= THREADS, "outputs and softmax layout");
    extern __shared__ float4 ax_sm4[];
    float* sm = (float*) ax_sm4;
    const int QS = D + 4;
    const int VS = Dv + 4;
    float* Qs = sm;                          // [ROWS, QS]
    float* Kb = Qs + ROWS * QS;              // [STAGES][64, QS]
    float* Vb = Kb + STAGES * AX_KT * QS;    // [STAGES][64, VS]
    float* Ps = Vb + STAGES * AX_KT * VS;    // [ROWS, AX_PS]: scores, then p
    float* cs = Ps + ROWS * AX_PS;           // [ROWS]: corr of the tile, at the end 1 / l
    int* rpos = (int*) (cs + ROWS);          // [ROWS]: the row's position, -1 for no row
    int* rlo = rpos + ROWS;                  // [ROWS]: its first seen key

    const int tid = threadIdx.x;
    const int G = Hq / Hkv;
    const int nHb = (G + hpb - 1) / hpb;
    const int nQt = (T + qpb - 1) / qpb;
    int b = blockIdx.x;
    const int hb = b % nHb;
    b /= nHb;
    const int kvh = b % Hkv;
    const int qt = nQt - 1 - b / Hkv;

    if (tid < ROWS) {
        int qi = tid / hpb;
        int t = qt * qpb + qi;
        int hl = hb * hpb + tid % hpb;
        int pos = -1;
        int lo = 0;
        if (qi < qpb && t < T && hl < G) {
            pos = tables != 0 ? lens[t] - 1 : queryStart + t;
            lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        }
        rpos[tid] = pos;
        rlo[tid] = lo;
    }
    for (int e = tid; e < ROWS * (D >> 2); e += THREADS) {
        int i = e / (D >> 2);
        int c = (e - i * (D >> 2)) << 2;
        int qi = i / hpb;
        int t = qt * qpb + qi;
        int hl = hb * hpb + i % hpb;
        float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (qi < qpb && t < T && hl < G) {
            const float* r = q + (i64) t * qT + (i64) (kvh * G + hl) * qH + c;
            x = make_float4(r[0], r[1], r[2], r[3]);
        }
        *(float4*) (Qs + i * QS + c) = x;
    }
    __syncthreads();
    int kLo = 0x7fffffff;
    int kHi = -1;
    for (int i = 0; i < ROWS; i++) {
        if (rpos[i] >= 0) {
            kLo = min(kLo, rlo[i]);
            kHi = max(kHi, rpos[i]);
        }
    }
    if (kHi < 0) return;  // no rows (uniform over the block)
    const int seqT = tables != 0 ? qt * qpb : 0;   // the sequence whose table the keys go through
    const float* kb = k + (i64) kvh * kH;
    const float* vb = v + (i64) kvh * vH;

    // the softmax threads' rows and state (four threads a row, each with the same copy)
    const int sr = tid >> 2;
    const int sq = tid & 3;
    const bool softmaxThread = tid < 4 * ROWS;
    const int myPos = softmaxThread ? rpos[sr] : -1;
    const int myLo = softmaxThread ? rlo[sr] : 0;
    float m = -ORBIT_INF;
    float l = 0.0f;
    if (softmaxThread && myPos >= 0 && sinks != 0) {
        m = sinks[kvh * G + hb * hpb + sr % hpb];
        l = 1.0f;
    }

    // the outputs' layout
    const int cg = tid & 15;
    const int pg = tid >> 4;
    float acc[PR][8];
#pragma unroll
    for (int i = 0; i < PR; i++) {
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;
    }
    const int kg = tid % KG;
    const int rg = tid / KG;

    const int first = (kLo / AX_KT) * AX_KT;
    if (STAGES == 2) {
        ax_load_tile<true>(Kb, kb, kS, D, first, kLo, kHi, tables, seqT, maxBlocks, blockSize, vec, tid, THREADS);
        ax_load_tile<true>(Vb, vb, vS, Dv, first, kLo, kHi, tables, seqT, maxBlocks, blockSize, vec, tid, THREADS);
        cp_async_commit();
    }
    for (int key0 = first, it = 0; key0 <= kHi; key0 += AX_KT, it++) {
        const int nk = kHi - key0 + 1 < AX_KT ? kHi - key0 + 1 : AX_KT;   // keys of the tile any row may see
        const float* Ks = Kb + (STAGES == 2 ? (it & 1) * AX_KT * QS : 0);
        const float* Vs = Vb + (STAGES == 2 ? (it & 1) * AX_KT * VS : 0);
        if (STAGES == 2) {   // the next tile into the other buffers (last read in the previous pass, which ended with a barrier)
            if (key0 + AX_KT <= kHi) {
                int o = ((it + 1) & 1);
                ax_load_tile<true>(Kb + o * AX_KT * QS, kb, kS, D, key0 + AX_KT, kLo, kHi, tables, seqT, maxBlocks, blockSize,
                                   vec, tid, THREADS);
                ax_load_tile<true>(Vb + o * AX_KT * VS, vb, vS, Dv, key0 + AX_KT, kLo, kHi, tables, seqT, maxBlocks, blockSize,
                                   vec, tid, THREADS);
            }
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            ax_load_tile<ASYNC>(Kb, kb, kS, D, key0, kLo, kHi, tables, seqT, maxBlocks, blockSize, vec, tid, THREADS);
            ax_load_tile<ASYNC>(Vb, vb, vS, Dv, key0, kLo, kHi, tables, seqT, maxBlocks, blockSize, vec, tid, THREADS);
            if (ASYNC) {
                cp_async_commit();
                cp_async_wait<0>();
            }
        }
        __syncthreads();

        // scores: RM x KM a thread, each one chain of fused multiply-adds in ascending c
        {
            float s[RM][KM];
#pragma unroll
            for (int i = 0; i < RM; i++) {
#pragma unroll
                for (int j = 0; j < KM; j++) s[i][j] = 0.0f;
            }
            for (int c = 0; c < D; c += 4) {
                float4 qa[RM];
                float4 ka[KM];
#pragma unroll
                for (int i = 0; i < RM; i++) qa[i] = *(const float4*) (Qs + (rg + RG * i) * QS + c);
#pragma unroll
                for (int j = 0; j < KM; j++) ka[j] = *(const float4*) (Ks + (kg + KG * j) * QS + c);
#pragma unroll
                for (int i = 0; i < RM; i++) {
#pragma unroll
                    for (int j = 0; j < KM; j++) {
                        float x = s[i][j];
                        x = __fmaf_rn(qa[i].x, ka[j].x, x);
                        x = __fmaf_rn(qa[i].y, ka[j].y, x);
                        x = __fmaf_rn(qa[i].z, ka[j].z, x);
                        x = __fmaf_rn(qa[i].w, ka[j].w, x);
                        s[i][j] = x;
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < RM; i++) {
#pragma unroll
                for (int j = 0; j < KM; j++) Ps[(rg + RG * i) * AX_PS + kg + KG * j] = __fmul_rn(s[i][j], scale);
            }
        }
        __syncthreads();

        // the online softmax: four threads a row, keys sq, sq + 4, ...
        if (softmaxThread) {
            float* pr = Ps + sr * AX_PS;
            float mx = -ORBIT_INF;
#pragma unroll
            for (int i = 0; i < AX_KT / 4; i++) {
                int key = key0 + sq + 4 * i;
                if (key >= myLo && key <= myPos) mx = fmaxf(mx, pr[sq + 4 * i]);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mn = fmaxf(m, mx);
            float corr = mn == m ? 1.0f : expf(__fsub_rn(m, mn));
            float part = 0.0f;
#pragma unroll
            for (int i = 0; i < AX_KT / 4; i++) {
                int key = key0 + sq + 4 * i;
                float p = key >= myLo && key <= myPos ? expf(__fsub_rn(pr[sq + 4 * i], mn)) : 0.0f;
                pr[sq + 4 * i] = p;
                part = __fadd_rn(part, p);
            }
            int base = (threadIdx.x & 31) & ~3;
            float p0 = __shfl_sync(0xffffffffu, part, base);
            float p1 = __shfl_sync(0xffffffffu, part, base + 1);
            float p2 = __shfl_sync(0xffffffffu, part, base + 2);
            float p3 = __shfl_sync(0xffffffffu, part, base + 3);
            l = __fadd_rn(__fmul_rn(l, corr), __fadd_rn(__fadd_rn(p0, p1), __fadd_rn(p2, p3)));
            m = mn;
            if (sq == 0) cs[sr] = corr;
        }
        __syncthreads();

        // acc = acc corr, then p_k v_k for the tile's keys in ascending k
        {
#pragma unroll
            for (int i = 0; i < PR; i++) {
                float corr = cs[pg + PG * i];
#pragma unroll
                for (int j = 0; j < 8; j++) acc[i][j] = __fmul_rn(acc[i][j], corr);
            }
            const bool lowCols = 4 * cg < Dv;
            const bool highCols = 64 + 4 * cg < Dv;
            for (int kk = 0; kk < nk; kk++) {
                float4 va = lowCols ? *(const float4*) (Vs + kk * VS + 4 * cg) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                float4 vc = highCols ? *(const float4*) (Vs + kk * VS + 64 + 4 * cg) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
                for (int i = 0; i < PR; i++) {
                    float p = Ps[(pg + PG * i) * AX_PS + kk];
                    acc[i][0] = __fmaf_rn(p, va.x, acc[i][0]);
                    acc[i][1] = __fmaf_rn(p, va.y, acc[i][1]);
                    acc[i][2] = __fmaf_rn(p, va.z, acc[i][2]);
                    acc[i][3] = __fmaf_rn(p, va.w, acc[i][3]);
                    acc[i][4] = __fmaf_rn(p, vc.x, acc[i][4]);
                    acc[i][5] = __fmaf_rn(p, vc.y, acc[i][5]);
                    acc[i][6] = __fmaf_rn(p, vc.z, acc[i][6]);
                    acc[i][7] = __fmaf_rn(p, vc.w, acc[i][7]);
                }
            }
        }
        __syncthreads();
    }

    if (softmaxThread && sq == 0) {
        cs[sr] = __fdiv_rn(1.0f, l);
        if (lse != 0 && myPos >= 0) {
            lse[(i64) (qt * qpb + sr / hpb) * Hq + kvh * G + hb * hpb + sr % hpb] = m + logf(l);
        }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < PR; i++) {
        int r = pg + PG * i;
        if (rpos[r] < 0) continue;
        int t = qt * qpb + r / hpb;
        int h = kvh * G + hb * hpb + r % hpb;
        float inv = cs[r];
        float* orow = out + (i64) t * oT + (i64) h * oH;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int c = j < 4 ? 4 * cg + j : 64 + 4 * cg + (j - 4);
            if (c < Dv) orow[c] = __fadd_rn(__fmul_rn(acc[i][j], inv), 0.0f);
        }
    }
}

#define ATTENTION_EXACT_ARGS                                                                                           \
    const float *q, i64 qT, i64 qH, const float *k, i64 kS, i64 kH, const float *v, i64 vS, i64 vH, float *out,       \
            i64 oT, i64 oH, int T, int Hq, int Hkv, int D, int Dv, int queryStart, int window, float scale,            \
            const float *sinks, int vec, int qpb, int hpb, const int *tables, const int *lens, int maxBlocks,          \
            int blockSize, float *lse
#define ATTENTION_EXACT_PASS                                                                                           \
    q, qT, qH, k, kS, kH, v, vS, vH, out, oT, oH, T, Hq, Hkv, D, Dv, queryStart, window, scale, sinks, vec, qpb, hpb,  \
            tables, lens, maxBlocks, blockSize, lse

// 64 rows (prefill; _s2 with two key buffers), 8 rows and 16 rows (a decode step: one query's heads of a kv head)
extern "C" __global__ void __launch_bounds__(256) attention_exact_r64(ATTENTION_EXACT_ARGS) {
    ORBIT_TRACE_KERNEL();
    attention_exact_body<64, 256, 4, 4, 1>(ATTENTION_EXACT_PASS);
}
extern "C" __global__ void __launch_bounds__(256) attention_exact_r64_s2(ATTENTION_EXACT_ARGS) {
    ORBIT_TRACE_KERNEL();
    attention_exact_body<64, 256, 4, 4, 2>(ATTENTION_EXACT_PASS);
}
extern "C" __global__ void __launch_bounds__(128) attention_exact_r16(ATTENTION_EXACT_ARGS) {
    ORBIT_TRACE_KERNEL();
    attention_exact_body<16, 128, 2, 4, 1>(ATTENTION_EXACT_PASS);
}
extern "C" __global__ void __launch_bounds__(128) attention_exact_r8(ATTENTION_EXACT_ARGS) {
    ORBIT_TRACE_KERNEL();
    attention_exact_body<8, 128, 1, 4, 1>(ATTENTION_EXACT_PASS);
}
// the same with the tiles copied by cp.async: one buffer (_a), two (_s2)
extern "C" __global__ void __launch_bounds__(128) attention_exact_r16_a(ATTENTION_EXACT_ARGS) {
    ORBIT_TRACE_KERNEL();
    attention_exact_body<16, 128, 2, 4, 1, true>(ATTENTION_EXACT_PASS);
}
extern "C" __global__ void __launch_bounds__(128) attention_exact_r8_a(ATTENTION_EXACT_ARGS) {
    ORBIT_TRACE_KERNEL();
    attention_exact_body<8, 128, 1, 4, 1, true>(ATTENTION_EXACT_PASS);
}
extern "C" __global__ void __launch_bounds__(128) attention_exact_r16_s2(ATTENTION_EXACT_ARGS) {
    ORBIT_TRACE_KERNEL();
    attention_exact_body<16, 128, 2, 4, 2>(ATTENTION_EXACT_PASS);
}
extern "C" __global__ void __launch_bounds__(128) attention_exact_r8_s2(ATTENTION_EXACT_ARGS) {
    ORBIT_TRACE_KERNEL();
    attention_exact_body<8, 128, 1, 4, 2>(ATTENTION_EXACT_PASS);
}
