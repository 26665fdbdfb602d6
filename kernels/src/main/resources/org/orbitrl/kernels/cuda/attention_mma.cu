// Causal attention on tensor cores (FlashAttention-2 structure): prefill forward, and backward in two
// launches (dq with the rows' log-sum-exp and delta; dk/dv). mma.sync m16n8k8 TF32: q, k, v and dout
// stay f32 in memory and are rounded to tf32 (10-bit mantissa, round to nearest) when staged in shared
// memory, probabilities and score gradients when they enter a product; products accumulate in f32 and
// the softmax statistics (running max, sum, log-sum-exp, delta) are f32, exponentials __expf
// (ex2.approx, relative error about 2^-21, far below the tf32 rounding).
//
// Semantics as flash_attention.cu / attention_backward.cu: q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv],
// dout [T, Hq, Dv] (leading strides in elements, multiples of 4, rows 16-byte aligned); query t sits at
// position qs + t and sees key s when s <= qs + t and (window <= 0 or qs + t - s < window); sinks null
// or f32 [Hq], a logit in every softmax denominator. D = Dv in {64, 128} (template instances below).
//
// Fragments (PTX ISA, m16n8k8 .tf32; g = lane / 4, c = lane % 4): A 16x8 row-major a0 (g, c),
// a1 (g + 8, c), a2 (g, c + 4), a3 (g + 8, c + 4); B 8x8 b0 (k c, n g), b1 (k c + 4, n g); C/D 16x8
// d0 (g, 2c), d1 (g, 2c + 1), d2 (g + 8, 2c), d3 (g + 8, 2c + 1). A product whose A operand is a C
// tile (P . V, dS . K, P^T . dout, dS^T . q) takes the k slots in the permuted order slot c <-> column
// 2c, slot c + 4 <-> column 2c + 1, for A (a0 = d0, a1 = d2, a2 = d1, a3 = d3) and B alike (b0 = row
// 2c, b1 = row 2c + 1 of the staged tile): no shuffles. Shared rows are W + 4 floats (W = 64 or 128,
// a stride of 4 mod 32 banks): every fragment load of a warp hits 32 distinct banks.
//
// Every sum runs in an order fixed by the shapes; no atomics: results are identical run to run.

#define AM_BM 64        // queries per block (forward, dq): 4 warps of 16 rows
#define AM_BN 32        // keys per streamed tile (forward, dq)
#define AM_BK 64        // keys per block (dk/dv): 4 warps of 16 rows
#define AM_BQ 32        // queries per streamed tile (dk/dv)
#define AM_THREADS 128

__device__ __forceinline__ float am_tf32(float x) {
    return __uint_as_float(tf32_bits(x));
}

// c += A . B, m16n8k8 tf32 (operands as tf32 bit patterns held in floats).
__device__ __forceinline__ void am_mma(float* c, float a0, float a1, float a2, float a3, float b0, float b1) {
    mma_tf32_1688(c, __float_as_uint(a0), __float_as_uint(a1), __float_as_uint(a2), __float_as_uint(a3), __float_as_uint(b0),
                  __float_as_uint(b1));
}

// sh [ROWS][W + 4] = rows r of the source (rowPtr(r), or zeros where it gives 0), rounded to tf32.
template <int ROWS, int W, typename RowPtr>
__device__ __forceinline__ void am_stage(float* sh, RowPtr rowPtr) {
    constexpr int PER = W / 4;
    for (int idx = threadIdx.x; idx < ROWS * PER; idx += AM_THREADS) {
        int r = idx / PER;
        int c = (idx - r * PER) * 4;
        const float* src = rowPtr(r);
        float4 x;
        if (src != 0) {
            x = *(const float4*) (src + c);
            x.x = am_tf32(x.x);
            x.y = am_tf32(x.y);
            x.z = am_tf32(x.z);
            x.w = am_tf32(x.w);
        } else {
            x.x = 0.0f;
            x.y = 0.0f;
            x.z = 0.0f;
            x.w = 0.0f;
        }
        *(float4*) (sh + r * (W + 4) + c) = x;
    }
}

