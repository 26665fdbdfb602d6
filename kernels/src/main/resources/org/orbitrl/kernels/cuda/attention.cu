// Causal attention for one sequence. One block of ATT_WARPS warps per (query t, head h).
// q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], out [T, Hq, Dv]; strides in elements for the two
// leading dimensions, the last dimension contiguous. Query t is at position queryStart + t; key s
// is visible when s <= queryStart + t and, with window > 0, queryStart + t - s < window.
// sinks: null or f32 [Hq], a logit joining every softmax denominator with no value.
//
// The visible keys are cut into tiles of 32; warp w takes tiles w, w + ATT_WARPS, ... In a tile each
// lane scores one key (q from shared memory), the warp updates its online softmax once per tile,
// then accumulates p·v with lanes over the value channels (lane, lane + 32, ...). The warps' partial
// (max, sum, accumulator) are merged through shared memory at the end.
// D and Dv up to ATT_MAXD. vec4: k rows may be read as float4 (D % 4 == 0, 16-byte aligned rows).

#define ATT_WARPS 4
#define ATT_MAXC 20
#define ATT_MAXD (32 * ATT_MAXC)

extern "C" __global__ void attention_f32(const float* q, i64 qT, i64 qH,
                                         const float* k, i64 kS, i64 kH,
                                         const float* v, i64 vS, i64 vH,
                                         float* out, i64 oT, i64 oH,
                                         int T, int Hq, int Hkv, int D, int Dv,
                                         int queryStart, int window, float scale, const float* sinks, int vec4) {
    __shared__ float qsh[ATT_MAXD];
    __shared__ float accsh[ATT_WARPS][ATT_MAXD];
    __shared__ float msh[ATT_WARPS];
    __shared__ float lsh[ATT_WARPS];
    int t = blockIdx.x / Hq;
    int h = blockIdx.x % Hq;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int kvh = h / (Hq / Hkv);
    int pos = queryStart + t;
    int lo = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;

    const float* qr = q + (i64) t * qT + (i64) h * qH;
    for (int c = threadIdx.x; c < D; c += blockDim.x) qsh[c] = qr[c];
    __syncthreads();

    float acc[ATT_MAXC];
#pragma unroll
    for (int i = 0; i < ATT_MAXC; i++) acc[i] = 0.0f;
    float m = sinks != 0 && warp == 0 ? sinks[h] : -ORBIT_INF;
    float l = sinks != 0 && warp == 0 ? 1.0f : 0.0f;

    const float* kb = k + (i64) kvh * kH;
    const float* vb = v + (i64) kvh * vH;
    for (int tile = lo + 32 * warp; tile <= pos; tile += 32 * ATT_WARPS) {
        int j = tile + lane;
        float s = -ORBIT_INF;
        if (j <= pos) {
            const float* kr = kb + (i64) j * kS;
            float d = 0.0f;
            if (vec4) {
                const float4* k4 = (const float4*) kr;
                for (int c = 0; c < D / 4; c++) {
                    float4 kv = k4[c];
                    d += qsh[4 * c] * kv.x + qsh[4 * c + 1] * kv.y + qsh[4 * c + 2] * kv.z + qsh[4 * c + 3] * kv.w;
                }
            } else {
                for (int c = 0; c < D; c++) d += qsh[c] * kr[c];
            }
            s = d * scale;
        }
        float mn = fmaxf(m, warp_max(s));
        float corr = expf(m - mn);
        float p = j <= pos ? expf(s - mn) : 0.0f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < ATT_MAXC; i++) acc[i] *= corr;
        int valid = pos - tile + 1 < 32 ? pos - tile + 1 : 32;
        for (int jj = 0; jj < valid; jj++) {
            float pj = __shfl_sync(0xffffffffu, p, jj);
            const float* vr = vb + (i64) (tile + jj) * vS;
#pragma unroll
            for (int i = 0; i < ATT_MAXC; i++) {
                int c = lane + 32 * i;
                if (c < Dv) acc[i] += pj * vr[c];
            }
        }
        m = mn;
    }

    if (lane == 0) {
        msh[warp] = m;
        lsh[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_MAXC; i++) {
        int c = lane + 32 * i;
        if (c < Dv) accsh[warp][c] = acc[i];
    }
    __syncthreads();
    float mx = msh[0];
    for (int w = 1; w < ATT_WARPS; w++) mx = fmaxf(mx, msh[w]);
    float wsum = 0.0f;
    float f[ATT_WARPS];
    for (int w = 0; w < ATT_WARPS; w++) {
        f[w] = expf(msh[w] - mx);
        wsum += lsh[w] * f[w];
    }
    float inv = 1.0f / wsum;
    float* orow = out + (i64) t * oT + (i64) h * oH;
    for (int c = threadIdx.x; c < Dv; c += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) o += accsh[w][c] * f[w];
        orow[c] = o * inv;
    }
}
