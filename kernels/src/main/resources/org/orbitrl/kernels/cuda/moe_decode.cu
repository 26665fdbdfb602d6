// The routed MLP of one decode token as one persistent launch: x += sum_j w_j * Down[e_j](silu(G[e_j] h) * U[e_j] h)
// with h = rmsnorm(x) and (w, e) the router's top-k, where the separate launches of the router, the
// gate/up/SwiGLU and the down/combine each paid a launch's latency for a few microseconds of loads.
//
// A cooperative grid (every block resident at once) walks three phases separated by grid barriers:
//   R  every block stages h = nw * (x / sqrt(mean(x^2) + eps)) in shared memory (rmsnorm_f32's
//      expression); warp w of block b computes router logit w * grid + b (its row's loads issued
//      before x is read).
//   S  every block reads the E logits and selects the top-k itself (router_select_warp: softmax, ties to
//      the lower expert, optional division by the sum), prefetches into L2 the down rows it will take in
//      phase D and its second gate/up tile, then computes (row chunk, routed expert) tiles of gate and
//      up from h (already staged) and writes silu(g) * u into act [topk, I].
//   D  every block stages the topk act rows and computes 8-row chunks of the down products, one warp an
//      expert, weighted and added to x in expert order (moe_combine's order).
// The barriers count arrivals in bar[0]; the last block to leave re-arms bar[0] and bar[1] to 0 for the
// next launch. Products are qgemv's (exact weight values, f32 accumulation, the same lane split).
//
// Measured on the H200 (Qwen3-30B-A3B shape, MoeDecodeTrace): each barrier costs about 0.6 us, but the
// phases read memory no faster than the separate launches do (gate/up and down at 1.1-1.5 TB/s), and the
// whole step came out 0.95x-1.06x of the three launches from run to run, so CudaFusedDecode takes it
// only when asked (-Dorbit.cuda.moeDecode=persistent).

#include "qgemv_group.cuh"
#include "router.cuh"

#define MD_WARPS 8         // warps of a block (256 threads)
#define MD_KQ 8            // k lanes of a warp in the expert products
#ifndef MD_GU_R
#define MD_GU_R 4          // gate/up: rows of a lane (of each matrix): 16-row tiles
#endif
#define MD_DN_R 2          // down: rows of a lane: 8-row chunks
#define MD_DN_U 3          // down: steps whose loads are issued together
#define MD_MAX_TOPK 8      // one warp per routed expert in phase D

// Waits until `target` blocks have arrived at bar (this block included). Orders every write of the
// block before the arrival, and the reads after it after every other block's arrival; data other
// blocks wrote is read past L1 (__ldcg).
__device__ __forceinline__ void md_grid_sync(u32* bar, u32 target) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(bar, 1u);
        u32 v;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(bar) : "memory");
        } while (v < target);
    }
    __syncthreads();
}

// Timestamps of a launch's phases (trace non-null: [grid][16] ns of the global timer, block by block).
__device__ __forceinline__ void md_mark(long long* trace, int k) {
    if (trace != 0 && threadIdx.x == 0) {
        long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        trace[blockIdx.x * 16 + k] = t;
    }
}

// Asks L2 for the bytes [p, p + n) as 128-byte lines, spread over the block's threads.
__device__ __forceinline__ void md_prefetch(const void* p, i64 n) {
    const char* c = (const char*) ((size_t) p & ~(size_t) 127);
    i64 lines = ((const char*) p + n - c + 127) >> 7;
    for (i64 i = threadIdx.x; i < lines; i += blockDim.x) asm volatile("prefetch.global.L2 [%0];" ::"l"(c + (i << 7)));
}

// Bytes of one row's scale factors (G groups): bf16 a group (INT4), one E8M0 byte (MXFP4), two E4M3 (NVFP4).
template <int FMT>
__device__ __forceinline__ int md_scale_bytes(int G) {
    return FMT == QF_MXFP4 ? G : 2 * G;
}

// L2 prefetch of rows [row, row + n) of a quantized matrix with K columns (codes and scale factors).
template <int FMT>
__device__ __forceinline__ void md_prefetch_rows(const uint4* codes, const void* scales, i64 row, int n, int K) {
    int G = K / 32;
    md_prefetch((const char*) codes + row * (K / 2), (i64) n * (K / 2));
    md_prefetch((const char*) scales + row * md_scale_bytes<FMT>(G), (i64) n * md_scale_bytes<FMT>(G));
}

