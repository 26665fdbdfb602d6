// Dense bf16-weight GEMV for few rows of x (f32 x and y, f32 accumulation), with the work split of
// qgemv.cu: a block of W warps computes RB = 32 / KQ * R consecutive output rows over the whole of
// K; a lane is (row lane rl, k lane kq), takes R rows rl, rl + 32 / KQ, ... and the 16-byte loads
// (8 weights each) kq + KQ * (warp + i * W) of them; the loads of U steps are issued before any is used,
// the x values of a step are the same for all row lanes, and sums are reduced over the k lanes with
// shuffles, then over the warps through shared memory.

#include "narrow.cuh"

#define BG_WARPS 8 // most warps of a block
// Per x-row chunk MT: k lanes of a warp (KQ), rows of a lane (R), steps whose loads are issued
// together (U), blocks an SM must hold at once (MINB). A block computes 32 / KQ * R rows.
#ifndef BG_KQ_1
#define BG_KQ_1 8
#endif
#ifndef BG_R_1
#define BG_R_1 2
#endif
#ifndef BG_U_1
#define BG_U_1 2
#endif
#ifndef BG_MINB_1
#define BG_MINB_1 3
#endif
#ifndef BG_KQ_4
#define BG_KQ_4 4
#endif
#ifndef BG_R_4
#define BG_R_4 4
#endif
#ifndef BG_U_4
#define BG_U_4 2
#endif
#ifndef BG_MINB_4
#define BG_MINB_4 1
#endif
#ifndef BG_KQ_8
#define BG_KQ_8 8
#endif
#ifndef BG_R_8
#define BG_R_8 2
#endif
#ifndef BG_U_8
#define BG_U_8 2
#endif
#ifndef BG_MINB_8
#define BG_MINB_8 2
#endif
#ifndef BG_KQ_16
#define BG_KQ_16 8
#endif
#ifndef BG_R_16
#define BG_R_16 1
#endif
#ifndef BG_U_16
#define BG_U_16 1
#endif
#ifndef BG_MINB_16
#define BG_MINB_16 2
#endif

// acc[r][m] += the 8 weights q[r] (bf16) times x rows x + m*K from element k.
template <int MT, int R>
__device__ __forceinline__ void bg_load(const uint4* q, const float* x, int mcount, int K, int k, float (*acc)[MT]) {
    float wv[R][8];
#pragma unroll
    for (int r = 0; r < R; r++) {
        u32 words[4] = {q[r].x, q[r].y, q[r].z, q[r].w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            wv[r][2 * j] = __uint_as_float(words[j] << 16);
            wv[r][2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
        }
    }
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (m < mcount) {
            const float4* xp = (const float4*) (x + (i64) m * K + k);
            float4 u = xp[0];
            float4 v = xp[1];
            float a[8] = {u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w};
#pragma unroll
            for (int r = 0; r < R; r++) {
                float d = acc[r][m];
#pragma unroll
                for (int i = 0; i < 8; i++) d = fmaf(wv[r][i], a[i], d);
                acc[r][m] = d;
            }
        }
    }
}

