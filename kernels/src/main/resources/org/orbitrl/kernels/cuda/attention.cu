// Causal attention for one sequence. q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], out [T, Hq, Dv];
// strides in elements for the two leading dimensions, the last dimension contiguous. Query t is at
// position queryStart + t; key s is visible when s <= queryStart + t and, with window > 0,
// queryStart + t - s < window. sinks: null or f32 [Hq], a logit joining every softmax denominator
// with no value. D and Dv up to ATT_MAXD.
//
// attention_f32: one block per (query t, kv head, key split). Its warps take the G = Hq/Hkv query
// heads that share the kv head (warp w: heads w, w + warps, ...), so the G heads read each key and
// value row from L2 once and from L1 after that. The split's keys are cut into tiles of 32: each
// lane scores one key (q from shared memory), the warp updates its online softmax once per tile,
// then accumulates p*v with lanes over the value channels (lane, lane + 32, ...).
// With one split the block writes the normalised output; with several (decode: few queries, long
// context) each writes a partial (max, sum, unnormalised accumulator) that attention_combine merges.
// vec4: key rows may be read as float4 (D % 4 == 0, 16-byte aligned rows).
// Paged (tables != null, exact-mode decode): query t is the one new token of sequence t, at position
// lens[t] - 1; key s of that sequence is row tables[t, s / blockSize] * blockSize + s % blockSize of k
// and v. The arithmetic is the same code as for contiguous keys, so a decoded token's attention
// equals the same query's in a prefill bit for bit.

#define ATT_MAXC 20
#define ATT_MAXD (32 * ATT_MAXC)

extern "C" __global__ void attention_f32(const float* q, i64 qT, i64 qH,
                                         const float* k, i64 kS, i64 kH,
                                         const float* v, i64 vS, i64 vH,
                                         float* out, i64 oT, i64 oH,
                                         int T, int Hq, int Hkv, int D, int Dv,
                                         int queryStart, int window, float scale, const float* sinks, int vec4,
                                         int splits, int splitLen, float* partAcc, float* partMl,
                                         const int* tables, const int* lens, int maxBlocks, int blockSize) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float qsh[]; // [warps, D]
    int split = blockIdx.x % splits;
    int tk = blockIdx.x / splits;
    int kvh = tk % Hkv;
    int t = tk / Hkv;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int warps = blockDim.x >> 5;
    int G = Hq / Hkv;
    int pos = tables != 0 ? lens[t] - 1 : queryStart + t;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    int ks = split * splitLen;
    int ke = ks + splitLen - 1 < pos ? ks + splitLen - 1 : pos; // last key of this split
    if (ks < lo) ks = lo;

    const float* kb = k + (i64) kvh * kH;
    const float* vb = v + (i64) kvh * vH;
    float* qw = qsh + warp * D;
    for (int hl = warp; hl < G; hl += warps) {
        int h = kvh * G + hl;
        const float* qr = q + (i64) t * qT + (i64) h * qH;
        for (int c = lane; c < D; c += 32) qw[c] = qr[c];
        __syncwarp();

        float acc[ATT_MAXC];
#pragma unroll
        for (int i = 0; i < ATT_MAXC; i++) acc[i] = 0.0f;
        bool sink = sinks != 0 && split == 0;
        float m = sink ? sinks[h] : -ORBIT_INF;
        float l = sink ? 1.0f : 0.0f;

        for (int tile = ks; tile <= ke; tile += 32) {
            int j = tile + lane;
            float s = -ORBIT_INF;
            if (j <= ke) {
                const float* kr = kb + paged_row(tables, t, maxBlocks, blockSize, j) * kS;
                float d = 0.0f;
                if (vec4) {
                    const float4* k4 = (const float4*) kr;
                    float d1 = 0.0f;
                    int c = 0;
#pragma unroll 4
                    for (; c + 1 < D / 4; c += 2) { // two independent chains, loads issued ahead
                        float4 ka = k4[c];
                        float4 kb2 = k4[c + 1];
                        d += qw[4 * c] * ka.x + qw[4 * c + 1] * ka.y + qw[4 * c + 2] * ka.z + qw[4 * c + 3] * ka.w;
                        d1 += qw[4 * c + 4] * kb2.x + qw[4 * c + 5] * kb2.y + qw[4 * c + 6] * kb2.z + qw[4 * c + 7] * kb2.w;
                    }
                    if (c < D / 4) {
                        float4 ka = k4[c];
                        d += qw[4 * c] * ka.x + qw[4 * c + 1] * ka.y + qw[4 * c + 2] * ka.z + qw[4 * c + 3] * ka.w;
                    }
                    d += d1;
                } else {
                    for (int c = 0; c < D; c++) d += qw[c] * kr[c];
                }
                s = d * scale;
            }
            float mn = fmaxf(m, warp_max(s));
            float corr = expf(m - mn);
            float p = j <= ke ? expf(s - mn) : 0.0f;
            l = l * corr + warp_sum(p);
#pragma unroll
            for (int i = 0; i < ATT_MAXC; i++) acc[i] *= corr;
            int valid = ke - tile + 1 < 32 ? ke - tile + 1 : 32;
            for (int jj = 0; jj < valid; jj++) {
                float pj = __shfl_sync(0xffffffffu, p, jj);
                const float* vr = vb + paged_row(tables, t, maxBlocks, blockSize, tile + jj) * vS;
#pragma unroll
                for (int i = 0; i < ATT_MAXC; i++) {
                    int c = lane + 32 * i;
                    if (c < Dv) acc[i] += pj * vr[c];
                }
            }
            m = mn;
        }

        if (splits == 1) {
            float inv = 1.0f / l;
            float* orow = out + (i64) t * oT + (i64) h * oH;
#pragma unroll
            for (int i = 0; i < ATT_MAXC; i++) {
                int c = lane + 32 * i;
                if (c < Dv) orow[c] = acc[i] * inv;
            }
        } else {
            i64 part = ((i64) t * Hq + h) * splits + split;
#pragma unroll
            for (int i = 0; i < ATT_MAXC; i++) {
                int c = lane + 32 * i;
                if (c < Dv) partAcc[part * Dv + c] = acc[i];
            }
            if (lane == 0) {
                partMl[2 * part] = m;
                partMl[2 * part + 1] = l;
            }
        }
        __syncwarp();
    }
}

// Merges the splits of each (query, head): out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
// A split that saw no key has m = -inf, l = 0 and weighs nothing. One block per (t, h).
extern "C" __global__ void attention_combine(const float* partAcc, const float* partMl, float* out, i64 oT, i64 oH,
                                             int Hq, int Dv, int splits) {
    ORBIT_TRACE_KERNEL();
    pdl_enter_early(); // its dependent (a decode step's o product) may start streaming its weights meanwhile
    int t = blockIdx.x / Hq;
    int h = blockIdx.x % Hq;
    i64 base = ((i64) t * Hq + h) * splits;
    float mx = -ORBIT_INF;
    for (int s = 0; s < splits; s++) mx = fmaxf(mx, partMl[2 * (base + s)]);
    float sum = 0.0f;
    for (int s = 0; s < splits; s++) sum += partMl[2 * (base + s) + 1] * expf(partMl[2 * (base + s)] - mx);
    float inv = 1.0f / sum;
    float* orow = out + (i64) t * oT + (i64) h * oH;
    for (int c = threadIdx.x; c < Dv; c += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < splits; s++) o += partAcc[(base + s) * Dv + c] * expf(partMl[2 * (base + s)] - mx);
        orow[c] = o * inv;
    }
}