// s[n] = A rows (16, from a) . B rows (n * 8 .. + 7 of b)^T over W channels: a C tile [16, NB].
template <int W, int NB>
__device__ __forceinline__ void am_rows_dot(const float* a, const float* b, float s[NB / 8][4]) {
    constexpr int LD = W + 4;
    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
#pragma unroll
    for (int n = 0; n < NB / 8; n++) {
        s[n][0] = 0.0f;
        s[n][1] = 0.0f;
        s[n][2] = 0.0f;
        s[n][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < W; kk += 8) {
        float a0 = a[g * LD + kk + c];
        float a1 = a[(g + 8) * LD + kk + c];
        float a2 = a[g * LD + kk + c + 4];
        float a3 = a[(g + 8) * LD + kk + c + 4];
#pragma unroll
        for (int n = 0; n < NB / 8; n++) {
            const float* br = b + (n * 8 + g) * LD + kk + c;
            am_mma(s[n], a0, a1, a2, a3, br[0], br[4]);
        }
    }
}

// The A fragments of 16 rows (from a) over W channels, for am_frag_dot.
template <int W>
__device__ __forceinline__ void am_frags(const float* a, float af[W / 8][4]) {
    constexpr int LD = W + 4;
    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < W / 8; j++) {
        af[j][0] = a[g * LD + 8 * j + c];
        af[j][1] = a[(g + 8) * LD + 8 * j + c];
        af[j][2] = a[g * LD + 8 * j + c + 4];
        af[j][3] = a[(g + 8) * LD + 8 * j + c + 4];
    }
}

// As am_rows_dot with the A rows held in registers (am_frags).
template <int W, int NB>
__device__ __forceinline__ void am_frag_dot(const float af[W / 8][4], const float* b, float s[NB / 8][4]) {
    constexpr int LD = W + 4;
    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
#pragma unroll
    for (int n = 0; n < NB / 8; n++) {
        s[n][0] = 0.0f;
        s[n][1] = 0.0f;
        s[n][2] = 0.0f;
        s[n][3] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < W / 8; j++) {
#pragma unroll
        for (int n = 0; n < NB / 8; n++) {
            const float* br = b + (n * 8 + g) * LD + 8 * j + c;
            am_mma(s[n], af[j][0], af[j][1], af[j][2], af[j][3], br[0], br[4]);
        }
    }
}

// acc [16, W] += X [16, NB] . B [NB rows of b, W], X a C tile already rounded to tf32.
template <int W, int NB>
__device__ __forceinline__ void am_accumulate(const float x[NB / 8][4], const float* b, float acc[W / 8][4]) {
    constexpr int LD = W + 4;
    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
#pragma unroll
    for (int j = 0; j < NB / 8; j++) {
        const float* b0 = b + (j * 8 + 2 * c) * LD + g;
#pragma unroll
        for (int n = 0; n < W / 8; n++) {
            am_mma(acc[n], x[j][0], x[j][2], x[j][1], x[j][3], b0[n * 8], b0[LD + n * 8]);
        }
    }
}

__device__ __forceinline__ float am_quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float am_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

__device__ __forceinline__ bool am_visible(int pos, int key, int window) {
    return key <= pos && (window <= 0 || pos - key < window);
}