// Dense bf16 weights [N, K] (K a multiple of 8), f32 x [M, K], f32 y [M, N], rows of x MT at a time.
// accumulate: y += x . w^T (a residual add folded into the product).
// With lo (not null), a low-rank term is added to each output: y[m, n] = sum + s * (sum over j < r, in order, of
// lo[m, j] * b[n, j]), lo [M, r] and b [N, r] f32 (a LoRA's x . A^T and its B; r a multiple of 4, both 16-byte
// aligned). blk: the block's index among the product's row blocks. With done, the terms wait for need blocks of the
// launch that make lo (wait_count).
template <int MT, int KQ, int R, int U>
__device__ __forceinline__ void bgemv(const float* __restrict__ x, int M, const uint4* __restrict__ w, float* y, int N, int K,
                                      int accumulate, int blk = 0, const float* lo = nullptr, const float* bt = nullptr,
                                      float s = 0.0f, int r = 0, const int* done = nullptr, int need = 0) {
    constexpr int RL = 32 / KQ; // row lanes of a warp
    constexpr int RB = RL * R;  // rows of the block
    __shared__ float red[BG_WARPS][RB * MT]; // per warp: [rows of the block, x rows of the chunk]
    int G = K / 8;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int W = blockDim.x >> 5;
    int rl = lane % RL;
    int kq = lane / RL;
    int row0 = blk * RB;
    i64 grow[R]; // weight rows (clamped inside the matrix; rows past N are computed, not written)
#pragma unroll
    for (int r = 0; r < R; r++) {
        int n = row0 + rl + RL * r;
        grow[r] = n < N ? n : N - 1;
    }
    int S = W * KQ; // loads a block step covers
    for (int c0 = 0; c0 < M; c0 += MT) {
        int mcount = M - c0 < MT ? M - c0 : MT;
        const float* xc = x + (i64) c0 * K;
        float acc[R][MT];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int m = 0; m < MT; m++) acc[r][m] = 0.0f;
        int g = warp * KQ + kq;
        for (; g < G; g += U * S) { // the loads of U steps (those inside the row) are issued before any is used
            uint4 q[U][R];
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (u == 0 || g + u * S < G) q[u][r] = ld_stream(w + grow[r] * G + g + u * S);
#pragma unroll
            for (int u = 0; u < U; u++)
                if (u == 0 || g + u * S < G) bg_load<MT, R>(q[u], xc, mcount, K, (g + u * S) * 8, acc);
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
#pragma unroll
            for (int m = 0; m < MT; m++) {
                float v = acc[r][m];
#pragma unroll
                for (int o = RL; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
                if (kq == 0) red[warp][(rl + RL * r) * MT + m] = v;
            }
        }
        if (lo != nullptr && done != nullptr && c0 == 0 && threadIdx.x == 0) wait_count(done, need);
        __syncthreads();
        for (int i = threadIdx.x; i < RB * MT; i += blockDim.x) {
            int row = i / MT;
            int m = i % MT;
            float v = 0.0f;
            for (int ww = 0; ww < W; ww++) v += red[ww][i];
            if (row0 + row < N && m < mcount) {
                if (lo != nullptr) v += s * lora_dot<4>(lo + (i64) (c0 + m) * r, bt + (i64) (row0 + row) * r, r);
                float* o = y + (i64) (c0 + m) * N + row0 + row;
                *o = accumulate ? *o + v : v;
            }
        }
        __syncthreads();
    }
}

#define BG_KERNEL(MT)                                                                                                  \
    extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, BG_MINB_##MT)                                          \
        bgemv_m##MT(const float* x, int M, const uint4* w, float* y, int N, int K, int accumulate) {                    \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        bgemv<MT, BG_KQ_##MT, BG_R_##MT, BG_U_##MT>(x, M, w, y, N, K, accumulate, blockIdx.x);                         \
    }
BG_KERNEL(1)
BG_KERNEL(4)
BG_KERNEL(8)
BG_KERNEL(16)

// Up to three products of the same x with their low-rank terms in one launch (an attention block's q, k and v with their
// LoRAs, or o with its LoRA, at few rows of x): y_i = x . w_i^T + s_i * lo_i . b_i^T for the i with n_i > 0, the row
// blocks of w_0, then w_1's, then w_2's along blockIdx.x, each bgemv's sums; lo_i null: no term.
#define BG_LR_ARGS(I) const uint4 *w##I, float *y##I, int n##I, const float *lo##I, const float *bt##I, float s##I, int r##I
#define BG_LR_PASS(I) w##I, y##I, n##I, lo##I, bt##I, s##I, r##I

// Row block rb of bgemv_lr's products; done, need: bgemv's wait for lo.
template <int MT>
__device__ __forceinline__ void bg_lr_block(const float* x, int M, int K, BG_LR_ARGS(0), BG_LR_ARGS(1), BG_LR_ARGS(2), int rb,
                                            const int* done, int need) {
    constexpr int KQ = MT == 1 ? BG_KQ_1 : MT == 4 ? BG_KQ_4 : MT == 8 ? BG_KQ_8 : BG_KQ_16;
    constexpr int R = MT == 1 ? BG_R_1 : MT == 4 ? BG_R_4 : MT == 8 ? BG_R_8 : BG_R_16;
    constexpr int U = MT == 1 ? BG_U_1 : MT == 4 ? BG_U_4 : MT == 8 ? BG_U_8 : BG_U_16;
    constexpr int RB = 32 / KQ * R;
    int nb0 = (n0 + RB - 1) / RB;
    int nb1 = (n1 + RB - 1) / RB;
    if (rb < nb0) {
        bgemv<MT, KQ, R, U>(x, M, w0, y0, n0, K, 0, rb, lo0, bt0, s0, r0, done, need);
    } else if (rb < nb0 + nb1) {
        bgemv<MT, KQ, R, U>(x, M, w1, y1, n1, K, 0, rb - nb0, lo1, bt1, s1, r1, done, need);
    } else {
        bgemv<MT, KQ, R, U>(x, M, w2, y2, n2, K, 0, rb - nb0 - nb1, lo2, bt2, s2, r2, done, need);
    }
}

