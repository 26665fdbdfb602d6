// Bandwidth-oriented fused dequantize-GEMV for few rows of x: y = x . W^T with W quantized [N, K]
// (or E experts stacked as [E * N, K]), fp32 accumulation, x f32 or bf16.
//
// Layouts (as quant.cu and the format classes): codes two 4-bit values a byte, the even element in
// the low nibble, K/2 bytes a row; one 16-byte load (uint4) of a row is exactly one 32-value group.
//   FMT_INT4  w = (u - z) * scale[n, g], scales bf16 [N, K/32]; z = 8 (zeros null) or the nibble at
//             bits 4*(n%8) of zeros[n/8, g] (compressed-tensors asym)
//   FMT_MXFP4 w = e2m1(u) * 2^(scale[n, g] - 127), scales u8 E8M0
//   FMT_NVFP4 w = e2m1(u) * e4m3(scale[n, 2g + half]) / global
//
// Work split (bandwidth first): a block of W warps (W = blockDim / 32, at most QG_WARPS) computes
// RB = 32 / KQ * R consecutive output rows over the whole of K (KQ, R per x-row chunk MT below). A
// lane is (row lane rl, k lane kq): rl = lane % (32 / KQ) picks R rows rl, rl + 32 / KQ, ..., kq =
// lane / (32 / KQ) one of the KQ groups a warp takes per step; the warps split K (warp w takes the
// groups w * KQ + kq + i * W * KQ). A load instruction thus reads KQ consecutive 16-byte groups of
// 32 / KQ rows, and the x values of a step are the same for all row lanes (a broadcast read) and
// used for R rows. The code and scale loads of U steps are issued before any is used. Partial sums
// are reduced over the k lanes with shuffles, then over the warps through shared memory, and the
// block writes y.
//
// INT4 codes become floats with one byte permute: the bytes 0x4B 00 00 u are the float 2^23 + u, so
// u - z = that float - (2^23 + z), exactly. E2M1 codes: the magnitude bits placed at bits 22..24 of
// a float are e2m1(u) * 2^-126 (a subnormal for u < 2, exact), multiplied back by 2^126.
//
// Three ways to pick the rows of x (mode):
//   0 dense:   rows 0..M-1 of x and y, expert 0, processed MT at a time
//   1 pairs:   blockIdx.y = p, expert ids[p], x row p / xDiv, y row p (decode: no grouping needed)
//   2 grouped: blockIdx.y = j-th active expert e = active[1 + j] (active[0] = count); its pairs
//              order[offsets[e] .. offsets[e + 1]) (from moe_route), MT at a time: every
//              weight byte of an active expert is read once per call, whatever the batch.
// Through a table (TBL, modes 1 and 2): each expert is a matrix [N, K] of its own, found in a table of
// 4 words an expert passed as codes: its codes, scales and zeros (0: none) and its global scale (f32
// bits); a null codes word is an expert this rank does not hold (reported as out of range).

#include "qgemv_group.cuh"
#include "router.cuh"
#define ERR_EXPERT_NOT_HELD 5 // a pair routed to an expert this rank does not hold (CudaKernelErrors)
#define QG_WARPS 8 // most warps of a block
// Per x-row chunk MT: k lanes of a warp (KQ), rows of a lane (R), steps whose loads are issued
// together (U), blocks an SM must hold at once (MINB). A block computes 32 / KQ * R rows.
#ifndef QG_KQ_1
#define QG_KQ_1 4
#endif
#ifndef QG_R_1
#define QG_R_1 2
#endif
#ifndef QG_U_1
#define QG_U_1 2
#endif
#ifndef QG_MINB_1
#define QG_MINB_1 4
#endif
#ifndef QG_KQ_4
#define QG_KQ_4 4
#endif
#ifndef QG_R_4
#define QG_R_4 4
#endif
#ifndef QG_U_4
#define QG_U_4 2
#endif
#ifndef QG_MINB_4
#define QG_MINB_4 2
#endif
#ifndef QG_KQ_8
#define QG_KQ_8 8
#endif
#ifndef QG_R_8
#define QG_R_8 4
#endif
#ifndef QG_U_8
#define QG_U_8 2
#endif
#ifndef QG_MINB_8
#define QG_MINB_8 2
#endif
#ifndef QG_KQ_16
#define QG_KQ_16 4
#endif
#ifndef QG_R_16
#define QG_R_16 2
#endif
#ifndef QG_U_16
#define QG_U_16 1
#endif
#ifndef QG_MINB_16
#define QG_MINB_16 1
#endif

