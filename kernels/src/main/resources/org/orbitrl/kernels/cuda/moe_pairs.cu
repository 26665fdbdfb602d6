// The routed experts of a decode step per (token, expert) pair, with full-precision expert matrices
// (bf16 base experts, f32 LoRA factors) that are matrices of their own: the experts' addresses come
// from a table on the device, the pair's expert from ids on the device, so nothing waits for the host
// and the launch can be captured in a graph. (Quantized experts take qgemv.cu's mode 3.)
//
// y[p, n] (+)= scale * (x[p / xDiv] . W_e[n]), e = ids[p], W_e = table[e] ([N, K] row-major, bf16 when
// wBf16 else f32). Block (row chunk, pair p = blockIdx.y) of MP_WARPS warps: x's row staged in shared
// memory (dynamic, K floats); warp w takes rows row0 + w * MP_R + i (i < MP_R) together, its lanes
// striding over K in units of 8 values (bf16: one 16-byte load, f32: two) when vec, else one value;
// then a warp sum. f32 accumulation, in the same order for a row whatever the other pairs of the call.
//
// moe_routed_dense_r1/_r4: the same products grouped by expert on the device, in the same order (below);
// moe_routed_dense_a (f32 rows of a long K, few rows: a LoRA's A) and moe_routed_dense_k (short K: a LoRA's B) sum in
// orders of their own, so a row's bits differ from the others' (none of these runs in exact mode); moe_routed_dense:
// the grouped form that takes an expert's pairs one at a time (the reference of the others, -Dorbit.cuda.routedPairs=single).
// narrow_matmul_f32: moe_routed_dense_a's sums for a plain product (a LoRA's A in an attention projection at decode), or
// over a long K narrow.cuh's split form (DeepSeek V4's hyper-connection mix).
// moe_routed_tc_a/_a2: a LoRA's A over the grouped pairs on tensor cores (three TF32 products; the host's default where
// K is a multiple of 16).

#include "narrow.cuh"

#define ERR_EXPERT_NOT_HELD 5 // a pair routed to an expert this rank does not hold (CudaKernelErrors)
#define MP_R 4 // rows a warp takes at once
#define MP_AHEAD 8 // a lone row's 8-value units a lane loads before it multiplies any (moe_pairs_dense_r1)