// The forward of one block's warp (16 query rows, their fragments qf; local rows r0 = warp * 16 + g
// and r0 + 8): online softmax over the key tiles lo .. hi; m, l per row, acc the unnormalised output.
// Every thread of the block calls it (tiles are staged cooperatively; the first staging's barrier
// also orders the caller's q staging and fragment loads before ksh is written).
template <int D, int DV>
__device__ __forceinline__ void am_online(const float qf[D / 8][4], float* ksh, float* vsh, const float* kb, i64 kS,
                                          const float* vb, i64 vS, int t0, int T, int qs, int window, float scale,
                                          int lo, int hi, float m[2], float l[2], float acc[DV / 8][4]) {
    int warp = threadIdx.x >> 5;
    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
    int wFirst = t0 + warp * 16;                           // first query of the warp
    int wLast = min(wFirst + 15, T - 1);
    int pos[2] = {qs + wFirst + g, qs + wFirst + g + 8};
    bool row[2] = {wFirst + g < T, wFirst + g + 8 < T};
    for (int k0 = lo; k0 <= hi; k0 += AM_BN) {
        __syncthreads(); // previous tiles consumed (and q staged, on the first pass)
        am_stage<AM_BN, D>(ksh, [&](int r) { return k0 + r <= hi ? kb + (i64) (k0 + r) * kS : (const float*) 0; });
        am_stage<AM_BN, DV>(vsh, [&](int r) { return k0 + r <= hi ? vb + (i64) (k0 + r) * vS : (const float*) 0; });
        __syncthreads();
        // warp-uniform: no key of the tile is visible to a query of the warp
        if (wFirst > wLast || k0 > qs + wLast || (window > 0 && qs + wFirst - (k0 + AM_BN - 1) >= window)) continue;
        float s[AM_BN / 8][4];
        am_frag_dot<D, AM_BN>(qf, ksh, s);
        float mx[2] = {-ORBIT_INF, -ORBIT_INF};
#pragma unroll
        for (int n = 0; n < AM_BN / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = e >> 1;
                int key = k0 + n * 8 + 2 * c + (e & 1);
                s[n][e] = row[i] && am_visible(pos[i], key, window) ? s[n][e] * scale : -ORBIT_INF;
                mx[i] = fmaxf(mx[i], s[n][e]);
            }
        }
        float mn[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int i = 0; i < 2; i++) {
            mn[i] = fmaxf(m[i], am_quad_max(mx[i]));
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
        for (int n = 0; n < AM_BN / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = e >> 1;
                float p = s[n][e] == -ORBIT_INF ? 0.0f : __expf(s[n][e] - mn[i]);
                sum[i] += p;
                s[n][e] = am_tf32(p);
            }
        }
        l[0] += am_quad_sum(sum[0]);
        l[1] += am_quad_sum(sum[1]);
        am_accumulate<DV, AM_BN>(s, vsh, acc);
    }
}