template <int FMT, int MT, bool XB, int KQ, int R, int U, bool TBL = false>
__device__ __forceinline__ void qgemv(int mode, const void* x, int xDiv, int M, const int* ids, const int* offsets, const int* order,
                                      const int* active, const uint4* __restrict__ codes, const void* __restrict__ scales,
                                      const u32* __restrict__ zeros, float global, float* y, int N, int K, int E, int* err) {
    constexpr int RL = 32 / KQ; // row lanes of a warp
    constexpr int RB = RL * R;  // rows of the block
    __shared__ float red[QG_WARPS][RB * MT]; // per warp: [rows of the block, x rows of the chunk]
    int G = K / 32;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int W = blockDim.x >> 5;
    int rl = lane % RL;
    int kq = lane / RL;
    int row0 = blockIdx.x * RB;

    int e = 0;
    int start = 0;
    int count = M;
    const int* list = 0;
    if (mode == 1) {
        start = blockIdx.y;
        count = 1;
        e = ids[start];
        if (e < 0 || e >= E) { // the whole block leaves
            if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, start);
            return;
        }
    } else if (mode == 2) {
        if ((int) blockIdx.y >= active[0]) return;
        e = active[1 + blockIdx.y];
        start = offsets[e];
        count = offsets[e + 1] - start;
        list = order;
    }
    if (TBL) {
        const unsigned long long* table = (const unsigned long long*) codes;
        if (table[4 * (i64) e] == 0ull) { // an expert this rank does not hold: the whole block leaves
            if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_NOT_HELD, e, mode == 1 ? start : -1);
            return;
        }
        codes = (const uint4*) table[4 * (i64) e];
        scales = (const void*) table[4 * (i64) e + 1];
        zeros = (const u32*) table[4 * (i64) e + 2];
        global = __uint_as_float((u32) table[4 * (i64) e + 3]);
    }
    i64 grow[R]; // global weight rows (clamped inside the matrix; rows past N are computed, not written)
    i64 ebase = TBL ? 0 : (i64) e * N; // the expert's first row in the matrix the pointers address
#pragma unroll
    for (int r = 0; r < R; r++) {
        int n = row0 + rl + RL * r;
        grow[r] = ebase + (n < N ? n : N - 1);
    }
    int S = W * KQ; // groups a block step covers

    for (int c0 = 0; c0 < count; c0 += MT) {
        int mcount = count - c0 < MT ? count - c0 : MT;
        int yr[MT];              // y row (pair) of each x row of the chunk; its x row is yr / xDiv
        const char* xr[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            int i = c0 + (m < mcount ? m : mcount - 1);
            yr[m] = list ? list[start + i] : start + i;
            xr[m] = (const char*) x + (i64) (yr[m] / xDiv) * K * (XB ? 2 : 4);
        }
        float acc[R][MT];
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int m = 0; m < MT; m++) acc[r][m] = 0.0f;

        int g = warp * KQ + kq;
        for (; g < G; g += U * S) { // the loads of U steps (those inside the row) are issued before any is used
            uint4 q[U][R];
            float s0[U][R], s1[U][R], zb[U][R];
            qg_fetch<FMT, R, U>(codes, scales, zeros, global, grow, G, g, S, q, s0, s1, zb);
            qg_apply<FMT, MT, XB, R, U>(q, s0, s1, zb, G, g, S, xr, mcount, K, acc);
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
        __syncthreads();
        for (int i = threadIdx.x; i < RB * MT; i += blockDim.x) {
            int row = i / MT;
            int m = i % MT;
            float v = 0.0f;
            for (int w = 0; w < W; w++) v += red[w][i];
            if (row0 + row < N && m < mcount) y[(i64) (list ? list[start + c0 + m] : start + c0 + m) * N + row0 + row] = v;
        }
        __syncthreads();
    }
}

#define QG_KERNEL(NAME, FMT, MT, XB)                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * QG_WARPS, QG_MINB_##MT)                                          \
        NAME(int mode, const void* x, int xDiv, int M, const int* ids, const int* offsets, const int* order,             \
             const int* active, const uint4* codes, const void* scales, const u32* zeros, float global, float* y, int N, \
             int K, int E, int* err) {                                                                                  \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        qgemv<FMT, MT, XB, QG_KQ_##MT, QG_R_##MT, QG_U_##MT>(mode, x, xDiv, M, ids, offsets, order, active, codes,     \
                                                            scales, zeros, global, y, N, K, E, err);                    \
    }