#define BG_LR_KERNEL(MT)                                                                                               \
    extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, BG_MINB_##MT)                                          \
        bgemv_lr_m##MT(const float* x, int M, int K, BG_LR_ARGS(0), BG_LR_ARGS(1), BG_LR_ARGS(2)) {                    \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        bg_lr_block<MT>(x, M, K, BG_LR_PASS(0), BG_LR_PASS(1), BG_LR_PASS(2), blockIdx.x, nullptr, 0);                 \
    }
BG_LR_KERNEL(1)
BG_LR_KERNEL(4)
BG_LR_KERNEL(8)
BG_LR_KERNEL(16)

// bgemv_lr with its terms' lo made in the same launch: blocks b < aBlocks * aChunks are narrow_matmul3_f32's (row block b
// % aBlocks, chunk b / aBlocks of amt rows of x: aw_i and ay_i, the terms' A and lo packed to the front as that launch
// takes them), the others bgemv_lr's row blocks, whose terms wait for all of those (flags[0] counts the A blocks done,
// flags[1] the row blocks done, the last of which zeroes both: zero between launches; each row block waits, terms or
// not, before it counts). The bits of narrow_matmul3_f32 and then bgemv_lr, one launch instead of two: at a few rows
// each is a few microseconds of round trips, and the A products now run beside the base products. 32 * BG_WARPS
// threads (narrow's MP_WARPS warps); dynamic shared memory narrow_matmul3_f32's.
#define BG_LRA_KERNEL(MT, MINB)                                                                                        \
    extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, MINB)                                                  \
        bgemv_lra_m##MT(const float* x, int M, int K, BG_LR_ARGS(0), BG_LR_ARGS(1), BG_LR_ARGS(2), const float* aw0,   \
                        float* ay0, int an0, const float* aw1, float* ay1, int an1, const float* aw2, float* ay2,      \
                        int an2, int aBlocks, int aChunks, int amt, int* flags) {                                     \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        int nA = aBlocks * aChunks;                                                                                    \
        if ((int) blockIdx.x < nA) {                                                                                   \
            extern __shared__ float4 xa[];                                                                             \
            narrow3_block(x, M, K, amt, aw0, ay0, an0, aw1, ay1, an1, aw2, ay2, an2, (u16*) 0, xa,                     \
                          (int) blockIdx.x % aBlocks, (int) blockIdx.x / aBlocks);                                     \
            __threadfence();                                                                                           \
            __syncthreads();                                                                                           \
            if (threadIdx.x == 0) atomicAdd(flags, 1);                                                                 \
            return;                                                                                                    \
        }                                                                                                              \
        bg_lr_block<MT>(x, M, K, BG_LR_PASS(0), BG_LR_PASS(1), BG_LR_PASS(2), blockIdx.x - nA, flags, nA);             \
        if (threadIdx.x == 0) { /* bgemv ends at a barrier: every thread is past its terms */                         \
            wait_count(flags, nA);                                                                                     \
            if (atomicAdd(flags + 1, 1) == (int) gridDim.x - nA - 1) {                                                 \
                flags[0] = 0;                                                                                          \
                flags[1] = 0;                                                                                          \
            }                                                                                                          \
        }                                                                                                              \
    }
BG_LRA_KERNEL(1, 2) // two blocks an SM where bgemv_lr_m1 takes three: the A products' loads fit in registers
BG_LRA_KERNEL(4, BG_MINB_4)
BG_LRA_KERNEL(8, BG_MINB_8)
BG_LRA_KERNEL(16, BG_MINB_16)

// y (+)= rmsnorm(x) . w^T for M <= MT rows of x (MT = 4; one row: bgemv_norm1 below): every block stages the normalized rows
// nw[k] * (x[k] / sqrt(mean(x^2) + eps)) (rmsnorm_f32's expression; nw f32 or bf16) in shared memory,
// then computes its rows of the product as bgemv does: a decode step's norm folded into the product
// that reads it. Dynamic shared memory M * K floats.
#define BG_NORM_KERNEL(MT)                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, BG_MINB_##MT)                                          \
        bgemv_norm_m##MT(const float* x, int M, const void* nw, int nwBf16, float eps, const uint4* w, float* y, int N,  \
                         int K, int accumulate) {                                                                     \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        extern __shared__ float xs[];                                                                                  \
        __shared__ float sh[32];                                                                                       \
        bg_stage_norm(x, M, nw, nwBf16, eps, K, xs, sh);                                                               \
        bgemv<MT, BG_KQ_##MT, BG_R_##MT, BG_U_##MT>(xs, M, w, y, N, K, accumulate, blockIdx.x);                       \
    }