// Grid ceil(T / AM_BM) * Hq, block AM_THREADS; dynamic shared 4 * (AM_BM * (D + 4) + AM_BN * (D + DV + 8))
// bytes. out [T, Hq, DV]. Later query tiles (more keys) launch first.
template <int D, int DV>
__device__ __forceinline__ void am_forward(const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH, const float* v,
                                           i64 vS, i64 vH, float* out, i64 oT, i64 oH, int T, int Hq, int Hkv, int qs,
                                           int window, float scale, const float* sinks) {
    extern __shared__ __align__(16) float am_sm[];
    float* qsh = am_sm;                       // [AM_BM][D + 4]
    float* ksh = qsh + AM_BM * (D + 4);       // [AM_BN][D + 4]
    float* vsh = ksh + AM_BN * (D + 4);       // [AM_BN][DV + 4]
    int tiles = (T + AM_BM - 1) / AM_BM;
    int h = blockIdx.x % Hq;
    int t0 = (tiles - 1 - (int) (blockIdx.x / Hq)) * AM_BM;
    int kvh = h / (Hq / Hkv);
    int tLast = min(t0 + AM_BM - 1, T - 1);
    int hi = qs + tLast;
    int lo = window > 0 ? max(0, qs + t0 - window + 1) : 0;
    am_stage<AM_BM, D>(qsh, [&](int r) { return t0 + r < T ? q + (i64) (t0 + r) * qT + (i64) h * qH : (const float*) 0; });

    __syncthreads();
    float qf[D / 8][4];
    am_frags<D>(qsh + (threadIdx.x >> 5) * 16 * (D + 4), qf);

    float m[2], l[2], acc[DV / 8][4];
    float sink = sinks != 0 ? sinks[h] : -ORBIT_INF;
    m[0] = m[1] = sink;
    l[0] = l[1] = sinks != 0 ? 1.0f : 0.0f;
#pragma unroll
    for (int n = 0; n < DV / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    am_online<D, DV>(qf, ksh, vsh, k + (i64) kvh * kH, kS, v + (i64) kvh * vH, vS, t0, T, qs, window, scale, lo, hi, m, l,
                     acc);

    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int t = t0 + (threadIdx.x >> 5) * 16 + g + 8 * i;
        if (t < T) {
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

// Grid ceil(T / AM_BM) * Hq, block AM_THREADS; dynamic shared 4 * (AM_BM + AM_BN) * (D + DV + 8) bytes.
// Pass 1 recomputes the rows' softmax (as am_forward) and writes lse and delta = dout . o [T, Hq];
// pass 2 sums dq = scale * sum_j p_j (dp_j - delta) k_j over the key tiles. dq [T, Hq, D].
template <int D, int DV>
__device__ __forceinline__ void am_backward_q(const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH,
                                              const float* v, i64 vS, i64 vH, const float* dout, i64 oT, i64 oH,
                                              float* dq, i64 dqT, i64 dqH, float* lse, float* delta, int T, int Hq,
                                              int Hkv, int qs, int window, float scale, const float* sinks) {
    extern __shared__ __align__(16) float am_sm[];
    float* qsh = am_sm;                       // [AM_BM][D + 4]
    float* osh = qsh + AM_BM * (D + 4);       // [AM_BM][DV + 4] dout
    float* ksh = osh + AM_BM * (DV + 4);      // [AM_BN][D + 4]
    float* vsh = ksh + AM_BN * (D + 4);       // [AM_BN][DV + 4]
    int tiles = (T + AM_BM - 1) / AM_BM;
    int h = blockIdx.x % Hq;
    int t0 = (tiles - 1 - (int) (blockIdx.x / Hq)) * AM_BM;
    int kvh = h / (Hq / Hkv);
    int tLast = min(t0 + AM_BM - 1, T - 1);
    int hi = qs + tLast;
    int lo = window > 0 ? max(0, qs + t0 - window + 1) : 0;
    const float* kb = k + (i64) kvh * kH;
    const float* vb = v + (i64) kvh * vH;
    am_stage<AM_BM, D>(qsh, [&](int r) { return t0 + r < T ? q + (i64) (t0 + r) * qT + (i64) h * qH : (const float*) 0; });
    am_stage<AM_BM, DV>(osh, [&](int r) { return t0 + r < T ? dout + (i64) (t0 + r) * oT + (i64) h * oH : (const float*) 0; });

    __syncthreads();
    float qf[D / 8][4];
    am_frags<D>(qsh + (threadIdx.x >> 5) * 16 * (D + 4), qf);

    float m[2], l[2], acc[DV / 8][4];
    float sink = sinks != 0 ? sinks[h] : -ORBIT_INF;
    m[0] = m[1] = sink;
    l[0] = l[1] = sinks != 0 ? 1.0f : 0.0f;
#pragma unroll
    for (int n = 0; n < DV / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    am_online<D, DV>(qf, ksh, vsh, kb, kS, vb, vS, t0, T, qs, window, scale, lo, hi, m, l, acc);

    int warp = threadIdx.x >> 5;
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
            // delta from dout in f32 (not the tf32 copy in shared memory)
            const float* dor = dout + (i64) t * oT + (i64) h * oH + 2 * c;
            float inv = 1.0f / l[i];
#pragma unroll
            for (int n = 0; n < DV / 8; n++) part += acc[n][2 * i] * inv * dor[n * 8] + acc[n][2 * i + 1] * inv * dor[n * 8 + 1];
        }
        dl[i] = am_quad_sum(part);
        L[i] = row[i] ? m[i] + logf(l[i]) : 0.0f;
        if (c == 0 && row[i]) {
            lse[(i64) t * Hq + h] = L[i];
            delta[(i64) t * Hq + h] = dl[i];
        }
    }

    float dqa[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) dqa[n][0] = dqa[n][1] = dqa[n][2] = dqa[n][3] = 0.0f;
    for (int k0 = lo; k0 <= hi; k0 += AM_BN) {
        __syncthreads();
        am_stage<AM_BN, D>(ksh, [&](int r) { return k0 + r <= hi ? kb + (i64) (k0 + r) * kS : (const float*) 0; });
        am_stage<AM_BN, DV>(vsh, [&](int r) { return k0 + r <= hi ? vb + (i64) (k0 + r) * vS : (const float*) 0; });
        __syncthreads();
        if (wFirst > wLast || k0 > qs + wLast || (window > 0 && qs + wFirst - (k0 + AM_BN - 1) >= window)) continue;
        float s[AM_BN / 8][4], dp[AM_BN / 8][4];
        am_frag_dot<D, AM_BN>(qf, ksh, s);
        am_rows_dot<DV, AM_BN>(osh + warp * 16 * (DV + 4), vsh, dp);
#pragma unroll
        for (int n = 0; n < AM_BN / 8; n++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = e >> 1;
                int key = k0 + n * 8 + 2 * c + (e & 1);
                bool vis = row[i] && am_visible(pos[i], key, window);
                float p = vis ? __expf(s[n][e] * scale - L[i]) : 0.0f;
                s[n][e] = am_tf32(vis ? p * (dp[n][e] - dl[i]) * scale : 0.0f);
            }
        }
        am_accumulate<D, AM_BN>(s, ksh, dqa);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int t = wFirst + g + 8 * i;
        if (row[i]) {
            float* o = dq + (i64) t * dqT + (i64) h * dqH + 2 * c;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                o[n * 8] = dqa[n][2 * i];
                o[n * 8 + 1] = dqa[n][2 * i + 1];
            }
        }
    }
}