#define QG_FORMAT(FNAME, FMT)                          \
    QG_KERNEL(qgemv_##FNAME##_m1_f32, FMT, 1, false)   \
    QG_KERNEL(qgemv_##FNAME##_m4_f32, FMT, 4, false)   \
    QG_KERNEL(qgemv_##FNAME##_m8_f32, FMT, 8, false)   \
    QG_KERNEL(qgemv_##FNAME##_m16_f32, FMT, 16, false) \
    QG_KERNEL(qgemv_##FNAME##_m1_bf16, FMT, 1, true)   \
    QG_KERNEL(qgemv_##FNAME##_m4_bf16, FMT, 4, true)   \
    QG_KERNEL(qgemv_##FNAME##_m8_bf16, FMT, 8, true)   \
    QG_KERNEL(qgemv_##FNAME##_m16_bf16, FMT, 16, true)

QG_FORMAT(int4, QF_INT4)
QG_FORMAT(mxfp4, QF_MXFP4)
QG_FORMAT(nvfp4, QF_NVFP4)

// Experts through a table, f32 x (the codes argument the table): qgemv_<format>_pairs_f32 (mode 1) and
// qgemv_<format>_routed_m<MT>_f32 (mode 2, MT rows of x a weight load; at least 2 pairs a block row, so MT >= 4).
#define QG_TABLE_KERNEL(NAME, FMT, MT, MODE)                                                                           \
    extern "C" __global__ void __launch_bounds__(32 * QG_WARPS, QG_MINB_##MT)                                          \
        NAME(const float* x, int xDiv, const int* ids, const int* offsets, const int* order, const int* active,         \
             const uint4* table, float* y, int N, int K, int E, int* err) {                                             \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        qgemv<FMT, MT, false, QG_KQ_##MT, QG_R_##MT, QG_U_##MT, true>(MODE, x, xDiv, 1, ids, offsets, order, active,    \
                                                                     table, 0, 0, 0.0f, y, N, K, E, err);              \
    }
#define QG_TABLE_FORMAT(FNAME, FMT)                             \
    QG_TABLE_KERNEL(qgemv_##FNAME##_pairs_f32, FMT, 1, 1)       \
    QG_TABLE_KERNEL(qgemv_##FNAME##_routed_m4_f32, FMT, 4, 2)   \
    QG_TABLE_KERNEL(qgemv_##FNAME##_routed_m8_f32, FMT, 8, 2)   \
    QG_TABLE_KERNEL(qgemv_##FNAME##_routed_m16_f32, FMT, 16, 2)
QG_TABLE_FORMAT(int4, QF_INT4)
QG_TABLE_FORMAT(mxfp4, QF_MXFP4)
QG_TABLE_FORMAT(nvfp4, QF_NVFP4)

// ---------------------------------------------------------------------------------------------------
// Decode fusions of the routed experts (one x row per pair, f32 x). At one token a launch is a few
// memory round trips, so these kernels issue a step's weight loads first, stage x in shared memory
// while those are in flight, and fit the whole grid in one wave.

#ifndef QGS_KQ
#define QGS_KQ 8 // gate/up: k lanes of a warp
#endif
#ifndef QGS_R
#define QGS_R 4  // gate/up: rows of a lane (of each matrix)
#endif
#ifndef QGS_MINB
#define QGS_MINB 2
#endif
#ifndef QGD_KQ
#define QGD_KQ 8 // down: k lanes of a warp
#endif
#ifndef QGD_R
#define QGD_R 2  // down: rows of a lane
#endif
#ifndef QGD_U
#define QGD_U 3  // down: steps whose loads are issued together
#endif
#define QGD_MAX_TOPK 16

// A LoRA term of the routed pairs' products: s * (sum over j < r, in order, of lo[p, j] * B_e[n, j]) for pair p of expert e
// and output row n, lo [pairs, r] f32 and B_e [N, r] f32 at table[e] (r a multiple of 4, rows 16-byte aligned); none (0)
// where lo is null.
struct QgLora {
    const float* lo = nullptr;
    const unsigned long long* table = nullptr;
    float s = 0.0f;
    int r = 0;
    __device__ __forceinline__ float term(int p, int e, int n) const {
        if (lo == nullptr) return 0.0f;
        return s * lora_dot(lo + (i64) p * r, (const float*) table[e] + (i64) n * r, r);
    }
};

// A gate/up launch's experts chosen in the launch (the _pk kernels): token p / topk's logits [T, E] as a router launch
// that selects nothing left them (moe_router_norm_logits_pre), pair p's expert its pick p % topk (router_picks_block:
// router_select_warp's experts), written to ids[p] by the pair's blocks of blockIdx.x 0 for the launches after.
struct QgPick {
    const float* logits = nullptr;
    int topk = 0;
};

// act[p, n] = silu(g) * u with g = x[p / xDiv] . Gate[e]^T[n], u = x[p / xDiv] . Up[e]^T[n], e = ids[p]
// (blockIdx.y = p): the gate and up products of a decode step's routed pairs and the SwiGLU between
// them in one launch. qgemv's lane split (KQ k lanes, R rows a lane, warps over K) with each lane
// holding the same R rows of both matrices; a step's loads of both are issued before x is staged in
// shared memory (dynamic, K floats). The block's rows of gate and up never leave the SM. XF: x's copies into
// shared memory (cp.async, at the L2) issued first, before the expert id is read and the weights' loads, and the
// scale and zero words decoded after the barrier that x's staging ends in: staged behind the weights, or with a
// decode of a scale ahead of the barrier, x is in shared memory only when the warp's weights are in, and no warp
// multiplies until the block's last weight has come.
// PK: the experts chosen here from pick's logits (QgPick), not read from ids. LT: the kernel waited with pdl_enter_late,
// and its dependents may start once every warp's first weight loads are issued (pdl_trigger), so that the down launch's
// prologue (its weights' loads) queues behind them, not ahead.
template <int FMT, int KQ, int R, bool XF = false, bool PK = false, bool LT = false>
__device__ __forceinline__ void qgemv_swiglu(const float* x, int xDiv, const int* ids, const uint4* __restrict__ gc,
                                             const void* __restrict__ gs, const u32* __restrict__ gz, float gglobal,
                                             const uint4* __restrict__ uc, const void* __restrict__ us,
                                             const u32* __restrict__ uz, float uglobal, float* act, int N, int K, int E,
                                             int* err, const QgLora& gl = QgLora(), const QgLora& ul = QgLora(),
                                             const QgPick& pick = QgPick()) {
    constexpr int RL = 32 / KQ;
    constexpr int RB = RL * R;
    extern __shared__ float xs[];          // [K]
    __shared__ float red[2][QG_WARPS][RB]; // [gate | up][warp][row of the block]
    int G = K / 32;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int W = blockDim.x >> 5;
    int rl = lane % RL;
    int kq = lane / RL;
    int row0 = blockIdx.x * RB;
    int p = blockIdx.y;
    const float4* xg = (const float4*) (x + (i64) (p / xDiv) * K);
    if (XF) {
        u32 xa = smem_addr(xs);
        for (int c = threadIdx.x; c < K / 4; c += blockDim.x) cp_async16_zfill(xa + 16 * c, xg + c, true);
        cp_async_commit();
    }
    int e;
    if (PK) {
        __shared__ float lg[QG_WARPS * 32];
        __shared__ float pickV[32];
        __shared__ int pickE[32];
        const float* row = pick.logits + (i64) (p / pick.topk) * E;
        for (int c = threadIdx.x; c < E; c += blockDim.x) lg[c] = __ldcg(row + c);
        __syncthreads();
        router_picks_block(lg, E, pick.topk, pickV, pickE);
        e = pickE[p % pick.topk];
        if (blockIdx.x == 0 && threadIdx.x == 0) ((int*) ids)[p] = e;
    } else {
        e = ids[p];
    }
    if (e < 0 || e >= E) { // the whole block leaves
        if (XF) cp_async_wait<0>();
        if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, p);
        return;
    }
    ORBIT_TRACE_MARK(0); // the expert known
    i64 grow[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int n = row0 + rl + RL * r;
        grow[r] = (i64) e * N + (n < N ? n : N - 1);
    }
    int S = W * KQ;
    int g = warp * KQ + kq;
    uint4 qg[1][R], qu[1][R];
    float gs0[1][R], gs1[1][R], gzb[1][R], us0[1][R], us1[1][R], uzb[1][R];
    u32 gsr[R], gzr[R], usr[R], uzr[R];
    if (g < G) {
        if (XF) { // the scale and zero words decoded after the barrier below, so that no warp waits there for its weights
            qg_fetch_words<FMT, R>(gc, gs, gz, grow, G, g, qg[0], gsr, gzr);
            qg_fetch_words<FMT, R>(uc, us, uz, grow, G, g, qu[0], usr, uzr);
        } else {
            qg_fetch<FMT, R, 1>(gc, gs, gz, gglobal, grow, G, g, S, qg, gs0, gs1, gzb);
            qg_fetch<FMT, R, 1>(uc, us, uz, uglobal, grow, G, g, S, qu, us0, us1, uzb);
        }
    }
    if (LT) pdl_trigger(); // every thread, the weights' loads issued
    if (XF) {
        cp_async_wait<0>();
    } else {
        for (int c = threadIdx.x; c < K / 4; c += blockDim.x) ((float4*) xs)[c] = xg[c];
    }
    __syncthreads();
    ORBIT_TRACE_MARK(1); // x staged, the weights' loads issued
    if (XF && g < G) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            qg_scales_of<FMT>(gsr[r], gzr[r], gz, gglobal, grow[r], gs0[0][r], gs1[0][r], gzb[0][r]);
            qg_scales_of<FMT>(usr[r], uzr[r], uz, uglobal, grow[r], us0[0][r], us1[0][r], uzb[0][r]);
        }
    }
    const char* xr[1] = {(const char*) xs};
    float ag[R][1], au[R][1];
#pragma unroll
    for (int r = 0; r < R; r++) {
        ag[r][0] = 0.0f;
        au[r][0] = 0.0f;
    }
    qg_gate_up_steps<FMT, R>(gc, gs, gz, gglobal, uc, us, uz, uglobal, grow, G, g, S, xr, K, qg, gs0, gs1, gzb, qu, us0, us1, uzb,
                             ag, au);
    ORBIT_TRACE_MARK(2); // the lane's products summed
    qg_gate_up_to_shared<RL, R, QG_WARPS>(ag, au, red, warp, rl, kq);
    __syncthreads();
    ORBIT_TRACE_MARK(3); // the warps' sums in shared memory
    for (int i = threadIdx.x; i < RB; i += blockDim.x) {
        float gv = 0.0f;
        float uv = 0.0f;
        for (int w = 0; w < W; w++) {
            gv += red[0][w][i];
            uv += red[1][w][i];
        }
        if (row0 + i < N) {
            gv += gl.term(p, e, row0 + i);
            uv += ul.term(p, e, row0 + i);
            act[(i64) p * N + row0 + i] = gv / (1.0f + expf(-gv)) * uv; // swiglu_f32's expression
        }
    }
}

// out[t, n] (+)= c * sum_j w[t, j] * (act[t * topk + j] . Down[e_j]^T[n]), e_j = ids[t, j], c = 1 / sum_j w[t, j]
// when normalize else 1: the down products of a decode token's routed experts weighted into its residual
// row in one launch. Block (row chunk, token t = blockIdx.y), one warp per routed expert (blockDim 32 * topk):
// warp j issues its first steps' weight loads (qgd_begin), stages act row t * topk + j in shared memory (dynamic,
// topk * K floats), then computes the block's RB rows of expert j's product over the whole of K (lanes
// split as qgemv's); the experts' sums are weighted and added in j order, as moe_combine adds them (qgd_finish).
template <int R, int U>
struct QgdBegun {
    uint4 q[U][R];
    float s0[U][R], s1[U][R], zb[U][R];
    i64 grow[R];
    int e;
    bool ok;
};

// The warp's expert (ids read past L1: qgemv_down_combine_pre_int4 reads them before its wait; or the
// expert e given: GIVEN) and its first U steps' weight loads; reads nothing but ids and the frozen weights, writes nothing.
template <int FMT, int KQ, int R, int U, bool GIVEN = false>
__device__ __forceinline__ void qgd_begin(QgdBegun<R, U>& b, const int* ids, int topk, const uint4* __restrict__ codes,
                                          const void* __restrict__ scales, const u32* __restrict__ zeros, float global, int N,
                                          int K, int E, int e = -1) {
    constexpr int RL = 32 / KQ;
    int G = K / 32;
    int lane = threadIdx.x & 31;
    int pair = blockIdx.y * topk + (threadIdx.x >> 5);
    b.e = GIVEN ? e : __ldcg(ids + pair);
    b.ok = b.e >= 0 && b.e < E;
    if (b.ok) {
        int row0 = blockIdx.x * RL * R;
#pragma unroll
        for (int r = 0; r < R; r++) {
            int n = row0 + lane % RL + RL * r;
            b.grow[r] = (i64) b.e * N + (n < N ? n : N - 1);
        }
        int g = lane / RL;
        if (g < G) qg_fetch<FMT, R, U>(codes, scales, zeros, global, b.grow, G, g, KQ, b.q, b.s0, b.s1, b.zb);
    }
}

// ROW: wts is the token's row of weights (else the [T, topk] weights). LT: the kernel waited with pdl_enter_late, and
// its dependents may start once the block's act rows are staged (pdl_trigger, every thread), so that their prologues'
// loads (the next layer's q/k/v weights) queue behind those, not ahead. CP (without ROW): every load after the wait
// issued at once as asynchronous copies into shared memory: the token's weights and (with accumulate) the block's rows
// of out as the function starts, then the act rows (cp.async at the L2), so that their round trips pass together and
// during the products, where plain loads cost one round trip after another (the act rows' loop ends each iteration in a
// store to shared memory; the weights and out are read after the products); the same values in the same expressions.
template <int FMT, int KQ, int R, int U, bool ROW = false, bool LT = false, bool CP = false>
__device__ __forceinline__ void qgd_finish(QgdBegun<R, U>& b, const float* act, const float* wts, int topk, int normalize,
                                           const uint4* __restrict__ codes, const void* __restrict__ scales,
                                           const u32* __restrict__ zeros, float global, float* out, int accumulate, int N, int K,
                                           int* err, const QgLora& lora) {
    constexpr int RL = 32 / KQ;
    constexpr int RB = RL * R;
    extern __shared__ float as[];           // [topk][K]
    __shared__ float red[QGD_MAX_TOPK][RB]; // [expert of the token][row of the block]
    int G = K / 32;
    int lane = threadIdx.x & 31;
    int j = threadIdx.x >> 5;
    int rl = lane % RL;
    int kq = lane / RL;
    int row0 = blockIdx.x * RB;
    int t = blockIdx.y;
    int pair = t * topk + j;
    __shared__ float wq[QGD_MAX_TOPK]; // CP: the token's weights
    __shared__ float oq[RB];           // CP, with accumulate: out's rows of the block
    if (CP) {
        if ((int) threadIdx.x < topk) cp_async4(smem_addr(wq + threadIdx.x), wts + (i64) t * topk + threadIdx.x);
        if (accumulate && (int) threadIdx.x < RB && row0 + (int) threadIdx.x < N)
            cp_async4(smem_addr(oq + threadIdx.x), out + (i64) t * N + row0 + threadIdx.x);
        cp_async_commit();
    }
    if (!b.ok && blockIdx.x == 0 && lane == 0) report_error(err, ERR_EXPERT_OUT_OF_RANGE, b.e, pair);
    float acc[R][1];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r][0] = 0.0f;
    if (b.ok) {
        int g = kq;
        float* arow = as + j * K;
        const float4* ag = (const float4*) (act + (i64) pair * K);
        if (CP) {
            u32 aa = smem_addr(arow);
            for (int c = lane; c < K / 4; c += 32) cp_async16_zfill(aa + 16 * c, ag + c, true);
            cp_async_commit();
            cp_async_wait<0>();
        } else {
            for (int c = lane; c < K / 4; c += 32) ((float4*) arow)[c] = ag[c];
        }
        __syncwarp();
        if (LT) pdl_trigger();
        const char* xr[1] = {(const char*) arow};
        while (g < G) {
            qg_apply<FMT, 1, false, R, U>(b.q, b.s0, b.s1, b.zb, G, g, KQ, xr, 1, K, acc);
            g += U * KQ;
            if (g < G) qg_fetch<FMT, R, U>(codes, scales, zeros, global, b.grow, G, g, KQ, b.q, b.s0, b.s1, b.zb);
        }
    } else if (LT) {
        pdl_trigger();
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        float v = acc[r][0];
#pragma unroll
        for (int o = RL; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (kq == 0) {
            int n = row0 + rl + RL * r;
            if (b.ok && n < N) v += lora.term(pair, b.e, n);
            red[j][rl + RL * r] = v;
        }
    }
    if (CP) cp_async_wait<0>();
    __syncthreads();
    if ((int) threadIdx.x < RB && row0 + (int) threadIdx.x < N) {
        const float* wt = CP ? wq : ROW ? wts : wts + (i64) t * topk;
        float c = 1.0f;
        if (normalize) {
            float s = 0.0f;
            for (int i = 0; i < topk; i++) s += wt[i];
            c = 1.0f / s;
        }
        float v = 0.0f;
        for (int i = 0; i < topk; i++) v += wt[i] * red[i][threadIdx.x];
        v *= c;
        float* o = out + (i64) t * N + row0 + threadIdx.x;
        *o = accumulate ? (CP ? oq[threadIdx.x] : *o) + v : v;
    }
}

template <int FMT, int KQ, int R, int U>
__device__ __forceinline__ void qgemv_down_combine(const float* act, const int* ids, const float* wts, int topk, int normalize,
                                                   const uint4* __restrict__ codes, const void* __restrict__ scales,
                                                   const u32* __restrict__ zeros, float global, float* out, int accumulate,
                                                   int N, int K, int E, int* err, const QgLora& lora = QgLora()) {
    QgdBegun<R, U> b;
    qgd_begin<FMT, KQ, R, U>(b, ids, topk, codes, scales, zeros, global, N, K, E);
    qgd_finish<FMT, KQ, R, U>(b, act, wts, topk, normalize, codes, scales, zeros, global, out, accumulate, N, K, err, lora);
}

// Two shapes of the gate/up launch: QGS_R rows a lane (QGS_MINB blocks an SM), and half as many rows
// a lane in more, smaller blocks (_r2: 2 rows, 3 blocks an SM).
#define QG_DECODE_KERNELS(FNAME, FMT)                                                                                        \
    extern "C" __global__ void __launch_bounds__(32 * QG_WARPS, QGS_MINB) qgemv_swiglu_##FNAME(                             \
        const float* x, int xDiv, const int* ids, const uint4* gc, const void* gs, const u32* gz, float gglobal,            \
        const uint4* uc, const void* us, const u32* uz, float uglobal, float* act, int N, int K, int E, int* err) {         \
        ORBIT_TRACE_KERNEL();                                                                                                \
        pdl_enter();                                                                                                         \
        qgemv_swiglu<FMT, QGS_KQ, QGS_R>(x, xDiv, ids, gc, gs, gz, gglobal, uc, us, uz, uglobal, act, N, K, E, err);        \
    }                                                                                                                      \
    extern "C" __global__ void __launch_bounds__(32 * QG_WARPS, 3) qgemv_swiglu_r2_##FNAME(                                 \
        const float* x, int xDiv, const int* ids, const uint4* gc, const void* gs, const u32* gz, float gglobal,            \
        const uint4* uc, const void* us, const u32* uz, float uglobal, float* act, int N, int K, int E, int* err) {         \
        ORBIT_TRACE_KERNEL();                                                                                                \
        pdl_enter();                                                                                                         \
        qgemv_swiglu<FMT, QGS_KQ, 2>(x, xDiv, ids, gc, gs, gz, gglobal, uc, us, uz, uglobal, act, N, K, E, err);            \
    }                                                                                                                      \
    extern "C" __global__ void __launch_bounds__(32 * QGD_MAX_TOPK) qgemv_down_combine_##FNAME(                             \
        const float* act, const int* ids, const float* wts, int topk, int normalize, const uint4* codes,                    \
        const void* scales, const u32* zeros, float global, float* out, int accumulate, int N, int K, int E, int* err) {    \
        ORBIT_TRACE_KERNEL();                                                                                                \
        pdl_enter();                                                                                                         \
        qgemv_down_combine<FMT, QGD_KQ, QGD_R, QGD_U>(act, ids, wts, topk, normalize, codes, scales, zeros, global, out,   \
                                                     accumulate, N, K, E, err);                                            \
    }

// A gate/up launch with the pairs' LoRA terms: kernel NAME, MINB blocks an SM, R rows a lane, XF x staged first; LT its
// dependents let start once its weights' loads are issued (qgemv_swiglu's LT), else at its wait (pdl_enter's order).
#define QG_SWIGLU_LORA_KERNEL(NAME, FMT, MINB, R, XF, LT)                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * QG_WARPS, MINB) NAME(                                                 \
        const float* x, int xDiv, const int* ids, const uint4* gc, const void* gs, const u32* gz, float gglobal,            \
        const uint4* uc, const void* us, const u32* uz, float uglobal, float* act, int N, int K, int E, int* err,           \
        const float* glo, const unsigned long long* gtab, float gsc, const float* ulo, const unsigned long long* utab,       \
        float usc, int rank) {                                                                                               \
        ORBIT_TRACE_KERNEL();                                                                                                \
        pdl_enter_late();                                                                                                    \
        if (!LT) pdl_trigger();                                                                                              \
        qgemv_swiglu<FMT, QGS_KQ, R, XF, false, LT>(x, xDiv, ids, gc, gs, gz, gglobal, uc, us, uz, uglobal, act, N, K, E,    \
                                                    err, QgLora{glo, gtab, gsc, rank}, QgLora{ulo, utab, usc, rank});         \
    }

// The x-first gate/up launch with its experts chosen in the launch (QgPick; ids written, not read): NAME as above.
#define QG_SWIGLU_PICK_KERNEL(NAME, FMT, MINB, R)                                                                           \
    extern "C" __global__ void __launch_bounds__(32 * QG_WARPS, MINB) NAME(                                                 \
        const float* x, int xDiv, int* ids, const uint4* gc, const void* gs, const u32* gz, float gglobal,                  \
        const uint4* uc, const void* us, const u32* uz, float uglobal, float* act, int N, int K, int E, int* err,           \
        const float* glo, const unsigned long long* gtab, float gsc, const float* ulo, const unsigned long long* utab,       \
        float usc, int rank, const float* logits, int topk) {                                                                \
        ORBIT_TRACE_KERNEL();                                                                                                \
        pdl_enter();                                                                                                         \
        qgemv_swiglu<FMT, QGS_KQ, R, true, true>(x, xDiv, ids, gc, gs, gz, gglobal, uc, us, uz, uglobal, act, N, K, E, err, \
                                                 QgLora{glo, gtab, gsc, rank}, QgLora{ulo, utab, usc, rank},                 \
                                                 QgPick{logits, topk});                                                      \
    }

// The same launches with the pairs' LoRA terms (rollout's decode step at few tokens): gate's and up's added to g and u
// before the SwiGLU (glo / ulo null: none), down's to each expert's product before it is weighted. The gate/up launch
// also with 6 rows a lane (_r6, two blocks an SM): a one-token step's 8 pairs of Qwen3-30B-A3B's experts (768 rows) are
// then 256 blocks, one wave of an H100 or H200, where 4 rows a lane make 384 blocks in two. _xf: x staged first; _xfl:
// and the dependents let start once the weights' loads are issued.
#define QG_DECODE_LORA_KERNELS(FNAME, FMT)                                                                                   \
    QG_SWIGLU_LORA_KERNEL(qgemv_swiglu_lora_##FNAME, FMT, QGS_MINB, QGS_R, false, false)                                   \
    QG_SWIGLU_LORA_KERNEL(qgemv_swiglu_lora_r6_##FNAME, FMT, 2, 6, false, false)                                           \
    QG_SWIGLU_LORA_KERNEL(qgemv_swiglu_lora_xf_##FNAME, FMT, QGS_MINB, QGS_R, true, false)                                 \
    QG_SWIGLU_LORA_KERNEL(qgemv_swiglu_lora_r6_xf_##FNAME, FMT, 2, 6, true, false)                                         \
    QG_SWIGLU_LORA_KERNEL(qgemv_swiglu_lora_xfl_##FNAME, FMT, QGS_MINB, QGS_R, true, true)                                 \
    QG_SWIGLU_LORA_KERNEL(qgemv_swiglu_lora_r6_xfl_##FNAME, FMT, 2, 6, true, true)                                         \
    QG_SWIGLU_PICK_KERNEL(qgemv_swiglu_lora_xf_pk_##FNAME, FMT, QGS_MINB, QGS_R)                                           \
    QG_SWIGLU_PICK_KERNEL(qgemv_swiglu_lora_r6_xf_pk_##FNAME, FMT, 2, 6)                                                   \
    extern "C" __global__ void __launch_bounds__(32 * QGD_MAX_TOPK) qgemv_down_combine_lora_##FNAME(                        \
        const float* act, const int* ids, const float* wts, int topk, int normalize, const uint4* codes,                    \
        const void* scales, const u32* zeros, float global, float* out, int accumulate, int N, int K, int E, int* err,      \
        const float* lo, const unsigned long long* tab, float sc, int rank) {                                                \
        ORBIT_TRACE_KERNEL();                                                                                                \
        pdl_enter();                                                                                                         \
        qgemv_down_combine<FMT, QGD_KQ, QGD_R, QGD_U>(act, ids, wts, topk, normalize, codes, scales, zeros, global, out,   \
                                                     accumulate, N, K, E, err, QgLora{lo, tab, sc, rank});                 \
    }

QG_DECODE_KERNELS(int4, QF_INT4)
QG_DECODE_LORA_KERNELS(int4, QF_INT4)

// qgemv_down_combine_lora_int4 with its ids read and its first steps' weight loads issued before its wait (at Qwen3-30B-A3B's
// 768 columns, all of a block's weights), so that they stream while the launches before it finish; the same sums (the
// same bits). What makes the early read of ids sound: a launch between the router that wrote them and this one waits
// for its predecessor before it lets its dependents start (the gate/up launch over the same ids does: pdl_enter, or
// pdl_enter_late before its pdl_trigger), so the router has completed before this grid starts; nothing between rewrites
// them; and they are read past L1 (__ldcg), at L2, where the router's writes are. CudaMoeDecodePairs takes the kernel only after its own gate/up launch over the
// same ids, with at most PROLOGUE_GAP launches of the thread between (the pairs' LoRA A product and the like).
extern "C" __global__ void __launch_bounds__(32 * QGD_MAX_TOPK)
    qgemv_down_combine_pre_int4(const float* act, const int* ids, const float* wts, int topk, int normalize,
                                const uint4* codes, const void* scales, const u32* zeros, float global, float* out,
                                int accumulate, int N, int K, int E, int* err, const float* lo, const unsigned long long* tab,
                                float sc, int rank) {
    ORBIT_TRACE_KERNEL();
    QgdBegun<QGD_R, QGD_U> b;
    qgd_begin<QF_INT4, QGD_KQ, QGD_R, QGD_U>(b, ids, topk, codes, scales, zeros, global, N, K, E);
    pdl_enter();
    qgd_finish<QF_INT4, QGD_KQ, QGD_R, QGD_U>(b, act, wts, topk, normalize, codes, scales, zeros, global, out, accumulate, N, K,
                                              err, QgLora{lo, tab, sc, rank});
}

// qgemv_down_combine_pre_int4 with every load after its wait issued at once as asynchronous copies (qgd_finish's CP: the
// act rows, the token's weights, out's rows): the same prologue, the same bits.
extern "C" __global__ void __launch_bounds__(32 * QGD_MAX_TOPK)
    qgemv_down_combine_pre_cp_int4(const float* act, const int* ids, const float* wts, int topk, int normalize,
                                   const uint4* codes, const void* scales, const u32* zeros, float global, float* out,
                                   int accumulate, int N, int K, int E, int* err, const float* lo, const unsigned long long* tab,
                                   float sc, int rank) {
    ORBIT_TRACE_KERNEL();
    QgdBegun<QGD_R, QGD_U> b;
    qgd_begin<QF_INT4, QGD_KQ, QGD_R, QGD_U>(b, ids, topk, codes, scales, zeros, global, N, K, E);
    pdl_enter();
    qgd_finish<QF_INT4, QGD_KQ, QGD_R, QGD_U, false, false, true>(b, act, wts, topk, normalize, codes, scales, zeros, global, out,
                                                                 accumulate, N, K, err, QgLora{lo, tab, sc, rank});
}

// qgemv_down_combine_pre_int4 letting its dependents start once a block's act rows are staged (qgd_finish's LT), not at
// its wait: the next layer's q/k/v launch, whose prologue streams its weights, then queues them behind those rows. The
// same prologue, the same bits.
extern "C" __global__ void __launch_bounds__(32 * QGD_MAX_TOPK)
    qgemv_down_combine_pre_lt_int4(const float* act, const int* ids, const float* wts, int topk, int normalize,
                                   const uint4* codes, const void* scales, const u32* zeros, float global, float* out,
                                   int accumulate, int N, int K, int E, int* err, const float* lo, const unsigned long long* tab,
                                   float sc, int rank) {
    ORBIT_TRACE_KERNEL();
    QgdBegun<QGD_R, QGD_U> b;
    qgd_begin<QF_INT4, QGD_KQ, QGD_R, QGD_U>(b, ids, topk, codes, scales, zeros, global, N, K, E);
    pdl_enter_late();
    qgd_finish<QF_INT4, QGD_KQ, QGD_R, QGD_U, false, true>(b, act, wts, topk, normalize, codes, scales, zeros, global, out,
                                                           accumulate, N, K, err, QgLora{lo, tab, sc, rank});
}

// qgemv_down_combine_pre_int4 letting its dependents start as soon as its prologue's loads are issued, before its wait
// (pdl_enter_early): the next layer's q/k/v launch, where its prologue loads its weights (bgemv_norm_scale_pre1, under
// -Dorbit.cuda.gemvPrologue=on), then starts beside this launch's blocks as they arrive, during the gate/up launch's
// tail, and streams its weights while this launch waits and runs. What it reads after its own wait is this launch's output, so
// the same: this launch completes only after its own wait. The same prologue, the same bits.
extern "C" __global__ void __launch_bounds__(32 * QGD_MAX_TOPK)
    qgemv_down_combine_pre_et_int4(const float* act, const int* ids, const float* wts, int topk, int normalize,
                                   const uint4* codes, const void* scales, const u32* zeros, float global, float* out,
                                   int accumulate, int N, int K, int E, int* err, const float* lo, const unsigned long long* tab,
                                   float sc, int rank) {
    ORBIT_TRACE_KERNEL();
    QgdBegun<QGD_R, QGD_U> b;
    qgd_begin<QF_INT4, QGD_KQ, QGD_R, QGD_U>(b, ids, topk, codes, scales, zeros, global, N, K, E);
    pdl_enter_early();
    qgd_finish<QF_INT4, QGD_KQ, QGD_R, QGD_U>(b, act, wts, topk, normalize, codes, scales, zeros, global, out, accumulate, N, K,
                                              err, QgLora{lo, tab, sc, rank});
}

// qgemv_down_combine_pre_int4 with the token's experts and weights chosen in its prologue from the logits [T, E] a router
// launch that selects nothing left (moe_router_norm_logits_pre; router_select_block over them: router_select_warp's
// values and experts, divided by their sum where pickNormalize, as the router's), not read from ids and wts; the blocks
// of blockIdx.x 0 write both after the wait, for the
// launches after. What makes the early read of the logits sound is what makes qgemv_down_combine_pre_int4's read of
// ids sound: the router wrote them before the gate/up launch (the _pk kernel that chose the same experts), whose blocks
// wait for it before they let any later launch start. E at most the block's threads (32 * topk) for the block forms.
extern "C" __global__ void __launch_bounds__(32 * QGD_MAX_TOPK)
    qgemv_down_combine_pre_pk_int4(const float* act, int* ids, float* wts, int topk, int normalize, const uint4* codes,
                                   const void* scales, const u32* zeros, float global, float* out, int accumulate, int N, int K,
                                   int E, int* err, const float* lo, const unsigned long long* tab, float sc, int rank,
                                   const float* logits, int pickNormalize) {
    ORBIT_TRACE_KERNEL();
    __shared__ float lg[32 * QGD_MAX_TOPK];
    __shared__ float wt[QGD_MAX_TOPK];
    __shared__ int picked[QGD_MAX_TOPK];
    int t = blockIdx.y;
    for (int c = threadIdx.x; c < E; c += blockDim.x) lg[c] = __ldcg(logits + (i64) t * E + c);
    __syncthreads();
    router_select_block(lg, E, topk, pickNormalize, wt, picked);
    __syncthreads();
    QgdBegun<QGD_R, QGD_U> b;
    qgd_begin<QF_INT4, QGD_KQ, QGD_R, QGD_U, true>(b, nullptr, topk, codes, scales, zeros, global, N, K, E,
                                                   picked[threadIdx.x >> 5]);
    pdl_enter();
    if (blockIdx.x == 0 && (int) threadIdx.x < topk) {
        ids[t * topk + threadIdx.x] = picked[threadIdx.x];
        wts[t * topk + threadIdx.x] = wt[threadIdx.x];
    }
    qgd_finish<QF_INT4, QGD_KQ, QGD_R, QGD_U, true>(b, act, wt, topk, normalize, codes, scales, zeros, global, out, accumulate,
                                                    N, K, err, QgLora{lo, tab, sc, rank});
}
QG_DECODE_LORA_KERNELS(mxfp4, QF_MXFP4)
QG_DECODE_LORA_KERNELS(nvfp4, QF_NVFP4)
QG_DECODE_KERNELS(mxfp4, QF_MXFP4)
QG_DECODE_KERNELS(nvfp4, QF_NVFP4)