// L2 prefetch of the block's second gate/up tile (its loads then wait on L2 rather than on memory).
template <int FMT>
__device__ __forceinline__ void md_prefetch_second_tile(const uint4* gc, const void* gs, const uint4* uc, const void* us, int H, int I,
                                                        const int* sid, int chunks, int tiles, int RB) {
    int vb = blockIdx.x + gridDim.x;
    if (vb < tiles) {
        i64 row = (i64) sid[vb / chunks] * I + (vb % chunks) * RB;
        int rows = I - (vb % chunks) * RB < RB ? I - (vb % chunks) * RB : RB;
        md_prefetch_rows<FMT>(gc, gs, row, rows, H);
        md_prefetch_rows<FMT>(uc, us, row, rows, H);
    }
}

// L2 prefetch of the routed experts' down rows the block's chunks of phase D will read.
template <int FMT>
__device__ __forceinline__ void md_prefetch_down(const uint4* dc, const void* ds, int H, int I, int topk, const int* sid, int DRB,
                                                 int dchunks) {
    for (int c = blockIdx.x; c < dchunks; c += gridDim.x) {
        int rows = H - c * DRB < DRB ? H - c * DRB : DRB;
        for (int j = 0; j < topk; j++) md_prefetch_rows<FMT>(dc, ds, (i64) sid[j] * H + c * DRB, rows, I);
    }
}