// xs[m * K + k] = nw[k] * (x[m, k] / sqrt(mean(x[m]^2) + eps)) for the M rows, by the whole block; ends
// with a barrier.
__device__ __forceinline__ void bg_stage_norm(const float* x, int M, const void* nw, int nwBf16, float eps, int K, float* xs, float* sh) {
    for (int m = 0; m < M; m++) {
        const float* xr = x + (i64) m * K;
        float inv = row_rms_inv(xr, K, eps, sh);
        for (int i = threadIdx.x; i < K; i += blockDim.x) {
            float wi = nwBf16 ? bf16_to_f32(((const u16*) nw)[i]) : ((const float*) nw)[i];
            xs[m * K + i] = wi * (xr[i] * inv);
        }
    }
    __syncthreads();
}

// A lane's sums of its R rows (acc) over the k lanes with shuffles, stored by k lane 0 in red[warp] (bgemv's order); the
// caller's barrier then makes them visible to the threads that add up the warps.
template <int RL, int R>
__device__ __forceinline__ void bg_lane_rows(const float* acc, float (*red)[RL * R], int warp, int rl, int kq) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        float v = acc[r];
#pragma unroll
        for (int o = RL; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (kq == 0) red[warp][rl + RL * r] = v;
    }
}

// bgemv_m1 for one row of x with every weight load of a lane issued before pdl_enter(): the same lanes, steps and
// sums (so the same bits), all of a lane's steps (at most BGP_STEPS: K <= BGP_STEPS * 8 * BG_KQ_1 * warps) held in
// registers. Launched as a programmatic dependent, its blocks stream their rows of the frozen weights while the kernels
// before it run (attention_combine's pdl_enter_early lets the o product start during the attention), and only x waits
// for them. The weights are the only pointers these kernels read before the wait (DependentKernels' prologue kernels);
// two blocks an SM.
#define BGP_STEPS 8

// A block's weight loads (rows row0 .. row0 + RB of w [N, K]): bgp_load before the wait, bgp_finish after.
struct BgPre {
    uint4 q[BGP_STEPS][BG_R_1];
};

__device__ __forceinline__ void bgp_load(BgPre& p, const uint4* __restrict__ w, int N, int K, int row0) {
    constexpr int RL = 32 / BG_KQ_1;
    int G = K / 8;
    int lane = threadIdx.x & 31;
    int S = (blockDim.x >> 5) * BG_KQ_1;
    int g0 = (threadIdx.x >> 5) * BG_KQ_1 + lane / RL;
#pragma unroll
    for (int u = 0; u < BGP_STEPS; u++) {
#pragma unroll
        for (int r = 0; r < BG_R_1; r++) {
            int n = row0 + lane % RL + RL * r;
            i64 grow = n < N ? n : N - 1; // rows past N are computed, not written
            if (g0 + u * S < G) p.q[u][r] = ld_stream(w + grow * G + g0 + u * S);
        }
    }
}

// y[row0 ..] (+)= the block's rows times x (one row of K), bgemv's sums and reduction.
__device__ __forceinline__ void bgp_finish(const BgPre& p, const float* x, float* y, int N, int K, int row0, int accumulate) {
    constexpr int KQ = BG_KQ_1;
    constexpr int R = BG_R_1;
    constexpr int RL = 32 / KQ;
    constexpr int RB = RL * R;
    __shared__ float red[BG_WARPS][RB];
    int G = K / 8;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int W = blockDim.x >> 5;
    int rl = lane % RL;
    int kq = lane / RL;
    int S = W * KQ;
    int g0 = warp * KQ + kq;
    float acc[R][1];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r][0] = 0.0f;