template <bool BF16, bool VEC, int R = MP_R>
__device__ __forceinline__ void mp_rows(const float* xs, const void* w, int K, int n0, int N, int lane, float* acc) {
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0.0f;
    if (VEC && R == 1 && !BF16) { // a lone f32 row: MP_AHEAD of the lane's units loaded before any is multiplied
        int units = K / 8;
        const float4* r = (const float4*) ((const float*) w + (i64) (n0 < N ? n0 : N - 1) * K);
        float d = 0.0f;
        for (int u0 = lane; u0 < units; u0 += 32 * MP_AHEAD) {
            float4 a[MP_AHEAD], b[MP_AHEAD];
#pragma unroll
            for (int j = 0; j < MP_AHEAD; j++) {
                int u = u0 + 32 * j;
                if (u < units) {
                    a[j] = r[2 * u];
                    b[j] = r[2 * u + 1];
                }
            }
#pragma unroll
            for (int j = 0; j < MP_AHEAD; j++) {
                int u = u0 + 32 * j;
                if (u < units) { // the order of the loop below: unit by unit, its 8 values in order
                    const float* xv = xs + 8 * u;
                    float wv[8] = {a[j].x, a[j].y, a[j].z, a[j].w, b[j].x, b[j].y, b[j].z, b[j].w};
#pragma unroll
                    for (int q = 0; q < 8; q++) d = fmaf(wv[q], xv[q], d);
                }
            }
        }
        acc[0] = d;
    } else if (VEC) {
        int units = K / 8;
        for (int u = lane; u < units; u += 32) {
            const float* xv = xs + 8 * u;
#pragma unroll
            for (int i = 0; i < R; i++) {
                int n = n0 + i < N ? n0 + i : N - 1;
                float wv[8];
                if (BF16) {
                    uint4 q = ((const uint4*) ((const u16*) w + (i64) n * K))[u];
                    u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        wv[2 * j] = __uint_as_float(words[j] << 16);
                        wv[2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
                    }
                } else {
                    const float4* r = (const float4*) ((const float*) w + (i64) n * K) + 2 * u;
                    float4 a = r[0];
                    float4 b = r[1];
                    wv[0] = a.x; wv[1] = a.y; wv[2] = a.z; wv[3] = a.w;
                    wv[4] = b.x; wv[5] = b.y; wv[6] = b.z; wv[7] = b.w;
                }
                float d = acc[i];
#pragma unroll
                for (int j = 0; j < 8; j++) d = fmaf(wv[j], xv[j], d);
                acc[i] = d;
            }
        }
    } else {
        for (int k = lane; k < K; k += 32) {
            float xv = xs[k];
#pragma unroll
            for (int i = 0; i < R; i++) {
                int n = n0 + i < N ? n0 + i : N - 1;
                float wv = BF16 ? bf16_to_f32(((const u16*) w)[(i64) n * K + k]) : ((const float*) w)[(i64) n * K + k];
                acc[i] = fmaf(wv, xv, acc[i]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = warp_sum(acc[i]);
}

// The block's rows of pair p's product (x row staged in xs by the caller) into y: R rows a warp.
template <int R>
__device__ __forceinline__ void mp_pair(const float* xs, const void* w, int wBf16, int vec, float scale, float* y, int accumulate,
                                        int N, int K, int p, int blk) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int n0 = (blk * MP_WARPS + warp) * R;
    if (n0 >= N) return;
    float acc[R];
    if (wBf16) {
        if (vec) mp_rows<true, true, R>(xs, w, K, n0, N, lane, acc);
        else mp_rows<true, false, R>(xs, w, K, n0, N, lane, acc);
    } else {
        if (vec) mp_rows<false, true, R>(xs, w, K, n0, N, lane, acc);
        else mp_rows<false, false, R>(xs, w, K, n0, N, lane, acc);
    }
    if (lane < R && n0 + lane < N) {
        float v = acc[0];
#pragma unroll
        for (int i = 1; i < R; i++) v = lane == i ? acc[i] : v;
        float* o = y + (i64) p * N + n0 + lane;
        *o = accumulate ? *o + scale * v : scale * v;
    }
}

// Grouped by expert (moe_route's offsets, order and active list): block (row chunk, j-th active expert) takes that
// expert's pairs MR_PAIRS at a time (at most mt, what shared memory holds at this K): their x rows staged together,
// then each warp reads its R rows of W_e once for all of them (R = 1 for a LoRA's A, a few rows of a long K: more
// blocks an expert; R = 4 otherwise). f32 accumulation per lane over K in units of 8 (one value when not vec), then a
// warp sum: the same order for a (pair, row) whatever else the call holds.
#define MR_PAIRS 8

template <int R>
__device__ __forceinline__ void mr_expert(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                                          const unsigned long long* table, int wBf16, int vec, float scale, float* y,
                                          int accumulate, int N, int K, int mt, int* err, float* xs) {
    if ((int) blockIdx.y >= active[0]) return;
    int e = active[1 + blockIdx.y];
    const void* w = (const void*) table[e];
    if (w == 0) { // an expert this rank does not hold
        if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_NOT_HELD, e, -1);
        return;
    }
    int lane = threadIdx.x & 31;
    int n0 = (blockIdx.x * MP_WARPS + (threadIdx.x >> 5)) * R;
    int end = offsets[e + 1];
    for (int c = offsets[e]; c < end; c += mt) {
        int m = min(mt, end - c);
        for (int j = 0; j < m; j++) {
            const float* xr = x + (i64) (order[c + j] / xDiv) * K;
            for (int k = threadIdx.x; k < K; k += blockDim.x) xs[j * K + k] = xr[k];
        }
        __syncthreads();
        if (n0 < N) {
            float acc[R][MR_PAIRS];
#pragma unroll
            for (int i = 0; i < R; i++)
#pragma unroll
                for (int j = 0; j < MR_PAIRS; j++) acc[i][j] = 0.0f;
            if (vec) {
                for (int u = lane; u < K / 8; u += 32) {
#pragma unroll
                    for (int i = 0; i < R; i++) {
                        int n = n0 + i < N ? n0 + i : N - 1;
                        float wv[8];
                        if (wBf16) {
                            uint4 q = ((const uint4*) ((const u16*) w + (i64) n * K))[u];
                            u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
                            for (int t = 0; t < 4; t++) {
                                wv[2 * t] = __uint_as_float(words[t] << 16);
                                wv[2 * t + 1] = __uint_as_float(words[t] & 0xffff0000u);
                            }
                        } else {
                            const float4* rw = (const float4*) ((const float*) w + (i64) n * K) + 2 * u;
                            float4 a = rw[0];
                            float4 b = rw[1];
                            wv[0] = a.x; wv[1] = a.y; wv[2] = a.z; wv[3] = a.w;
                            wv[4] = b.x; wv[5] = b.y; wv[6] = b.z; wv[7] = b.w;
                        }
#pragma unroll
                        for (int j = 0; j < MR_PAIRS; j++) {
                            if (j < m) {
                                const float4* xv = (const float4*) (xs + j * K + 8 * u);
                                float4 a = xv[0];
                                float4 b = xv[1];
                                float d = acc[i][j];
                                d = fmaf(wv[0], a.x, d); d = fmaf(wv[1], a.y, d); d = fmaf(wv[2], a.z, d); d = fmaf(wv[3], a.w, d);
                                d = fmaf(wv[4], b.x, d); d = fmaf(wv[5], b.y, d); d = fmaf(wv[6], b.z, d); d = fmaf(wv[7], b.w, d);
                                acc[i][j] = d;
                            }
                        }
                    }
                }
            } else {
                for (int k = lane; k < K; k += 32) {
#pragma unroll
                    for (int i = 0; i < R; i++) {
                        int n = n0 + i < N ? n0 + i : N - 1;
                        float wv = wBf16 ? bf16_to_f32(((const u16*) w)[(i64) n * K + k]) : ((const float*) w)[(i64) n * K + k];
#pragma unroll
                        for (int j = 0; j < MR_PAIRS; j++) {
                            if (j < m) acc[i][j] = fmaf(wv, xs[j * K + k], acc[i][j]);
                        }
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < R; i++) {
#pragma unroll
                for (int j = 0; j < MR_PAIRS; j++) {
                    if (j < m) {
                        float v = warp_sum(acc[i][j]);
                        if (lane == 0 && n0 + i < N) {
                            float* o = y + (i64) order[c + j] * N + n0 + i;
                            *o = accumulate ? *o + scale * v : scale * v;
                        }
                    }
                }
            }
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_routed_dense_r1(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                        const unsigned long long* table, int wBf16, int vec, float scale, float* y, int accumulate, int N, int K,
                        int mt, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float xs[]; // [mt, K]
    mr_expert<1>(x, xDiv, offsets, order, active, table, wBf16, vec, scale, y, accumulate, N, K, mt, err, xs);
}

extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_routed_dense_r4(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                        const unsigned long long* table, int wBf16, int vec, float scale, float* y, int accumulate, int N, int K,
                        int mt, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float xs[]; // [mt, K]
    mr_expert<4>(x, xDiv, offsets, order, active, table, wBf16, vec, scale, y, accumulate, N, K, mt, err, xs);
}

// The blockIdx.y-th active expert e (the caller checked there is one) and its f32 matrix in table: null for an expert
// this rank does not hold, which a block with report set reports.
__device__ __forceinline__ const float* active_expert(const int* active, const unsigned long long* table, int* err, bool report,
                                                      int& e) {
    e = active[1 + blockIdx.y];
    const float* w = (const float*) table[e];
    if (w == 0 && report && threadIdx.x == 0) report_error(err, ERR_EXPERT_NOT_HELD, e, -1);
    return w;
}

// Grouped by expert (moe_route's offsets / order / active): the pairs of the blockIdx.y-th active expert (which the
// caller checked there is) against row block rb of its matrix in table, y (+)= scale . x . W_e^T; a block with report
// set reports an expert this rank does not hold.
__device__ __forceinline__ void ma_expert(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                                          const unsigned long long* table, float scale, float* y, int accumulate, int N,
                                          int K, int mt, int* err, int rb, bool report, float4* xa) {
    int e;
    const float* w = active_expert(active, table, err, report, e);
    if (w == 0) return;
    const int* pairs = order + offsets[e];
    ma_rows(w, N, K, offsets[e + 1] - offsets[e], mt,
            [&](int i) { return x + (i64) (pairs[i] / xDiv) * K; },
            [&](int i, int n, bool later, float d) {
                float* o = y + (i64) pairs[i] * N + n;
                *o = (accumulate || later ? *o : 0.0f) + scale * d;
            },
            xa, rb, MaNone());
}

// Block (row chunk, j-th active expert): that expert's pairs.
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS, 2)
    moe_routed_dense_a(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                       const unsigned long long* table, float scale, float* y, int accumulate, int N, int K, int mt, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float4 xa[]; // [mt, min(K / 4, MA_PIECES)]: the pass's slices of mt x rows
    if ((int) blockIdx.y >= active[0]) return;
    ma_expert(x, xDiv, offsets, order, active, table, scale, y, accumulate, N, K, mt, err, blockIdx.x, blockIdx.x == 0, xa);
}

// Two such products of the same x and pairs in one launch (the gate's and the up's LoRA A): y_i row p = x[p / xDiv] .
// W_i,e^T for the two tables, the row blocks of the first (N0 rows) then the second's (N1) along blockIdx.x; each the
// sums of moe_routed_dense_a (scale 1, y overwritten).
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS, 2)
    moe_routed_dense_a2(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                        const unsigned long long* table0, float* y0, int N0, const unsigned long long* table1, float* y1,
                        int N1, int K, int mt, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float4 xa[]; // [mt, min(K / 4, MA_PIECES)]
    if ((int) blockIdx.y >= active[0]) return;
    int b0 = (N0 + MP_WARPS - 1) / MP_WARPS;
    bool second = (int) blockIdx.x >= b0; // block-uniform
    int rb = second ? blockIdx.x - b0 : blockIdx.x;
    ma_expert(x, xDiv, offsets, order, active, second ? table1 : table0, 1.0f, second ? y1 : y0, 0, second ? N1 : N0, K, mt,
              err, rb, rb == 0, xa);
}

// The same products on tensor cores (a LoRA's A over the pairs grouped by expert: moe_routed_tc_a, _a2), in three TF32
// products: each f32 value v = hi + lo, hi = v rounded to tf32 (cvt.rna), lo = v - hi (exact in f32; the mma reads its
// top 19 bits), and x . w = xl . wh + xh . wl + xh . wh, f32 accumulation; the lo . lo term (about 2^-22 of each
// product) is left out. Block (32-row slice rb of W, an expert): its 8 warps take the 16-value chunks of K in turn (warp
// w the chunks w, w + 8, ...), TA_CB chunks of W and of x in registers before any is multiplied; each warp's [16 pairs,
// 32 rows] partial sums meet in shared memory and are added in warp order. The pairs 16 at a time (W read again from
// L2 for each further 16). A row's sums depend on its own x row only, in a fixed order: batch-invariant. Needs K % 16
// == 0 and x and the rows of W 16-byte aligned.
//   Fragments (PTX ISA, m16n8k8 .tf32; g = lane / 4, s = lane % 4): A a0 (g, s), a1 (g + 8, s), a2 (g, s + 4), a3
//   (g + 8, s + 4); B b0 (k s, n g), b1 (k s + 4, n g); C c0 c1 (g, 2s, 2s + 1), c2 c3 (g + 8, ...). Lane s's 16-byte
//   piece of a chunk (values 4s .. 4s + 3) feeds the slots s and s + 4 of two k8 products: (.x, .y) the first, (.z, .w)
//   the second, in x and in W alike.
#define TA_CB 3   // chunks of K a warp holds in registers at once
#define TA_RED 40 // a partial sum row's floats in shared memory (32 and a pad)

// (moe_lora_tc.cu's mt_split also rounds lo to tf32; here the mma reads lo's top 19 bits as they are.)
__device__ __forceinline__ void ta_split(float v, u32& hi, u32& lo) {
    hi = tf32_bits(v);
    lo = __float_as_uint(v - __uint_as_float(hi));
}

// acc (n-tile t) += the two k8 products of one chunk: x rows g, g + 8 (xa, xb) against W row g of each n-tile (wv[t]).
__device__ __forceinline__ void ta_chunk(float (*acc)[4], float4 xa, float4 xb, const float4* wv) {
    u32 ah[8], al[8];
    ta_split(xa.x, ah[0], al[0]);
    ta_split(xb.x, ah[1], al[1]);
    ta_split(xa.y, ah[2], al[2]);
    ta_split(xb.y, ah[3], al[3]);
    ta_split(xa.z, ah[4], al[4]);
    ta_split(xb.z, ah[5], al[5]);
    ta_split(xa.w, ah[6], al[6]);
    ta_split(xb.w, ah[7], al[7]);
#pragma unroll
    for (int t = 0; t < 4; t++) {
        u32 bh[4], bl[4];
        ta_split(wv[t].x, bh[0], bl[0]);
        ta_split(wv[t].y, bh[1], bl[1]);
        ta_split(wv[t].z, bh[2], bl[2]);
        ta_split(wv[t].w, bh[3], bl[3]);
        mma_tf32_1688(acc[t], al[0], al[1], al[2], al[3], bh[0], bh[1]);
        mma_tf32_1688(acc[t], ah[0], ah[1], ah[2], ah[3], bl[0], bl[1]);
        mma_tf32_1688(acc[t], ah[0], ah[1], ah[2], ah[3], bh[0], bh[1]);
        mma_tf32_1688(acc[t], al[4], al[5], al[6], al[7], bh[2], bh[3]);
        mma_tf32_1688(acc[t], ah[4], ah[5], ah[6], ah[7], bl[2], bl[3]);
        mma_tf32_1688(acc[t], ah[4], ah[5], ah[6], ah[7], bh[2], bh[3]);
    }
}

// The end of a round of ta_rows / ta_rows_pipe: each warp's partial sums acc of x rows m0 .. m0 + 15 against the block's
// 32 rows of W (its chunks of K) into red (MP_WARPS * 16 * TA_RED floats of shared memory), then out(i, n, d) with d
// their sum in warp order; every thread of the block takes part, and red is free again when it returns.
template <typename Out>
__device__ __forceinline__ void ta_reduce(float (&acc)[4][4], float* red, int count, int m0, int N, int rb, Out out) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int g = lane >> 2;
    int s = lane & 3;
    float* mine = red + warp * 16 * TA_RED;
#pragma unroll
    for (int t = 0; t < 4; t++) {
        *(float2*) (mine + g * TA_RED + 8 * t + 2 * s) = make_float2(acc[t][0], acc[t][1]);
        *(float2*) (mine + (g + 8) * TA_RED + 8 * t + 2 * s) = make_float2(acc[t][2], acc[t][3]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 16 * 32; i += blockDim.x) {
        int r = i >> 5;
        int col = i & 31;
        int n = rb * 32 + col;
        if (r < count - m0 && n < N) {
            float d = 0.0f;
#pragma unroll
            for (int v = 0; v < MP_WARPS; v++) d += red[v * 16 * TA_RED + r * TA_RED + col];
            out(m0 + r, n, d);
        }
    }
    __syncthreads();
}

// Rows rb * 32 .. + 31 of W [N, K] against count x rows (xrow(i) the i-th): out(i, n, d) takes the sum d of x row i and
// W row n. red: MP_WARPS * 16 * TA_RED floats of shared memory.
template <typename XRow, typename Out>
__device__ __forceinline__ void ta_rows(const float* w, int N, int K, int count, XRow xrow, Out out, float* red, int rb) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int g = lane >> 2;
    int s = lane & 3;
    int chunks = K >> 4;
    const float4* wr[4];
    bool wok[4];
#pragma unroll
    for (int t = 0; t < 4; t++) {
        int n = rb * 32 + 8 * t + g;
        wok[t] = n < N;
        wr[t] = (const float4*) (w + (i64) (wok[t] ? n : 0) * K) + s;
    }
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int m0 = 0; m0 < count; m0 += 16) {
        float acc[4][4];
#pragma unroll
        for (int t = 0; t < 4; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
        bool ra = g < count - m0;
        bool rbw = g + 8 < count - m0;
        const float4* xa = (const float4*) xrow(ra ? m0 + g : m0) + s;
        const float4* xb = (const float4*) xrow(rbw ? m0 + g + 8 : m0) + s;
        for (int c0 = warp; c0 < chunks; c0 += MP_WARPS * TA_CB) {
            float4 wv[TA_CB][4], xv[TA_CB][2];
#pragma unroll
            for (int j = 0; j < TA_CB; j++) {
                int c = c0 + MP_WARPS * j;
                bool ok = c < chunks;
#pragma unroll
                for (int t = 0; t < 4; t++) wv[j][t] = ok && wok[t] ? __ldg(wr[t] + 4 * c) : zero;
                xv[j][0] = ok && ra ? __ldg(xa + 4 * c) : zero;
                xv[j][1] = ok && rbw ? __ldg(xb + 4 * c) : zero;
            }
#pragma unroll
            for (int j = 0; j < TA_CB; j++) ta_chunk(acc, xv[j][0], xv[j][1], wv[j]);
        }
        ta_reduce(acc, red, count, m0, N, rb, out);
    }
}

// ta_rows with its loads through shared memory: each lane copies exactly the 16-byte pieces it multiplies (W rows g +
// 8t and x rows g, g + 8 of a chunk, piece s) with cp.async into its warp's TA_ST-deep ring of stages, so TA_ST - 1 chunks
// are in flight while one is multiplied, without holding them in registers. The same products in the same order as
// ta_rows, so the same bits. sm: dynamic shared memory, MP_WARPS * TA_ST * TA_STF floats (the partial sums reuse it).
#define TA_ST 4    // a warp's chunks in flight, plus the one multiplied
#define TA_STF 768 // floats of a stage: W [32 rows][16], then x [16 rows][16]
template <typename XRow, typename Out>
__device__ __forceinline__ void ta_rows_pipe(const float* w, int N, int K, int count, XRow xrow, Out out, float* sm, int rb) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int g = lane >> 2;
    int s = lane & 3;
    int chunks = K >> 4;
    int mine = chunks > warp ? (chunks - warp + MP_WARPS - 1) / MP_WARPS : 0; // this warp's chunks: warp, warp + 8, ...
    const float* wr[4];
    bool wok[4];
#pragma unroll
    for (int t = 0; t < 4; t++) {
        int n = rb * 32 + 8 * t + g;
        wok[t] = n < N;
        wr[t] = w + (i64) (wok[t] ? n : 0) * K + 4 * s;
    }
    float* ring = sm + warp * TA_ST * TA_STF;
    u32 ringAddr = smem_addr(ring);
    u32 wdst = (u32) ((g * 16 + 4 * s) * 4);       // W row g + 8t: + 512 t bytes
    u32 xdst = (u32) ((512 + g * 16 + 4 * s) * 4); // x row g; row g + 8: + 512 bytes
    for (int m0 = 0; m0 < count; m0 += 16) {
        float acc[4][4];
#pragma unroll
        for (int t = 0; t < 4; t++) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;
        bool ra = g < count - m0;
        bool rbw = g + 8 < count - m0;
        const float* xa = xrow(ra ? m0 + g : m0) + 4 * s;
        const float* xb = xrow(rbw ? m0 + g + 8 : m0) + 4 * s;
        auto issue = [&](int i) { // the warp's i-th chunk into stage i % TA_ST
            int c = warp + MP_WARPS * i;
            u32 b = ringAddr + (u32) ((i % TA_ST) * TA_STF * 4);
#pragma unroll
            for (int t = 0; t < 4; t++) cp_async16_zfill(b + wdst + 512u * t, wr[t] + 16 * c, wok[t]);
            cp_async16_zfill(b + xdst, xa + 16 * c, ra);
            cp_async16_zfill(b + xdst + 512u, xb + 16 * c, rbw);
        };
#pragma unroll
        for (int i = 0; i < TA_ST - 1; i++) {
            if (i < mine) issue(i);
            cp_async_commit();
        }
        for (int i = 0; i < mine; i++) {
            if (i + TA_ST - 1 < mine) issue(i + TA_ST - 1); // into the stage multiplied last round (its values are in use)
            cp_async_commit();
            cp_async_wait<TA_ST - 1>(); // this lane's copies of chunk i have landed
            const float* st = ring + (i % TA_ST) * TA_STF;
            float4 wv[4];
#pragma unroll
            for (int t = 0; t < 4; t++) wv[t] = *(const float4*) (st + (g + 8 * t) * 16 + 4 * s);
            float4 x0 = *(const float4*) (st + 512 + g * 16 + 4 * s);
            float4 x1 = *(const float4*) (st + 512 + (g + 8) * 16 + 4 * s);
            ta_chunk(acc, x0, x1, wv);
        }
        cp_async_wait<0>();
        __syncthreads(); // every warp is done with its ring: the partial sums take its memory
        ta_reduce(acc, sm, count, m0, N, rb, out);
    }
}

// ta_rows over the pairs of the blockIdx.y-th active expert: y (+)= scale . x . W_e^T (ma_expert's arguments).
template <bool PIPE>
__device__ __forceinline__ void ta_expert(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                                          const unsigned long long* table, float scale, float* y, int accumulate, int N,
                                          int K, int* err, int rb, bool report, float* red) {
    int e;
    const float* w = active_expert(active, table, err, report, e);
    if (w == 0) return;
    const int* pairs = order + offsets[e];
    auto xrow = [&](int i) { return x + (i64) (pairs[i] / xDiv) * K; };
    auto out = [&](int i, int n, float d) {
        float* o = y + (i64) pairs[i] * N + n;
        *o = (accumulate ? *o : 0.0f) + scale * d;
    };
    if (PIPE) {
        ta_rows_pipe(w, N, K, offsets[e + 1] - offsets[e], xrow, out, red, rb);
    } else {
        ta_rows(w, N, K, offsets[e + 1] - offsets[e], xrow, out, red, rb);
    }
}

// ta_expert for two sets of rows in one launch (the gate's and the up's LoRA A): the 32-row slices of the first set's
// rows, then the second's, along blockIdx.x; scale 1, y overwritten.
template <bool PIPE>
__device__ __forceinline__ void ta_expert2(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                                           const unsigned long long* table0, float* y0, int N0, const unsigned long long* table1,
                                           float* y1, int N1, int K, int* err, float* red) {
    int b0 = (N0 + 31) / 32;
    bool second = (int) blockIdx.x >= b0; // block-uniform
    int rb = second ? blockIdx.x - b0 : blockIdx.x;
    ta_expert<PIPE>(x, xDiv, offsets, order, active, second ? table1 : table0, 1.0f, second ? y1 : y0, 0, second ? N1 : N0,
                    K, err, rb, rb == 0, red);
}

// Block (32-row slice, j-th active expert): that expert's pairs (moe_routed_dense_a's arguments but mt).
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS, 2)
    moe_routed_tc_a(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                    const unsigned long long* table, float scale, float* y, int accumulate, int N, int K, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    __shared__ __align__(16) float red[MP_WARPS * 16 * TA_RED];
    if ((int) blockIdx.y >= active[0]) return;
    ta_expert<false>(x, xDiv, offsets, order, active, table, scale, y, accumulate, N, K, err, blockIdx.x, blockIdx.x == 0, red);
}

// The gate's and the up's LoRA A in one launch (moe_routed_dense_a2's arguments but mt, ta_expert2): each the sums of
// moe_routed_tc_a (scale 1, y overwritten).
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS, 2)
    moe_routed_tc_a2(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                     const unsigned long long* table0, float* y0, int N0, const unsigned long long* table1, float* y1, int N1,
                     int K, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    __shared__ __align__(16) float red[MP_WARPS * 16 * TA_RED];
    if ((int) blockIdx.y >= active[0]) return;
    ta_expert2<false>(x, xDiv, offsets, order, active, table0, y0, N0, table1, y1, N1, K, err, red);
}

// moe_routed_tc_a and _a2 with their loads through shared memory (ta_rows_pipe: the same bits); dynamic shared memory
// MP_WARPS * TA_ST * TA_STF floats.
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS, 2)
    moe_routed_tcp_a(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                     const unsigned long long* table, float scale, float* y, int accumulate, int N, int K, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float tsm[];
    if ((int) blockIdx.y >= active[0]) return;
    ta_expert<true>(x, xDiv, offsets, order, active, table, scale, y, accumulate, N, K, err, blockIdx.x, blockIdx.x == 0, tsm);
}

