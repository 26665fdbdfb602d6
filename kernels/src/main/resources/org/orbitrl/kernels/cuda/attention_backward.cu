// Tiled causal attention backward (FlashAttention-2 style, f32 on CUDA cores) for head dims up to
// 128. One sequence: q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], dout [T, Hq, Dv] (leading
// strides in elements, last dimension contiguous, any alignment). Query t sits at position
// qs + t and sees key s when s <= qs + t and (window <= 0 or qs + t - s < window); sinks null or
// f32 [Hq], a logit in every softmax denominator.
//
// Two launches (and a third summing partial dk/dv when the query heads of a group are split):
//   attnb_q:  one block per (32 queries, head): pass 1 over the visible key tiles finds the
//             row's log-sum-exp L and delta = dout . o (o recomputed with an online softmax);
//             pass 2 recomputes p = exp(s - L) and dp = dout . v and sums
//             dq = scale * sum_j p_j (dp_j - delta) k_j.
//   attnb_kv: one block per (32 keys, kv head, split of the group's query heads): for every
//             query tile that can see the keys and every query head of the split,
//             dv += p^T dout and dk += ds^T q with ds = p (dp - delta) scale.
// Every sum runs in an order fixed by the shapes alone; no atomics: results are identical run
// to run.
//
// Thread layout (128 threads): a tile product X [32 rows, 32 cols] gives thread t rows
// 4 (t / 16) .. +3 and columns t % 16 and t % 16 + 16; an accumulation acc [32 rows, W] gives it
// the same rows and channels 4 (t % 16) .. +3 and 64 + 4 (t % 16) .. +3. Shared rows are padded
// to a multiple of 4 floats (zeros past the head dim) and to an odd number of float4 so that
// rows read by 8 consecutive threads fall in distinct banks.

#define AB_T 32          // rows per tile
#define AB_THREADS 128
#define AB_XT (AB_T + 4) // row stride of the transposed score tiles [cols][rows]

__device__ __forceinline__ int ab_w4(int w) {
    return (w + 3) & ~3;
}

__device__ __forceinline__ int ab_ld(int w) {
    int w4 = ab_w4(w);
    return ((w4 >> 2) & 1) ? w4 : w4 + 4;
}

// sh [AB_T][ld] rows r = src rows (rowPtr(r), or zeros when 0), zero-padded to a multiple of 4
// columns. vec: w is a multiple of 4 and every row 16-byte aligned (float4 loads).
template <typename RowPtr>
__device__ __forceinline__ void ab_load(float* sh, int ld, int w, int vec, RowPtr rowPtr) {
    if (vec) {
        int per = w >> 2;
        for (int idx = threadIdx.x; idx < AB_T * per; idx += AB_THREADS) {
            int r = idx / per;
            int c = (idx - r * per) << 2;
            const float* src = rowPtr(r);
            float4 x;
            if (src != 0) {
                x = *(const float4*) (src + c);
            } else {
                x.x = 0.0f;
                x.y = 0.0f;
                x.z = 0.0f;
                x.w = 0.0f;
            }
            *(float4*) (sh + r * ld + c) = x;
        }
        return;
    }
    int w4 = ab_w4(w);
    for (int idx = threadIdx.x; idx < AB_T * w4; idx += AB_THREADS) {
        int r = idx / w4;
        int c = idx - r * w4;
        const float* src = rowPtr(r);
        sh[r * ld + c] = src != 0 && c < w ? src[c] : 0.0f;
    }
}

// out[i][j] = res row (4 rg + i) . str row (sg + 16 j), over w4 channels.
__device__ __forceinline__ void ab_dots(const float* res, const float* str, int ld, int w4, int rg, int sg,
                                        float out[4][2]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        out[i][0] = 0.0f;
        out[i][1] = 0.0f;
    }
    const float* b0p = str + sg * ld;
    const float* b1p = str + (sg + 16) * ld;
    const float* ap = res + 4 * rg * ld;
    for (int c = 0; c < w4; c += 4) {
        float4 b0 = *(const float4*) (b0p + c);
        float4 b1 = *(const float4*) (b1p + c);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float4 a = *(const float4*) (ap + i * ld + c);
            out[i][0] += a.x * b0.x + a.y * b0.y + a.z * b0.z + a.w * b0.w;
            out[i][1] += a.x * b1.x + a.y * b1.y + a.z * b1.z + a.w * b1.w;
        }
    }
}