#pragma unroll
    for (int u = 0; u < BGP_STEPS; u++)
        if (g0 + u * S < G) bg_load<1, R>(p.q[u], x, 1, K, (g0 + u * S) * 8, acc);
    bg_lane_rows<RL, R>(&acc[0][0], red, warp, rl, kq);
    __syncthreads();
    for (int i = threadIdx.x; i < RB; i += blockDim.x) {
        float v = 0.0f;
        for (int ww = 0; ww < W; ww++) v += red[ww][i];
        if (row0 + i < N) {
            float* o = y + row0 + i;
            *o = accumulate ? *o + v : v;
        }
    }
}

extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, 2)
    bgemv_pre1(const float* x, const uint4* __restrict__ w, float* y, int N, int K, int accumulate) {
    ORBIT_TRACE_KERNEL();
    BgPre p;
    int row0 = blockIdx.x * (32 / BG_KQ_1 * BG_R_1);
    bgp_load(p, w, N, K, row0);
    pdl_enter();
    bgp_finish(p, x, y, N, K, row0, accumulate);
}

// bgemv_pre1 with x staged in shared memory after the wait (dynamic, K floats; x 16-byte aligned): every thread's 16-byte
// asynchronous copies of x issued together, one round trip, then bgp_finish's steps over the staged row. In bgemv_pre1's
// SASS (nvcc 13.0, sm_90) each step's fused multiply-adds use its x loads right after issuing them, so that a lane's
// steps (8 at K 4096) read x in as many round trips one after another. The same sums of the same values, so the same
// bits.
extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, 2)
    bgemv_pre1_xs(const float* x, const uint4* __restrict__ w, float* y, int N, int K, int accumulate) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ __align__(16) float bgx[]; // [K]
    BgPre p;
    int row0 = blockIdx.x * (32 / BG_KQ_1 * BG_R_1);
    bgp_load(p, w, N, K, row0);
    pdl_enter();
    u32 xa = smem_addr(bgx);
    for (int c = threadIdx.x; c < K / 4; c += blockDim.x) cp_async16_zfill(xa + 16 * c, (const float4*) x + c, true);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    bgp_finish(p, bgx, y, N, K, row0, accumulate);
}

// bgemv_norm_lr_m1 without terms (an attention block's q, k and v from its input, the norm folded in) in bgemv_pre1's
// form: the block's rows of w0, w1 or w2 (the row blocks of w0, then w1's, then w2's along blockIdx.x; n_i 0: none)
// loaded before the wait, x's norm staged after it (bg_stage_norm; dynamic shared memory K floats). The bits of
// bgemv_norm_lr_m1.
extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, 2)
    bgemv_norm_pre1(const float* x, int K, const void* nw, int nwBf16, float eps, const uint4* __restrict__ w0, float* y0,
                    int n0, const uint4* __restrict__ w1, float* y1, int n1, const uint4* __restrict__ w2, float* y2, int n2) {
    ORBIT_TRACE_KERNEL();
    constexpr int RB = 32 / BG_KQ_1 * BG_R_1;
    int nb0 = (n0 + RB - 1) / RB;
    int nb1 = (n1 + RB - 1) / RB;
    int rb = blockIdx.x;
    int which = rb < nb0 ? 0 : rb < nb0 + nb1 ? 1 : 2;
    int row0 = (which == 0 ? rb : which == 1 ? rb - nb0 : rb - nb0 - nb1) * RB;
    int N = which == 0 ? n0 : which == 1 ? n1 : n2;
    BgPre p;
    bgp_load(p, which == 0 ? w0 : which == 1 ? w1 : w2, N, K, row0);
    pdl_enter();
    extern __shared__ float xs[];
    __shared__ float sh[32];
    bg_stage_norm(x, 1, nw, nwBf16, eps, K, xs, sh);
    bgp_finish(p, xs, which == 0 ? y0 : which == 1 ? y1 : y2, N, K, row0, 0);
}

#ifndef BGN_KQ
#define BGN_KQ 8 // one-row norm GEMV: k lanes of a warp
#endif
#ifndef BGN_R
#define BGN_R 4  // rows of a lane
#endif
#ifndef BGN_U
#define BGN_U 2  // steps whose loads are issued together
#endif