extern "C" __global__ void __launch_bounds__(32 * MP_WARPS, 2)
    moe_routed_tcp_a2(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                      const unsigned long long* table0, float* y0, int N0, const unsigned long long* table1, float* y1, int N1,
                      int K, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float tsm[];
    if ((int) blockIdx.y >= active[0]) return;
    ta_expert2<true>(x, xDiv, offsets, order, active, table0, y0, N0, table1, y1, N1, K, err, tsm);
}

// y [M, N] = x [M, K] . w^T for f32 x and a few f32 rows of w (a LoRA's A over a decode batch, narrow.cuh's narrow_rows):
// block (row chunk of w along blockIdx.x, mt rows of x along blockIdx.y). With splits > 1, narrow_split's form for a
// long K (blockIdx.x: row chunk and split; part [splits, M, N] its partial sums, tickets a counter per (chunk, row chunk),
// 0 between launches).
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS, 2)
    narrow_matmul_f32(const float* x, const float* w, float* y, int M, int N, int K, int mt, int splits, float* part,
                      int* tickets) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float4 xa[]; // [mt, min(K / 4, MA_PIECES)], with splits [mt, SK_PIECES]
    if (splits > 1) {
        narrow_split(x, w, y, M, N, K, mt, splits, part, tickets, xa);
    } else {
        narrow_rows(x, w, y, M, N, K, mt, blockIdx.x, blockIdx.y, xa);
    }
}