// acc[i][0..3] += sum_s xt[s][4 rg + i] * str[s][c0 .. c0+3], acc[i][4..7] likewise at c1 = c0 + 64;
// s ascending over the tile. Channel groups at or past w4 are skipped (they stay zero).
__device__ __forceinline__ void ab_accumulate(float acc[4][8], const float* xt, const float* str, int ld, int w4,
                                              int rg, int cg) {
    int c0 = 4 * cg;
    int c1 = c0 + 64;
    bool h0 = c0 < w4;
    bool h1 = c1 < w4;
    float4 zero;
    zero.x = 0.0f;
    zero.y = 0.0f;
    zero.z = 0.0f;
    zero.w = 0.0f;
    for (int s = 0; s < AB_T; s++) {
        float4 x = *(const float4*) (xt + s * AB_XT + 4 * rg);
        float4 b0 = h0 ? *(const float4*) (str + s * ld + c0) : zero;
        float4 b1 = h1 ? *(const float4*) (str + s * ld + c1) : zero;
        float xs[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            acc[i][0] += xs[i] * b0.x;
            acc[i][1] += xs[i] * b0.y;
            acc[i][2] += xs[i] * b0.z;
            acc[i][3] += xs[i] * b0.w;
            acc[i][4] += xs[i] * b1.x;
            acc[i][5] += xs[i] * b1.y;
            acc[i][6] += xs[i] * b1.z;
            acc[i][7] += xs[i] * b1.w;
        }
    }
}

// Sum / max over the 16 threads that share a row group (lanes 0-15 or 16-31 of a warp).
__device__ __forceinline__ float ab_row_sum(float v) {
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float ab_row_max(float v) {
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ bool ab_visible(int pos, int key, int window) {
    return key <= pos && (window <= 0 || pos - key < window);
}

// Writes acc rows (4 rg + i) of a tile starting at row r0 (rows < rows) into out (row stride oR), channels < w.
__device__ __forceinline__ void ab_store(const float acc[4][8], float* out, i64 oR, int r0, int rows, int w, int rg,
                                         int cg) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int r = r0 + 4 * rg + i;
        if (r < rows) {
            float* o = out + (i64) r * oR;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                int c = 4 * cg + (e < 4 ? e : 60 + e);
                if (c < w) o[c] = acc[i][e];
            }
        }
    }
}

__device__ __forceinline__ void ab_zero(float acc[4][8]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int e = 0; e < 8; e++) acc[i][e] = 0.0f;
    }
}