// y (+)= rmsnorm(x) . w^T for one row of x, bgemv's split with its first steps' weight loads issued
// before the norm is computed and staged (dynamic shared memory K floats), and each next batch of
// loads issued before the current one is used.
extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, 3)
    bgemv_norm1(const float* x, const void* nw, int nwBf16, float eps, const uint4* w, float* y, int N, int K, int accumulate) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    constexpr int KQ = BGN_KQ;
    constexpr int R = BGN_R;
    constexpr int U = BGN_U;
    constexpr int RL = 32 / KQ;
    constexpr int RB = RL * R;
    extern __shared__ float xs[];
    __shared__ float sh[32];
    __shared__ float red[BG_WARPS][RB];
    int G = K / 8;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int W = blockDim.x >> 5;
    int rl = lane % RL;
    int kq = lane / RL;
    int row0 = blockIdx.x * RB;
    i64 grow[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int n = row0 + rl + RL * r;
        grow[r] = n < N ? n : N - 1;
    }
    int S = W * KQ;
    int g = warp * KQ + kq;
    uint4 q[U][R];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < R; r++)
            if (g + u * S < G) q[u][r] = w[grow[r] * G + g + u * S];
    bg_stage_norm(x, 1, nw, nwBf16, eps, K, xs, sh);
    float acc[R][1];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r][0] = 0.0f;
    while (g < G) {
        uint4 nq[U][R];
        int gn = g + U * S;
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++)
                if (gn + u * S < G) nq[u][r] = w[grow[r] * G + gn + u * S];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (g + u * S < G) bg_load<1, R>(q[u], xs, 1, K, (g + u * S) * 8, acc);
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++) q[u][r] = nq[u][r];
        g = gn;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        float v = acc[r][0];
#pragma unroll
        for (int o = RL; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (kq == 0) red[warp][rl + RL * r] = v;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < RB; i += blockDim.x) {
        float v = 0.0f;
        for (int ww = 0; ww < W; ww++) v += red[ww][i];
        if (row0 + i < N) {
            float* o = y + row0 + i;
            *o = accumulate ? *o + v : v;
        }
    }
}

BG_NORM_KERNEL(4)

// bgemv_lr without terms after the norm of bgemv_norm_m*: every block stages the M normalized rows of x
// (bg_stage_norm; dynamic shared memory M * K floats) and computes its row block of up to three products of them
// (an attention block's q, k and v at a decode step: the block's input norm folded into its projections).
#define BG_NORM_LR_KERNEL(MT)                                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, BG_MINB_##MT)                                          \
        bgemv_norm_lr_m##MT(const float* x, int M, int K, const void* nw, int nwBf16, float eps, BG_LR_ARGS(0),        \
                            BG_LR_ARGS(1), BG_LR_ARGS(2)) {                                                            \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        extern __shared__ float xs[];                                                                                  \
        __shared__ float sh[32];                                                                                       \
        bg_stage_norm(x, M, nw, nwBf16, eps, K, xs, sh);                                                               \
        bg_lr_block<MT>(xs, M, K, BG_LR_PASS(0), BG_LR_PASS(1), BG_LR_PASS(2), blockIdx.x, nullptr, 0);                \
    }
BG_NORM_LR_KERNEL(1) // one row: at 8 rows each block's 64 KiB of staged rows cost more than the norm's own launch

// bgemv_norm_lr_m1's products with the norm's scale applied to the totals: y_i[n] = inv * sum over k of w_i[n, k] *
// (nw[k] * x[k]), inv = 1 / sqrt(mean(x^2) + eps), where bgemv_norm_lr_m1 multiplies the staged row nw * (x * inv).
// Nothing is staged: a lane multiplies its weights with nw * x as it reads x (through L1, as bgemv reads x), and the
// lanes of row lane 0, which between them read each x value once, sum its squares beside; the block adds those up with
// the rows' sums. A block's weight loads so wait for nothing, where staging the normed row first took the x and nw
// round trips and a block reduction. The same products to rounding (the scale moves from each term to the total).
// One step of bgemv_ns1 for a lane: its R rows' 8 weights q (bf16) at element k times nw * x there, into acc; the lanes
// of row lane 0 (rl) add x's squares to ss.
template <int R>
__device__ __forceinline__ void bgns_step(const uint4* q, const float* __restrict__ x, const void* nw, int nwBf16, int k, int rl,
                                          float* acc, float& ss) {
    const float4* xp = (const float4*) (x + k);
    float4 x0 = xp[0];
    float4 x1 = xp[1];
    float a[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    float nv[8];
    if (nwBf16) {
        uint4 nb = *(const uint4*) ((const u16*) nw + k);
        u32 words[4] = {nb.x, nb.y, nb.z, nb.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            nv[2 * j] = __uint_as_float(words[j] << 16);
            nv[2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
        }
    } else {
        const float4* np = (const float4*) ((const float*) nw + k);
        float4 n0 = np[0];
        float4 n1 = np[1];
        nv[0] = n0.x, nv[1] = n0.y, nv[2] = n0.z, nv[3] = n0.w;
        nv[4] = n1.x, nv[5] = n1.y, nv[6] = n1.z, nv[7] = n1.w;
    }
    if (rl == 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) ss = fmaf(a[i], a[i], ss);
    }
#pragma unroll
    for (int i = 0; i < 8; i++) a[i] *= nv[i];
#pragma unroll
    for (int r = 0; r < R; r++) {
        u32 words[4] = {q[r].x, q[r].y, q[r].z, q[r].w};
        float d = acc[r];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            d = fmaf(__uint_as_float(words[j] << 16), a[2 * j], d);
            d = fmaf(__uint_as_float(words[j] & 0xffff0000u), a[2 * j + 1], d);
        }
        acc[r] = d;
    }
}

