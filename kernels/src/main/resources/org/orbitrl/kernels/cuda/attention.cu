// Causal attention for one sequence, one warp per (query, head), online softmax over the keys.
// q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], out [T, Hq, Dv]; strides in elements for the two
// leading dimensions, the last dimension contiguous. Query t is at position queryStart + t; key s
// is visible when s <= queryStart + t and, with window > 0, queryStart + t - s < window.
// sinks: null or f32 [Hq], a logit joining every softmax denominator with no value.
// Each lane holds channels lane, lane+32, ...: D and Dv up to 32 * ATT_MAXC.

#define ATT_MAXC 20

extern "C" __global__ void attention_f32(const float* q, i64 qT, i64 qH,
                                         const float* k, i64 kS, i64 kH,
                                         const float* v, i64 vS, i64 vH,
                                         float* out, i64 oT, i64 oH,
                                         int T, int Hq, int Hkv, int D, int Dv,
                                         int queryStart, int window, float scale, const float* sinks) {
    int warp = (int) (((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (warp >= T * Hq) return;
    int t = warp / Hq;
    int h = warp % Hq;
    int kvh = h / (Hq / Hkv);
    int pos = queryStart + t;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;

    const float* qr = q + (i64) t * qT + (i64) h * qH;
    float qv[ATT_MAXC];
    float acc[ATT_MAXC];
#pragma unroll
    for (int i = 0; i < ATT_MAXC; i++) {
        int c = lane + 32 * i;
        qv[i] = c < D ? qr[c] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = sinks != 0 ? sinks[h] : -ORBIT_INF;
    float l = sinks != 0 ? 1.0f : 0.0f;

    const float* kb = k + (i64) kvh * kH;
    const float* vb = v + (i64) kvh * vH;
    for (int j = lo; j <= pos; j++) {
        const float* kr = kb + (i64) j * kS;
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAXC; i++) {
            int c = lane + 32 * i;
            if (c < D) d += qv[i] * kr[c];
        }
        float s = warp_sum(d) * scale;
        float mn = fmaxf(m, s);
        float corr = expf(m - mn);
        float p = expf(s - mn);
        l = l * corr + p;
        const float* vr = vb + (i64) j * vS;
#pragma unroll
        for (int i = 0; i < ATT_MAXC; i++) {
            int c = lane + 32 * i;
            if (c < Dv) acc[i] = acc[i] * corr + p * vr[c];
        }
        m = mn;
    }
    float inv = 1.0f / l;
    float* orow = out + (i64) t * oT + (i64) h * oH;
#pragma unroll
    for (int i = 0; i < ATT_MAXC; i++) {
        int c = lane + 32 * i;
        if (c < Dv) orow[c] = acc[i] * inv;
    }
}