// Grid ceil(T / 32) * Hq, block AB_THREADS; dynamic shared 4 * (2 * AB_T * (ld(D) + ld(Dv)) + AB_T * AB_XT)
// bytes. Writes dq [T, Hq, D], lse and delta [T, Hq]. Later query tiles (more keys) launch first. fo (the forward's
// output [T, Hq, Dv], row strides foT, foH) and flse (its log-sum-exp [T, Hq]), or both null: with them the rows'
// log-sum-exp is read and delta summed from fo, instead of a first pass over the keys that runs the softmax again.
extern "C" __global__ void __launch_bounds__(AB_THREADS, 3) attnb_q(
        const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH, const float* v, i64 vS, i64 vH,
        const float* dout, i64 oT, i64 oH, float* dq, i64 dqT, i64 dqH, float* lse, float* delta,
        int T, int Hq, int Hkv, int D, int Dv, int qs, int window, float scale, const float* sinks, int vec,
        const float* fo, i64 foT, i64 foH, const float* flse) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float ab_sm[];
    int ldA = ab_ld(D);
    int ldB = ab_ld(Dv);
    int wA = ab_w4(D);
    int wB = ab_w4(Dv);
    float* qsh = ab_sm;                     // [AB_T][ldA] resident queries
    float* osh = qsh + AB_T * ldA;          // [AB_T][ldB] resident dout
    float* ksh = osh + AB_T * ldB;          // [AB_T][ldA] streamed keys
    float* vsh = ksh + AB_T * ldA;          // [AB_T][ldB] streamed values
    float* xt = vsh + AB_T * ldB;           // [AB_T cols][AB_XT] p (pass 1) or ds (pass 2), transposed

    int tiles = (T + AB_T - 1) / AB_T;
    int h = blockIdx.x % Hq;
    int t0 = (tiles - 1 - (int) (blockIdx.x / Hq)) * AB_T;
    int g = h / (Hq / Hkv);
    int rg = threadIdx.x >> 4;
    int sg = threadIdx.x & 15;
    int tLast = min(t0 + AB_T - 1, T - 1);
    int hi = qs + tLast;                    // last key any query of the tile sees
    int lo = window > 0 ? max(0, qs + t0 - window + 1) : 0;
    const float* kb = k + (i64) g * kH;
    const float* vb = v + (i64) g * vH;

    ab_load(qsh, ldA, D, vec, [&](int r) { return t0 + r < T ? q + (i64) (t0 + r) * qT + (i64) h * qH : (const float*) 0; });
    ab_load(osh, ldB, Dv, vec, [&](int r) { return t0 + r < T ? dout + (i64) (t0 + r) * oT + (i64) h * oH : (const float*) 0; });

    float acc[4][8];
    float m[4], l[4];
    float sink = sinks != 0 ? sinks[h] : -ORBIT_INF;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        m[i] = sink;
        l[i] = sinks != 0 ? 1.0f : 0.0f;
    }
    ab_zero(acc);

    // pass 1: online softmax over the key tiles, acc = unnormalised o (skipped where the forward kept its statistics)
    for (int k0 = lo; fo == 0 && k0 <= hi; k0 += AB_T) {
        __syncthreads(); // previous tiles consumed (and the resident tiles written, on the first pass)
        ab_load(ksh, ldA, D, vec, [&](int r) { return k0 + r <= hi ? kb + (i64) (k0 + r) * kS : (const float*) 0; });
        ab_load(vsh, ldB, Dv, vec, [&](int r) { return k0 + r <= hi ? vb + (i64) (k0 + r) * vS : (const float*) 0; });
        __syncthreads();
        float sc[4][2];
        ab_dots(qsh, ksh, ldA, wA, rg, sg, sc);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int t = t0 + 4 * rg + i;
            int pos = qs + t;
            float s[2];
            bool vis[2];
#pragma unroll
            for (int j = 0; j < 2; j++) {
                vis[j] = t < T && ab_visible(pos, k0 + sg + 16 * j, window);
                s[j] = vis[j] ? sc[i][j] * scale : -ORBIT_INF;
            }
            float mn = fmaxf(m[i], ab_row_max(fmaxf(s[0], s[1])));
            float corr = mn == -ORBIT_INF ? 1.0f : expf(m[i] - mn);
            float p0 = vis[0] ? expf(s[0] - mn) : 0.0f;
            float p1 = vis[1] ? expf(s[1] - mn) : 0.0f;
            l[i] = l[i] * corr + ab_row_sum(p0 + p1);
            m[i] = mn;
#pragma unroll
            for (int e = 0; e < 8; e++) acc[i][e] *= corr;
            xt[sg * AB_XT + 4 * rg + i] = p0;
            xt[(sg + 16) * AB_XT + 4 * rg + i] = p1;
        }
        __syncthreads();
        ab_accumulate(acc, xt, vsh, ldB, wB, rg, sg);
    }

    // lse and delta = dout . o per row; the 16 threads of a row group agree on both
    if (fo != 0) __syncthreads();   // the resident dout rows written (no pass 1 to wait for them)
    float L[4], dl[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int r = 4 * rg + i;
        int t = t0 + r;
        float part = 0.0f;
        if (fo != 0) {   // the forward's output and log-sum-exp
            if (t < T) {
                const float* orow = fo + (i64) t * foT + (i64) h * foH;
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    int c = 4 * sg + (e < 4 ? e : 60 + e);
                    if (c < Dv) part += orow[c] * osh[r * ldB + c];
                }
            }
            L[i] = t < T ? flse[(i64) t * Hq + h] : 0.0f;
        } else {
            float inv = t < T ? 1.0f / l[i] : 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                int c = 4 * sg + (e < 4 ? e : 60 + e);
                if (c < wB) part += acc[i][e] * inv * osh[r * ldB + c];
            }
            L[i] = t < T ? m[i] + logf(l[i]) : 0.0f;
        }
        dl[i] = ab_row_sum(part);
        if (sg == 0 && t < T) {
            lse[(i64) t * Hq + h] = L[i];
            delta[(i64) t * Hq + h] = dl[i];
        }
    }

    // pass 2: dq = sum over the key tiles of ds . k
    ab_zero(acc);
    for (int k0 = lo; k0 <= hi; k0 += AB_T) {
        __syncthreads();
        ab_load(ksh, ldA, D, vec, [&](int r) { return k0 + r <= hi ? kb + (i64) (k0 + r) * kS : (const float*) 0; });
        ab_load(vsh, ldB, Dv, vec, [&](int r) { return k0 + r <= hi ? vb + (i64) (k0 + r) * vS : (const float*) 0; });
        __syncthreads();
        float sc[4][2], dp[4][2];
        ab_dots(qsh, ksh, ldA, wA, rg, sg, sc);
        ab_dots(osh, vsh, ldB, wB, rg, sg, dp);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int t = t0 + 4 * rg + i;
            int pos = qs + t;
#pragma unroll
            for (int j = 0; j < 2; j++) {
                bool vis = t < T && ab_visible(pos, k0 + sg + 16 * j, window);
                float p = vis ? expf(sc[i][j] * scale - L[i]) : 0.0f;
                xt[(sg + 16 * j) * AB_XT + 4 * rg + i] = vis ? p * (dp[i][j] - dl[i]) * scale : 0.0f;
            }
        }
        __syncthreads();
        ab_accumulate(acc, xt, ksh, ldA, wA, rg, sg);
    }
    ab_store(acc, dq + (i64) h * dqH, dqT, t0, T, D, rg, sg);
}