// The end of bgemv_ns1: the lanes' sums over the k lanes and the warps, x's squares over the block, and each total times
// 1 / sqrt(mean(x^2) + eps) into y[row0 ..].
template <int KQ, int R>
__device__ __forceinline__ void bgns_finish(const float* acc, float ss, float eps, float* y, int N, int K, int row0) {
    constexpr int RL = 32 / KQ;
    constexpr int RB = RL * R;
    __shared__ float red[BG_WARPS][RB];
    __shared__ float rss[BG_WARPS];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int W = blockDim.x >> 5;
    int rl = lane % RL;
    int kq = lane / RL;
    bg_lane_rows<RL, R>(acc, red, warp, rl, kq);
    ss = warp_sum(ss);
    if (lane == 0) rss[warp] = ss;
    __syncthreads();
    float tot = 0.0f;
    for (int ww = 0; ww < W; ww++) tot += rss[ww];
    float inv = 1.0f / sqrtf(tot / (float) K + eps);
    for (int i = threadIdx.x; i < RB; i += blockDim.x) {
        float v = 0.0f;
        for (int ww = 0; ww < W; ww++) v += red[ww][i];
        if (row0 + i < N) y[row0 + i] = v * inv;
    }
}

template <int KQ, int R, int U>
__device__ __forceinline__ void bgemv_ns1(const float* __restrict__ x, const void* nw, int nwBf16, float eps,
                                          const uint4* __restrict__ w, float* y, int N, int K, int blk) {
    constexpr int RL = 32 / KQ; // row lanes of a warp
    constexpr int RB = RL * R;  // rows of the block
    int G = K / 8;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int W = blockDim.x >> 5;
    int rl = lane % RL;
    int kq = lane / RL;
    int row0 = blk * RB;
    i64 grow[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int n = row0 + rl + RL * r;
        grow[r] = n < N ? n : N - 1;
    }
    int S = W * KQ;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    float ss = 0.0f;
    for (int g = warp * KQ + kq; g < G; g += U * S) {
        uint4 q[U][R];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++)
                if (u == 0 || g + u * S < G) q[u][r] = ld_stream(w + grow[r] * G + g + u * S);
#pragma unroll
        for (int u = 0; u < U; u++)
            if (u == 0 || g + u * S < G) bgns_step<R>(q[u], x, nw, nwBf16, (g + u * S) * 8, rl, acc, ss);
    }
    bgns_finish<KQ, R>(acc, ss, eps, y, N, K, row0);
}

// Which of the (up to three) weights row block rb (blockIdx.x where not given) of the one-row norm-folded products takes,
// its first row and that weight's rows: the row blocks of w0, then w1's, then w2's.
struct BgnsBlock {
    int which, row0, N;
};

__device__ __forceinline__ BgnsBlock bgns_block(int n0, int n1, int n2, int rb = -1) {
    constexpr int RB = 32 / BG_KQ_1 * BG_R_1;
    int nb0 = (n0 + RB - 1) / RB;
    int nb1 = (n1 + RB - 1) / RB;
    if (rb < 0) rb = blockIdx.x;
    BgnsBlock b;
    b.which = rb < nb0 ? 0 : rb < nb0 + nb1 ? 1 : 2;
    b.row0 = (b.which == 0 ? rb : b.which == 1 ? rb - nb0 : rb - nb0 - nb1) * RB;
    b.N = b.which == 0 ? n0 : b.which == 1 ? n1 : n2;
    return b;
}