// Up to three such products of the same x in one launch (an attention block's q, k and v LoRA A): narrow3_block's
// blocks, row blocks along blockIdx.x, chunks of mt rows of x along blockIdx.y. With xb (n0 > 0), x rounded to bf16 into
// xb [M, K] too, for the base products that follow (dmma.cu).
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS, 2)
    narrow_matmul3_f32(const float* x, int M, int K, int mt, const float* w0, float* y0, int n0, const float* w1, float* y1,
                       int n1, const float* w2, float* y2, int n2, u16* xb) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float4 xa[]; // [mt, min(K / 4, MA_PIECES)]
    narrow3_block(x, M, K, mt, w0, y0, n0, w1, y1, n1, w2, y2, n2, xb, xa, blockIdx.x, blockIdx.y);
}

// Short K (at most MS_K, a LoRA's B whose K is its rank): a thread a row of W_e and no reduction across lanes; block
// (MS_THREADS-row chunk, j-th active expert) takes the expert's pairs MR_PAIRS at a time, their x rows staged
// together, and reads its row once for all of them (f32 rows in 16-byte loads: the whole row into registers first,
// every load in flight at once). f32 accumulation over k in order.
#define MS_K 64
#define MS_THREADS 128

extern "C" __global__ void __launch_bounds__(MS_THREADS)
    moe_routed_dense_k(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                       const unsigned long long* table, int wBf16, int vec, float scale, float* y, int accumulate, int N, int K,
                       int mt, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    __shared__ float xs[MR_PAIRS * MS_K];
    if ((int) blockIdx.y >= active[0]) return;
    int e = active[1 + blockIdx.y];
    const void* w = (const void*) table[e];
    if (w == 0) {
        if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_NOT_HELD, e, -1);
        return;
    }
    int n = blockIdx.x * MS_THREADS + threadIdx.x;
    int end = offsets[e + 1];
    bool rows4 = vec && !wBf16;
    float4 wv[MS_K / 4]; // the row, when rows4
    if (rows4) {
        const float4* rw = (const float4*) ((const float*) w + (i64) (n < N ? n : 0) * K);
#pragma unroll
        for (int q = 0; q < MS_K / 4; q++) wv[q] = n < N && 4 * q < K ? __ldg(rw + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    for (int c = offsets[e]; c < end; c += MR_PAIRS) {
        int m = min(MR_PAIRS, end - c);
        for (int i = threadIdx.x; i < m * K; i += MS_THREADS) {
            int j = i / K;
            xs[i] = x[(i64) (order[c + j] / xDiv) * K + (i - j * K)];
        }
        __syncthreads();
        if (n < N) {
            float acc[MR_PAIRS];
#pragma unroll
            for (int j = 0; j < MR_PAIRS; j++) acc[j] = 0.0f;
            if (rows4) {
#pragma unroll
                for (int q = 0; q < MS_K / 4; q++) {
                    if (4 * q >= K) break;
                    float4 a = wv[q];
#pragma unroll
                    for (int j = 0; j < MR_PAIRS; j++) {
                        if (j < m) { // rows past m were not staged
                            const float* xj = xs + j * K + 4 * q;
                            float d = acc[j];
                            d = fmaf(a.x, xj[0], d); d = fmaf(a.y, xj[1], d); d = fmaf(a.z, xj[2], d); d = fmaf(a.w, xj[3], d);
                            acc[j] = d;
                        }
                    }
                }
            } else {
                for (int k = 0; k < K; k++) {
                    float wk = wBf16 ? bf16_to_f32(((const u16*) w)[(i64) n * K + k]) : ((const float*) w)[(i64) n * K + k];
#pragma unroll
                    for (int j = 0; j < MR_PAIRS; j++) {
                        if (j < m) acc[j] = fmaf(wk, xs[j * K + k], acc[j]); // rows past m were not staged
                    }
                }
            }
#pragma unroll
            for (int j = 0; j < MR_PAIRS; j++) {
                if (j < m) {
                    float* o = y + (i64) order[c + j] * N + n;
                    *o = accumulate ? *o + scale * acc[j] : scale * acc[j];
                }
            }
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_routed_dense(const float* x, int xDiv, const int* offsets, const int* order, const int* active,
                     const unsigned long long* table, int wBf16, int vec, float scale, float* y, int accumulate, int N, int K,
                     int E, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float xs[]; // [K]
    if ((int) blockIdx.y >= active[0]) return;
    int e = active[1 + blockIdx.y];
    const void* w = (const void*) table[e];
    if (w == 0) { // an expert this rank does not hold
        if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_NOT_HELD, e, -1);
        return;
    }
    for (int i = offsets[e]; i < offsets[e + 1]; i++) {
        int p = order[i];
        const float* xr = x + (i64) (p / xDiv) * K;
        for (int k = threadIdx.x; k < K; k += blockDim.x) xs[k] = xr[k];
        __syncthreads();
        mp_pair<MP_R>(xs, w, wBf16, vec, scale, y, accumulate, N, K, p, blockIdx.x);
        __syncthreads();
    }
}

// CP: x's row copied into xs by every thread's 16-byte asynchronous copies, issued before the expert id is read (x
// 16-byte aligned, K a multiple of 4), so that its round trip overlaps the id's and the table's; the plain loop stores
// each value right after its load, a round trip for each of a thread's K / blockDim values. The same xs, the same sums.
template <int R, bool CP = false>
__device__ __forceinline__ void mp_dense(const float* x, int xDiv, const int* ids, const unsigned long long* table, int wBf16,
                                         int vec, float scale, float* y, int accumulate, int N, int K, int E, int* err, float* xs,
                                         int blk) {
    int p = blockIdx.y;
    if (CP) {
        u32 xa = smem_addr(xs);
        const float4* x4 = (const float4*) (x + (i64) (p / xDiv) * K);
        for (int c = threadIdx.x; c < K / 4; c += blockDim.x) cp_async16_zfill(xa + 16 * c, x4 + c, true);
        cp_async_commit();
    }
    int e = ids[p];
    const void* w = e >= 0 && e < E ? (const void*) table[e] : (const void*) 0;
    if (w == 0) { // the whole block leaves
        if (CP) cp_async_wait<0>();
        if (blk == 0 && threadIdx.x == 0) report_error(err, e >= 0 && e < E ? ERR_EXPERT_NOT_HELD : ERR_EXPERT_OUT_OF_RANGE, e, p);
        return;
    }
    const float* xr = x + (i64) (p / xDiv) * K;
    if (CP) {
        cp_async_wait<0>();
    } else {
        for (int k = threadIdx.x; k < K; k += blockDim.x) xs[k] = xr[k];
    }
    __syncthreads();
    mp_pair<R>(xs, w, wBf16, vec, scale, y, accumulate, N, K, p, blk);
}

// MP_R rows a warp: blocks of MP_WARPS * MP_R rows.
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_pairs_dense(const float* x, int xDiv, const int* ids, const unsigned long long* table, int wBf16, int vec, float scale,
                    float* y, int accumulate, int N, int K, int E, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float xs[]; // [K]
    mp_dense<MP_R>(x, xDiv, ids, table, wBf16, vec, scale, y, accumulate, N, K, E, err, xs, blockIdx.x);
}

// A row a warp (blocks of MP_WARPS rows: four times the blocks, for few rows of a long K, a LoRA's A over few pairs);
// a row's sum in the same order as moe_pairs_dense's.
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_pairs_dense_r1(const float* x, int xDiv, const int* ids, const unsigned long long* table, int wBf16, int vec, float scale,
                       float* y, int accumulate, int N, int K, int E, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float xs[]; // [K]
    mp_dense<1>(x, xDiv, ids, table, wBf16, vec, scale, y, accumulate, N, K, E, err, xs, blockIdx.x);
}

// Two such products of the same x and pairs in one launch (the gate's and the up's LoRA A at few pairs): f32 rows,
// vec, scale 1, y overwritten; the row blocks of table0's experts, then table1's, along blockIdx.x; each row's sum
// that of moe_pairs_dense_r1.
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_pairs_dense_r1x2(const float* x, int xDiv, const int* ids, const unsigned long long* table0, float* y0, int N0,
                         const unsigned long long* table1, float* y1, int N1, int K, int E, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float xs[]; // [K]
    int b0 = (N0 + MP_WARPS - 1) / MP_WARPS;
    if ((int) blockIdx.x < b0) {
        mp_dense<1>(x, xDiv, ids, table0, 0, 1, 1.0f, y0, 0, N0, K, E, err, xs, blockIdx.x);
    } else {
        mp_dense<1>(x, xDiv, ids, table1, 0, 1, 1.0f, y1, 0, N1, K, E, err, xs, blockIdx.x - b0);
    }
}

// moe_pairs_dense_r1 and moe_pairs_dense_r1x2 with x's row staged by asynchronous copies issued before the expert id is
// read (mp_dense's CP; x 16-byte aligned, K a multiple of 4): the same sums, the same bits.
extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_pairs_dense_r1_cp(const float* x, int xDiv, const int* ids, const unsigned long long* table, int wBf16, int vec,
                          float scale, float* y, int accumulate, int N, int K, int E, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float xs[]; // [K]
    mp_dense<1, true>(x, xDiv, ids, table, wBf16, vec, scale, y, accumulate, N, K, E, err, xs, blockIdx.x);
}

extern "C" __global__ void __launch_bounds__(32 * MP_WARPS)
    moe_pairs_dense_r1x2_cp(const float* x, int xDiv, const int* ids, const unsigned long long* table0, float* y0, int N0,
                            const unsigned long long* table1, float* y1, int N1, int K, int E, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float xs[]; // [K]
    int b0 = (N0 + MP_WARPS - 1) / MP_WARPS;
    if ((int) blockIdx.x < b0) {
        mp_dense<1, true>(x, xDiv, ids, table0, 0, 1, 1.0f, y0, 0, N0, K, E, err, xs, blockIdx.x);
    } else {
        mp_dense<1, true>(x, xDiv, ids, table1, 0, 1, 1.0f, y1, 0, N1, K, E, err, xs, blockIdx.x - b0);
    }
}