// Grid ceil(S / 32) * Hkv * splits, block AB_THREADS; dynamic shared
// 4 * (2 * AB_T * (ld(D) + ld(Dv)) + 2 * AB_T * AB_XT) bytes. Split p of kv head g sums the
// query heads g * G + p * (G / splits) .. + G / splits - 1 (G = Hq / Hkv) and writes its dk, dv
// rows to dk + p * dkP, dv + p * dvP (row strides dkS, dkH / dvS, dvH). lse and delta from attnb_q.
extern "C" __global__ void __launch_bounds__(AB_THREADS, 3) attnb_kv(
        const float* q, i64 qT, i64 qH, const float* k, i64 kS, i64 kH, const float* v, i64 vS, i64 vH,
        const float* dout, i64 oT, i64 oH, float* dk, i64 dkS, i64 dkH, i64 dkP, float* dv, i64 dvS, i64 dvH, i64 dvP,
        const float* lse, const float* delta, int T, int S, int Hq, int Hkv, int D, int Dv, int qs, int window,
        float scale, int splits, int vec) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float ab_sm[];
    int ldA = ab_ld(D);
    int ldB = ab_ld(Dv);
    int wA = ab_w4(D);
    int wB = ab_w4(Dv);
    float* ksh = ab_sm;                     // [AB_T][ldA] resident keys
    float* vsh = ksh + AB_T * ldA;          // [AB_T][ldB] resident values
    float* qsh = vsh + AB_T * ldB;          // [AB_T][ldA] streamed queries
    float* osh = qsh + AB_T * ldA;          // [AB_T][ldB] streamed dout
    float* pt = osh + AB_T * ldB;           // [AB_T queries][AB_XT] p, transposed
    float* dst = pt + AB_T * AB_XT;         // [AB_T queries][AB_XT] ds, transposed

    int split = blockIdx.x % splits;
    int g = (blockIdx.x / splits) % Hkv;
    int s0 = (int) (blockIdx.x / (splits * Hkv)) * AB_T;
    int G = Hq / Hkv;
    int per = G / splits;
    int h0 = g * G + split * per;
    int rg = threadIdx.x >> 4;
    int sg = threadIdx.x & 15;
    int tBeg = max(0, s0 - qs);             // first query that sees a key of the tile
    int tEnd = T - 1;                       // last one
    if (window > 0) tEnd = min(tEnd, s0 + AB_T - 1 + window - 1 - qs);

    ab_load(ksh, ldA, D, vec, [&](int r) { return s0 + r < S ? k + (i64) (s0 + r) * kS + (i64) g * kH : (const float*) 0; });
    ab_load(vsh, ldB, Dv, vec, [&](int r) { return s0 + r < S ? v + (i64) (s0 + r) * vS + (i64) g * vH : (const float*) 0; });

    float ak[4][8], av[4][8];
    ab_zero(ak);
    ab_zero(av);
    for (int tq = tBeg; tq <= tEnd; tq += AB_T) {
        for (int h = h0; h < h0 + per; h++) {
            __syncthreads(); // previous tiles consumed (and the resident tiles written, on the first pass)
            ab_load(qsh, ldA, D, vec, [&](int r) { return tq + r <= tEnd ? q + (i64) (tq + r) * qT + (i64) h * qH : (const float*) 0; });
            ab_load(osh, ldB, Dv, vec, [&](int r) { return tq + r <= tEnd ? dout + (i64) (tq + r) * oT + (i64) h * oH : (const float*) 0; });
            __syncthreads();
            float sc[4][2], dp[4][2];
            ab_dots(ksh, qsh, ldA, wA, rg, sg, sc);
            ab_dots(vsh, osh, ldB, wB, rg, sg, dp);
#pragma unroll
            for (int j = 0; j < 2; j++) {
                int c = sg + 16 * j;
                int t = tq + c;
                int pos = qs + t;
                float L = t <= tEnd ? lse[(i64) t * Hq + h] : 0.0f;
                float dl = t <= tEnd ? delta[(i64) t * Hq + h] : 0.0f;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int key = s0 + 4 * rg + i;
                    bool vis = t <= tEnd && key < S && ab_visible(pos, key, window);
                    float p = vis ? expf(sc[i][j] * scale - L) : 0.0f;
                    pt[c * AB_XT + 4 * rg + i] = p;
                    dst[c * AB_XT + 4 * rg + i] = vis ? p * (dp[i][j] - dl) * scale : 0.0f;
                }
            }
            __syncthreads();
            ab_accumulate(av, pt, osh, ldB, wB, rg, sg);
            ab_accumulate(ak, dst, qsh, ldA, wA, rg, sg);
        }
    }
    ab_store(ak, dk + (i64) split * dkP + (i64) g * dkH, dkS, s0, S, D, rg, sg);
    ab_store(av, dv + (i64) split * dvP + (i64) g * dvH, dvS, s0, S, Dv, rg, sg);
}

// out [S, Hkv, W] (strides oS, oH) = sum over p = 0 .. splits-1, ascending, of part [splits, S, Hkv, W] (contiguous).
extern "C" __global__ void attnb_sum_splits(const float* part, int splits, int S, int Hkv, int W, float* out, i64 oS,
                                            i64 oH) {
    ORBIT_TRACE_KERNEL();
    i64 n = (i64) S * Hkv * W;
    GRID_STRIDE(i, n) {
        int c = (int) (i % W);
        i64 sg = i / W;
        int g = (int) (sg % Hkv);
        i64 s = sg / Hkv;
        float acc = 0.0f;
        for (int p = 0; p < splits; p++) acc += part[(i64) p * n + i];
        out[s * oS + (i64) g * oH + c] = acc;
    }
}