// The body of bgemv_norm_scale_m1 after its wait: row block blockIdx.x's bgemv_ns1.
__device__ __forceinline__ void bgns_m1(const float* x, int K, const void* nw, int nwBf16, float eps, const uint4* w0, float* y0,
                                        int n0, const uint4* w1, float* y1, int n1, const uint4* w2, float* y2, int n2) {
    constexpr int RB = 32 / BG_KQ_1 * BG_R_1;
    int nb0 = (n0 + RB - 1) / RB;
    int nb1 = (n1 + RB - 1) / RB;
    int rb = blockIdx.x;
    if (rb < nb0) {
        bgemv_ns1<BG_KQ_1, BG_R_1, BG_U_1>(x, nw, nwBf16, eps, w0, y0, n0, K, rb);
    } else if (rb < nb0 + nb1) {
        bgemv_ns1<BG_KQ_1, BG_R_1, BG_U_1>(x, nw, nwBf16, eps, w1, y1, n1, K, rb - nb0);
    } else {
        bgemv_ns1<BG_KQ_1, BG_R_1, BG_U_1>(x, nw, nwBf16, eps, w2, y2, n2, K, rb - nb0 - nb1);
    }
}

// Up to three products of the normed row (an attention block's q, k and v at a one-token decode step), bgemv_ns1's sums:
// the row blocks of w0, then w1's, then w2's along blockIdx.x (n_i 0: none). No dynamic shared memory.
extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, BG_MINB_1)
    bgemv_norm_scale_m1(const float* x, int K, const void* nw, int nwBf16, float eps, const uint4* w0, float* y0, int n0,
                        const uint4* w1, float* y1, int n1, const uint4* w2, float* y2, int n2) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    bgns_m1(x, K, nw, nwBf16, eps, w0, y0, n0, w1, y1, n1, w2, y2, n2);
}

// bgemv_norm_scale_m1 built for five blocks an SM (48 registers, no spills at sm_90): q, k and v of Qwen3-30B-A3B are 640
// row blocks, which at m1's four an SM (61 registers) took a second wave of 112 blocks whose tail the kernel timeline
// showed (4.3 µs a layer); at five an SM all 640 are resident at once. The same PTX (launch bounds only steer the
// register allocation), so the same bits.
extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, 5)
    bgemv_norm_scale_w1(const float* x, int K, const void* nw, int nwBf16, float eps, const uint4* w0, float* y0, int n0,
                        const uint4* w1, float* y1, int n1, const uint4* w2, float* y2, int n2) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    bgns_m1(x, K, nw, nwBf16, eps, w0, y0, n0, w1, y1, n1, w2, y2, n2);
}

// bgemv_norm_scale_m1 in bgemv_pre1's form: the block's weight rows loaded before the wait (bgp_load: the steps of
// bgemv_ns1's lanes, in its order), then bgemv_ns1's steps and end over them, so the same bits. Its weights are the only
// pointers it reads before the wait (DependentKernels' prologue kernels).
extern "C" __global__ void __launch_bounds__(32 * BG_WARPS, 2)
    bgemv_norm_scale_pre1(const float* x, int K, const void* nw, int nwBf16, float eps, const uint4* __restrict__ w0, float* y0,
                          int n0, const uint4* __restrict__ w1, float* y1, int n1, const uint4* __restrict__ w2, float* y2, int n2) {
    ORBIT_TRACE_KERNEL();
    constexpr int RL = 32 / BG_KQ_1;
    BgnsBlock b = bgns_block(n0, n1, n2);
    int which = b.which;
    int row0 = b.row0;
    int N = b.N;
    BgPre p;
    bgp_load(p, which == 0 ? w0 : which == 1 ? w1 : w2, N, K, row0);
    pdl_enter();
    int G = K / 8;
    int lane = threadIdx.x & 31;
    int S = (blockDim.x >> 5) * BG_KQ_1;
    int g0 = (threadIdx.x >> 5) * BG_KQ_1 + lane / RL;
    float acc[BG_R_1];
#pragma unroll
    for (int r = 0; r < BG_R_1; r++) acc[r] = 0.0f;
    float ss = 0.0f;
#pragma unroll
    for (int u = 0; u < BGP_STEPS; u++)
        if (g0 + u * S < G) bgns_step<BG_R_1>(p.q[u], x, nw, nwBf16, (g0 + u * S) * 8, lane % RL, acc, ss);
    bgns_finish<BG_KQ_1, BG_R_1>(acc, ss, eps, which == 0 ? y0 : which == 1 ? y1 : y2, N, K, row0);
}