// Grid ceil(S / AM_BK) * Hkv * splits, block AM_THREADS; dynamic shared
// 4 * ((AM_BK + AM_BQ) * (D + DV + 8) + 2 * AM_BQ) bytes. Split p of kv head g sums the query heads
// g * G + p * (G / splits) .. + G / splits - 1 (G = Hq / Hkv), query tiles ascending, heads ascending
// within a tile, and writes its dk, dv rows to dk + p * dkP, dv + p * dvP. lse, delta from am_backward_q.
template <int D, int DV>
__device__ __forceinline__ void am_backward_kv(const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH,
                                               const float* v, i64 vS, i64 vH, const float* dout, i64 oT, i64 oH,
                                               float* dk, i64 dkS, i64 dkH, i64 dkP, float* dv, i64 dvS, i64 dvH,
                                               i64 dvP, const float* lse, const float* delta, int T, int S, int Hq,
                                               int Hkv, int qs, int window, float scale, int splits) {
    extern __shared__ __align__(16) float am_sm[];
    float* ksh = am_sm;                       // [AM_BK][D + 4] resident keys
    float* vsh = ksh + AM_BK * (D + 4);       // [AM_BK][DV + 4] resident values
    float* qsh = vsh + AM_BK * (DV + 4);      // [AM_BQ][D + 4] streamed queries
    float* osh = qsh + AM_BQ * (D + 4);       // [AM_BQ][DV + 4] streamed dout
    float* lsh = osh + AM_BQ * (DV + 4);      // [AM_BQ] lse of the streamed queries
    float* dsh = lsh + AM_BQ;                 // [AM_BQ] delta
    int split = blockIdx.x % splits;
    int gk = (blockIdx.x / splits) % Hkv;
    int s0 = (int) (blockIdx.x / (splits * Hkv)) * AM_BK;
    int G = Hq / Hkv;
    int per = G / splits;
    int h0 = gk * G + split * per;
    int warp = threadIdx.x >> 5;
    int g = (threadIdx.x & 31) >> 2;
    int c = threadIdx.x & 3;
    int tBeg = max(0, s0 - qs);               // first query that sees a key of the block
    int tEnd = T - 1;
    if (window > 0) tEnd = min(tEnd, s0 + AM_BK - 1 + window - 1 - qs);
    int wKey = s0 + warp * 16;                // first key of the warp
    int key[2] = {wKey + g, wKey + g + 8};

    am_stage<AM_BK, D>(ksh, [&](int r) { return s0 + r < S ? k + (i64) (s0 + r) * kS + (i64) gk * kH : (const float*) 0; });
    am_stage<AM_BK, DV>(vsh, [&](int r) { return s0 + r < S ? v + (i64) (s0 + r) * vS + (i64) gk * vH : (const float*) 0; });

    float ak[D / 8][4], av[DV / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) ak[n][0] = ak[n][1] = ak[n][2] = ak[n][3] = 0.0f;
#pragma unroll
    for (int n = 0; n < DV / 8; n++) av[n][0] = av[n][1] = av[n][2] = av[n][3] = 0.0f;
    for (int tq = tBeg; tq <= tEnd; tq += AM_BQ) {
        int qLast = min(tq + AM_BQ - 1, tEnd);
        // warp-uniform: no query of the tile sees a key of the warp
        bool idle = wKey >= S || wKey > qs + qLast || (window > 0 && qs + tq - (wKey + 15) >= window);
        for (int h = h0; h < h0 + per; h++) {
            __syncthreads(); // previous tiles consumed (and k, v staged, on the first pass)
            am_stage<AM_BQ, D>(qsh, [&](int r) { return tq + r <= tEnd ? q + (i64) (tq + r) * qT + (i64) h * qH : (const float*) 0; });
            am_stage<AM_BQ, DV>(osh, [&](int r) { return tq + r <= tEnd ? dout + (i64) (tq + r) * oT + (i64) h * oH : (const float*) 0; });
            if (threadIdx.x < AM_BQ) {
                int t = tq + threadIdx.x;
                lsh[threadIdx.x] = t <= tEnd ? lse[(i64) t * Hq + h] : 0.0f;
                dsh[threadIdx.x] = t <= tEnd ? delta[(i64) t * Hq + h] : 0.0f;
            }
            __syncthreads();
            if (idle) continue;
            float s[AM_BQ / 8][4], dp[AM_BQ / 8][4];
            am_rows_dot<D, AM_BQ>(ksh + warp * 16 * (D + 4), qsh, s);   // s^T [16 keys, AM_BQ queries]
            am_rows_dot<DV, AM_BQ>(vsh + warp * 16 * (DV + 4), osh, dp); // dp^T
#pragma unroll
            for (int n = 0; n < AM_BQ / 8; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int j = n * 8 + 2 * c + (e & 1);           // query of the tile
                    int t = tq + j;
                    int kk = key[e >> 1];
                    bool vis = t <= tEnd && kk < S && am_visible(qs + t, kk, window);
                    float p = vis ? __expf(s[n][e] * scale - lsh[j]) : 0.0f;
                    dp[n][e] = am_tf32(vis ? p * (dp[n][e] - dsh[j]) * scale : 0.0f);
                    s[n][e] = am_tf32(p);
                }
            }
            am_accumulate<DV, AM_BQ>(s, osh, av);
            am_accumulate<D, AM_BQ>(dp, qsh, ak);
        }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int kk = key[i];
        if (kk < S) {
            float* ok = dk + (i64) split * dkP + (i64) kk * dkS + (i64) gk * dkH + 2 * c;
#pragma unroll
            for (int n = 0; n < D / 8; n++) {
                ok[n * 8] = ak[n][2 * i];
                ok[n * 8 + 1] = ak[n][2 * i + 1];
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

#define AM_FORWARD_ARGS                                                                                                \
    const float *q, i64 qT, i64 qH, const float *k, i64 kS, i64 kH, const float *v, i64 vS, i64 vH, float *out, i64 oT, \
        i64 oH, int T, int Hq, int Hkv, int qs, int window, float scale, const float *sinks
#define AM_BACKWARD_Q_ARGS                                                                                             \
    const float *q, i64 qT, i64 qH, const float *k, i64 kS, i64 kH, const float *v, i64 vS, i64 vH, const float *dout, \
        i64 oT, i64 oH, float *dq, i64 dqT, i64 dqH, float *lse, float *delta, int T, int Hq, int Hkv, int qs,         \
        int window, float scale, const float *sinks
#define AM_BACKWARD_KV_ARGS                                                                                            \
    const float *q, i64 qT, i64 qH, const float *k, i64 kS, i64 kH, const float *v, i64 vS, i64 vH, const float *dout, \
        i64 oT, i64 oH, float *dk, i64 dkS, i64 dkH, i64 dkP, float *dv, i64 dvS, i64 dvH, i64 dvP, const float *lse,  \
        const float *delta, int T, int S, int Hq, int Hkv, int qs, int window, float scale, int splits

extern "C" __global__ void __launch_bounds__(AM_THREADS) am_forward_d64(AM_FORWARD_ARGS) {
    ORBIT_TRACE_KERNEL();
    am_forward<64, 64>(q, qT, qH, k, kS, kH, v, vS, vH, out, oT, oH, T, Hq, Hkv, qs, window, scale, sinks);
}

extern "C" __global__ void __launch_bounds__(AM_THREADS) am_forward_d128(AM_FORWARD_ARGS) {
    ORBIT_TRACE_KERNEL();
    am_forward<128, 128>(q, qT, qH, k, kS, kH, v, vS, vH, out, oT, oH, T, Hq, Hkv, qs, window, scale, sinks);
}

extern "C" __global__ void __launch_bounds__(AM_THREADS) am_backward_q_d64(AM_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    am_backward_q<64, 64>(q, qT, qH, k, kS, kH, v, vS, vH, dout, oT, oH, dq, dqT, dqH, lse, delta, T, Hq, Hkv, qs, window,
                          scale, sinks);
}

extern "C" __global__ void __launch_bounds__(AM_THREADS) am_backward_q_d128(AM_BACKWARD_Q_ARGS) {
    ORBIT_TRACE_KERNEL();
    am_backward_q<128, 128>(q, qT, qH, k, kS, kH, v, vS, vH, dout, oT, oH, dq, dqT, dqH, lse, delta, T, Hq, Hkv, qs, window,
                            scale, sinks);
}

extern "C" __global__ void __launch_bounds__(AM_THREADS) am_backward_kv_d64(AM_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    am_backward_kv<64, 64>(q, qT, qH, k, kS, kH, v, vS, vH, dout, oT, oH, dk, dkS, dkH, dkP, dv, dvS, dvH, dvP, lse, delta,
                           T, S, Hq, Hkv, qs, window, scale, splits);
}

extern "C" __global__ void __launch_bounds__(AM_THREADS) am_backward_kv_d128(AM_BACKWARD_KV_ARGS) {
    ORBIT_TRACE_KERNEL();
    am_backward_kv<128, 128>(q, qT, qH, k, kS, kH, v, vS, vH, dout, oT, oH, dk, dkS, dkH, dkP, dv, dvS, dvH, dvP, lse,
                             delta, T, S, Hq, Hkv, qs, window, scale, splits);
}