// Phases S (after the selection) and D of moe_decode: the block's gate/up tiles into act, the grid
// barrier, the block's down chunks into x.
template <int FMT>
__device__ __forceinline__ void moe_decode_experts(float* x, int topk, const uint4* __restrict__ gc, const void* __restrict__ gs,
                                                   const u32* __restrict__ gz, float gglobal, const uint4* __restrict__ uc,
                                                   const void* __restrict__ us, const u32* __restrict__ uz, float uglobal,
                                                   const uint4* __restrict__ dc, const void* __restrict__ ds,
                                                   const u32* __restrict__ dz, float dglobal, int H, int I, float* act, u32* bar,
                                                   const float* xs, float* as, const int* sid, const float* swt,
                                                   long long* trace) {
    __shared__ float red[2][MD_WARPS][32 / MD_KQ * MD_GU_R];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    constexpr int DRB = 32 / MD_KQ * MD_DN_R; // rows of a down chunk
    int dchunks = (H + DRB - 1) / DRB;
    constexpr int RL = 32 / MD_KQ;
    constexpr int RB = RL * MD_GU_R; // rows of a gate/up tile
    int chunks = (I + RB - 1) / RB;
    int tiles = chunks * topk;
    int G = H / 32;
    int rl = lane % RL;
    int kq = lane / RL;
    int S = MD_WARPS * MD_KQ;
    const char* xr[1] = {(const char*) xs};
    md_prefetch_down<FMT>(dc, ds, H, I, topk, sid, DRB, dchunks);
    md_prefetch_second_tile<FMT>(gc, gs, uc, us, H, I, sid, chunks, tiles, RB);
    for (int vb = blockIdx.x; vb < tiles; vb += gridDim.x) {
        int j = vb / chunks;
        int row0 = (vb % chunks) * RB;
        int e = sid[j];
        i64 grow[MD_GU_R];
#pragma unroll
        for (int r = 0; r < MD_GU_R; r++) {
            int n = row0 + rl + RL * r;
            grow[r] = (i64) e * I + (n < I ? n : I - 1);
        }
        float ag[MD_GU_R][1], au[MD_GU_R][1];
#pragma unroll
        for (int r = 0; r < MD_GU_R; r++) {
            ag[r][0] = 0.0f;
            au[r][0] = 0.0f;
        }
        uint4 qg[1][MD_GU_R], qu[1][MD_GU_R];
        float gs0[1][MD_GU_R], gs1[1][MD_GU_R], gzb[1][MD_GU_R], us0[1][MD_GU_R], us1[1][MD_GU_R], uzb[1][MD_GU_R];
        int g = warp * MD_KQ + kq;
        if (g < G) {
            qg_fetch<FMT, MD_GU_R, 1>(gc, gs, gz, gglobal, grow, G, g, S, qg, gs0, gs1, gzb);
            qg_fetch<FMT, MD_GU_R, 1>(uc, us, uz, uglobal, grow, G, g, S, qu, us0, us1, uzb);
        }
        qg_gate_up_steps<FMT, MD_GU_R>(gc, gs, gz, gglobal, uc, us, uz, uglobal, grow, G, g, S, xr, H, qg, gs0, gs1, gzb, qu, us0,
                                       us1, uzb, ag, au);
        qg_gate_up_to_shared<RL, MD_GU_R, MD_WARPS>(ag, au, red, warp, rl, kq);
        __syncthreads();
        if ((int) threadIdx.x < RB && row0 + (int) threadIdx.x < I) {
            float gv = 0.0f;
            float uv = 0.0f;
            for (int w = 0; w < MD_WARPS; w++) {
                gv += red[0][w][threadIdx.x];
                uv += red[1][w][threadIdx.x];
            }
            act[(i64) j * I + row0 + threadIdx.x] = gv / (1.0f + expf(-gv)) * uv; // swiglu_f32's expression
        }
        __syncthreads();
    }
    md_mark(trace, 5);
    md_grid_sync(bar, 2u * gridDim.x);
    md_mark(trace, 6);

    // Phase D: the act rows staged, then down chunks, warp j = routed expert j.
    for (int j = warp; j < topk; j += MD_WARPS) {
        const float4* ag = (const float4*) (act + (i64) j * I);
        for (int c = lane; c < I / 4; c += 32) ((float4*) (as + j * I))[c] = __ldcg(ag + c);
    }
    __syncthreads();
    md_mark(trace, 7);
    constexpr int DRL = 32 / MD_KQ;
    int GD = I / 32;
    int drl = lane % DRL;
    int dkq = lane / DRL;
    for (int vb = blockIdx.x; vb < dchunks; vb += gridDim.x) {
        int row0 = vb * DRB;
        float acc[MD_DN_R][1];
#pragma unroll
        for (int r = 0; r < MD_DN_R; r++) acc[r][0] = 0.0f;
        if (warp < topk) {
            int e = sid[warp];
            i64 grow[MD_DN_R];
#pragma unroll
            for (int r = 0; r < MD_DN_R; r++) {
                int n = row0 + drl + DRL * r;
                grow[r] = (i64) e * H + (n < H ? n : H - 1);
            }
            const char* ar[1] = {(const char*) (as + warp * I)};
            uint4 q[MD_DN_U][MD_DN_R];
            float s0[MD_DN_U][MD_DN_R], s1[MD_DN_U][MD_DN_R], zb[MD_DN_U][MD_DN_R];
            for (int g = dkq; g < GD; g += MD_DN_U * MD_KQ) {
                qg_fetch<FMT, MD_DN_R, MD_DN_U>(dc, ds, dz, dglobal, grow, GD, g, MD_KQ, q, s0, s1, zb);
                qg_apply<FMT, 1, false, MD_DN_R, MD_DN_U>(q, s0, s1, zb, GD, g, MD_KQ, ar, 1, I, acc);
            }
        }
#pragma unroll
        for (int r = 0; r < MD_DN_R; r++) {
            float v = acc[r][0];
#pragma unroll
            for (int o = DRL; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (dkq == 0) red[0][warp][drl + DRL * r] = v;
        }
        __syncthreads();
        if ((int) threadIdx.x < DRB && row0 + (int) threadIdx.x < H) {
            float v = 0.0f;
            for (int j = 0; j < topk; j++) v += swt[j] * red[0][j][threadIdx.x];
            x[row0 + threadIdx.x] += v;
        }
        __syncthreads();
    }

}

template <int FMT>
__device__ __forceinline__ void moe_decode(float* x, const void* nw, int nwBf16, float eps, const uint4* __restrict__ rw, int E,
                                           int topk, int normalize, const uint4* __restrict__ gc, const void* __restrict__ gs,
                                           const u32* __restrict__ gz, float gglobal, const uint4* __restrict__ uc,
                                           const void* __restrict__ us, const u32* __restrict__ uz, float uglobal,
                                           const uint4* __restrict__ dc, const void* __restrict__ ds, const u32* __restrict__ dz,
                                           float dglobal, int H, int I, float* logits, float* act, float* values, int* indices,
                                           u32* bar, int* err, long long* trace) {
    extern __shared__ __align__(16) float smem[];
    float* xs = smem;           // [H]: h
    float* as = smem + H;       // [topk][I]: the act rows (phase D)
    float* lg = as + topk * I;  // [E]: the logits (phase S)
    __shared__ float sh[32];
    __shared__ float swt[MD_MAX_TOPK];
    __shared__ int sid[MD_MAX_TOPK];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int gridWarps = gridDim.x * MD_WARPS;
    md_mark(trace, 0);

    // Phase R: h, and the router logits of warps w < E.
    int units = H / 8;
    int re = warp * gridDim.x + blockIdx.x; // the rows spread over the blocks: warp 0 of every block first
    uint4 rq[8];
    if (re < E) router_fetch(rw + (i64) re * units, units, 0, lane, rq);
    float inv = row_rms_inv(x, H, eps, sh);
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        float wi = nwBf16 ? bf16_to_f32(((const u16*) nw)[c]) : ((const float*) nw)[c];
        xs[c] = wi * (x[c] * inv);
    }
    __syncthreads();
    md_mark(trace, 1);
    for (int e = re; e < E; e += gridWarps) {
        const uint4* wrow = rw + (i64) e * units;
        if (e != re) router_fetch(wrow, units, 0, lane, rq);
        float acc = 0.0f;
        router_dot_units(rq, xs, units, 0, lane, acc);
        for (int u0 = 256; u0 < units; u0 += 256) {
            router_fetch(wrow, units, u0, lane, rq);
            router_dot_units(rq, xs, units, u0, lane, acc);
        }
        acc = warp_sum(acc);
        if (lane == 0) logits[e] = acc;
    }
    md_mark(trace, 2);
    md_grid_sync(bar, gridDim.x);
    md_mark(trace, 3);

    // Phase S: the top-k (every block), then gate/up/SwiGLU tiles.
    for (int c = threadIdx.x; c < E; c += blockDim.x) lg[c] = __ldcg(logits + c);
    __syncthreads();
    if (warp == 0) router_select_warp(lg, E, topk, normalize, swt, sid);
    __syncthreads();
    md_mark(trace, 4);
    if (blockIdx.x == 0 && (int) threadIdx.x < topk) {
        values[threadIdx.x] = swt[threadIdx.x];
        indices[threadIdx.x] = sid[threadIdx.x];
    }
    bool ok = true; // every block selects the same experts, so all take the same way below
    for (int j = 0; j < topk; j++) {
        int e = sid[j];
        if (e < 0 || e >= E) { // no expert (the logits were not numbers): nothing more is computed
            if (blockIdx.x == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, j);
            ok = false;
        }
    }
    if (ok) moe_decode_experts<FMT>(x, topk, gc, gs, gz, gglobal, uc, us, uz, uglobal, dc, ds, dz, dglobal, H, I, act, bar,
                                    xs, as, sid, swt, trace);
    md_mark(trace, 8);
    // The last block out re-arms the barrier for the next launch.
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(bar + 1, 1u) == gridDim.x - 1) {
            bar[0] = 0u;
            bar[1] = 0u;
        }
    }
}

#define MD_KERNEL(FNAME, FMT)                                                                                               \
    extern "C" __global__ void __launch_bounds__(32 * MD_WARPS, 2) moe_decode_##FNAME(                                         \
        float* x, const void* nw, int nwBf16, float eps, const uint4* rw, int E, int topk, int normalize, const uint4* gc,  \
        const void* gs, const u32* gz, float gglobal, const uint4* uc, const void* us, const u32* uz, float uglobal,        \
        const uint4* dc, const void* ds, const u32* dz, float dglobal, int H, int I, float* logits, float* act,              \
        float* values, int* indices, u32* bar, int* err, long long* trace) {                                      \
        ORBIT_TRACE_KERNEL();                                                                                               \
        moe_decode<FMT>(x, nw, nwBf16, eps, rw, E, topk, normalize, gc, gs, gz, gglobal, uc, us, uz, uglobal, dc, ds, dz,   \
                        dglobal, H, I, logits, act, values, indices, bar, err, trace);                                      \
    }

MD_KERNEL(int4, QF_INT4)
MD_KERNEL(mxfp4, QF_MXFP4)
MD_KERNEL(nvfp4, QF_NVFP4)
