// A decode token's routed experts in one launch, a thread block cluster a (token, expert) pair (moe_experts_cluster_*):
// every block asks for all of its weights at once (cp.async into shared memory: its rows of gate and up, the first
// half of K then the second, then its rows of down), so that the experts' bytes stream from the launch's start while
// the products follow them in; the pair's SwiGLU rows pass from block to block through distributed shared memory.
//
// Pair p = blockIdx.x / C of token t = p / topk (expert e = ids[p]); the cluster's block c (its rank) takes gate's and
// up's rows c * RG .. + RG - 1 of the expert (RG = I / C: MC_WARPS warps of RWG rows) and down's rows c * RD .. + RD - 1
// (RD = H / C: MC_WARPS warps of RWD rows). Then, as qgemv_down_combine weights its pairs, the
// block of rank c that finishes token t's rows last (a ticket per (t, c), re-armed to 0) adds
// sum over j < topk, in order, of wts[t, j] * ys[t * topk + j] (the pairs' down rows, ys f32 [pairs, H]) into out[t].
//
// INT4 g32 with the zero 8 (int4-g32: codes uint4 [E * N, K / 32], scales bf16 [E * N, K / 32]); x f32 [tokens, H]
// (the experts' input), act = silu(x . gate) * (x . up) in f32, f32 products of exact weight values and f32 sums.

#include "qgemv_group.cuh"

#define MC_WARPS 8

// Issues the copies of `rows` rows of a code matrix at src (`groups` 16-byte groups a row), groups g0 .. g0 + count - 1
// of each, into dst (the same row stride), the block's threads taking the pieces in turn.
__device__ __forceinline__ void mc_stage_codes(u32 dst, const uint4* src, int rows, int groups, int g0, int count) {
    for (int i = threadIdx.x; i < rows * count; i += blockDim.x) {
        int r = i / count;
        int g = g0 + i - r * count;
        cp_async16_zfill(dst + (u32) (16 * (r * groups + g)), src + (i64) r * groups + g, true);
    }
}

// Issues the copies of `bytes` contiguous bytes (a multiple of 16) from src into dst.
__device__ __forceinline__ void mc_stage_bytes(u32 dst, const void* src, int bytes) {
    for (int i = threadIdx.x; i < bytes / 16; i += blockDim.x) cp_async16_zfill(dst + 16u * (u32) i, (const char*) src + 16 * (i64) i, true);
}

// acc + (the 8 values of code word `word`, zero 8, times x8[0 .. 7], summed from the first) * s: qg_group's product of a
// word, whose groups a lane of these kernels takes a word of (lanes 4i .. 4i + 3 the four words of a group, so that
// a warp reads 128 contiguous bytes of codes and 1 KiB of x at a time).
__device__ __forceinline__ float mc_word(u32 word, float s, float4 a, float4 b, float acc) {
    float w[8];
    qg_decode8<QF_INT4>(word, 8388616.0f, w);
    float d = w[0] * a.x;
    d = fmaf(w[1], a.y, d);
    d = fmaf(w[2], a.z, d);
    d = fmaf(w[3], a.w, d);
    d = fmaf(w[4], b.x, d);
    d = fmaf(w[5], b.y, d);
    d = fmaf(w[6], b.z, d);
    d = fmaf(w[7], b.w, d);
    return fmaf(d, s, acc);
}

// RWG: gate/up rows a warp; RWD: down rows a warp. Lane l takes word l % 4 of groups l / 4 + 8 m of each of its rows.
template <int RWG, int RWD>
__device__ __forceinline__ void moe_experts_cluster(const float* x, const int* ids, const float* wts, int topk, const uint4* gc,
                                                    const u16* gs, const uint4* uc, const u16* us, const uint4* dc, const u16* ds,
                                                    float* out, int accumulate, int H, int I, int E, float* ys, int* tickets, int* err) {
    constexpr int RG = MC_WARPS * RWG;   // gate (and up) rows of a block
    constexpr int RD = MC_WARPS * RWD;   // down rows of a block
    extern __shared__ __align__(16) unsigned char mc_sm[];
    int C = H / RD;                      // blocks of a pair: the launch's cluster size
    int rank = blockIdx.x % C;
    int p = blockIdx.x / C;
    int t = p / topk;
    int GI = H / 32;                     // gate/up groups a row
    int GD = I / 32;                     // down groups a row
    // shared memory: gate codes, up codes [RG][GI] x 16 B; gate, up scales [RG][GI] bf16; down codes [RD][GD] x 16 B;
    // down scales [RD][GD] bf16; x [H] f32; act [I] f32
    int codesBytes = RG * GI * 16;
    int scaleBytes = RG * GI * 2;
    const u32* gq = (const u32*) mc_sm;
    const u32* uq = (const u32*) (mc_sm + codesBytes);
    const u16* gsc = (const u16*) (mc_sm + 2 * codesBytes);
    const u16* usc = (const u16*) (mc_sm + 2 * codesBytes + scaleBytes);
    const u32* dq = (const u32*) (mc_sm + 2 * codesBytes + 2 * scaleBytes);
    const u16* dsc = (const u16*) (mc_sm + 2 * codesBytes + 2 * scaleBytes + RD * GD * 16);
    float* xs = (float*) (mc_sm + 2 * codesBytes + 2 * scaleBytes + RD * GD * 18);
    float* act = xs + H;
    int e = ids[p];
    bool ok = e >= 0 && e < E;
    if (!ok) { // every block still takes both cluster barriers: expert 0's rows, the pair's rows NaN
        if (rank == 0 && threadIdx.x == 0) report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, p);
        e = 0;
    }
    i64 g0 = (i64) e * I + (i64) rank * RG;   // the block's first gate/up row
    i64 d0 = (i64) e * H + (i64) rank * RD;   // its first down row
    // three groups of copies: gate's and up's first half of K with every scale, their second half, down
    mc_stage_codes(smem_addr(gq), gc + g0 * GI, RG, GI, 0, GI / 2);
    mc_stage_codes(smem_addr(uq), uc + g0 * GI, RG, GI, 0, GI / 2);
    mc_stage_bytes(smem_addr(gsc), gs + g0 * GI, scaleBytes);
    mc_stage_bytes(smem_addr(usc), us + g0 * GI, scaleBytes);
    cp_async_commit();
    mc_stage_codes(smem_addr(gq), gc + g0 * GI, RG, GI, GI / 2, GI - GI / 2);
    mc_stage_codes(smem_addr(uq), uc + g0 * GI, RG, GI, GI / 2, GI - GI / 2);
    cp_async_commit();
    mc_stage_codes(smem_addr(dq), dc + d0 * GD, RD, GD, 0, GD);
    mc_stage_bytes(smem_addr(dsc), ds + d0 * GD, RD * GD * 2);
    cp_async_commit();
    for (int c = threadIdx.x; c < H / 4; c += blockDim.x) ((float4*) xs)[c] = ((const float4*) (x + (i64) t * H))[c];

    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int wd = lane & 3;
    // gate and up: warp w's rows w * RWG .. + RWG - 1, over the first half of K's groups, then the second
    float ag[RWG], au[RWG];
#pragma unroll
    for (int r = 0; r < RWG; r++) {
        ag[r] = 0.0f;
        au[r] = 0.0f;
    }
    for (int half = 0; half < 2; half++) {
        if (half == 0) {
            cp_async_wait<2>();
        } else {
            cp_async_wait<1>();
        }
        __syncthreads();
        int hi = half == 0 ? GI / 2 : GI;
        for (int g = (half == 0 ? 0 : GI / 2) + (lane >> 2); g < hi; g += 8) {
            float4 a = *(const float4*) (xs + 32 * g + 8 * wd);
            float4 b = *(const float4*) (xs + 32 * g + 8 * wd + 4);
#pragma unroll
            for (int r = 0; r < RWG; r++) {
                int i = (warp * RWG + r) * GI + g;
                ag[r] = mc_word(gq[4 * i + wd], bf16_to_f32(gsc[i]), a, b, ag[r]);
                au[r] = mc_word(uq[4 * i + wd], bf16_to_f32(usc[i]), a, b, au[r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < RWG; r++) {
        float gv = warp_sum(ag[r]);
        float uv = warp_sum(au[r]);
        if (lane == 0) act[rank * RG + warp * RWG + r] = gv / (1.0f + expf(-gv)) * uv; // swiglu_f32's expression
    }
    cluster_sync();   // every block's act rows written
    u32 actAddr = smem_addr(act);
    for (int i = threadIdx.x; i < I; i += blockDim.x) {
        int owner = i / RG;
        if (owner != rank) act[i] = ld_cluster_f32(cluster_addr(actAddr + 4u * (u32) i, (u32) owner));
    }
    cp_async_wait<0>();
    cluster_sync();   // the act gathered everywhere (no block reads another's after this) and down's rows landed

    // down: warp w's rows w * RWD .. + RWD - 1
    float ad[RWD];
#pragma unroll
    for (int r = 0; r < RWD; r++) ad[r] = 0.0f;
    for (int g = lane >> 2; g < GD; g += 8) {
        float4 a = *(const float4*) (act + 32 * g + 8 * wd);
        float4 b = *(const float4*) (act + 32 * g + 8 * wd + 4);
#pragma unroll
        for (int r = 0; r < RWD; r++) {
            int i = (warp * RWD + r) * GD + g;
            ad[r] = mc_word(dq[4 * i + wd], bf16_to_f32(dsc[i]), a, b, ad[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < RWD; r++) {
        float v = warp_sum(ad[r]);
        if (lane == 0) ys[(i64) p * H + rank * RD + warp * RWD + r] = ok ? v : __int_as_float(0x7fc00000);
    }
    // the token's rows of this rank weighted into out by the block that finishes them last
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(tickets + (i64) t * C + rank, 1) == topk - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float* wt = wts + (i64) t * topk;
    for (int r = threadIdx.x; r < RD; r += blockDim.x) {
        int n = rank * RD + r;
        float v = 0.0f;
        for (int j = 0; j < topk; j++) v += wt[j] * __ldcg(ys + ((i64) t * topk + j) * H + n);
        float* o = out + (i64) t * H + n;
        *o = accumulate ? *o + v : v;
    }
    if (threadIdx.x == 0) tickets[(i64) t * C + rank] = 0;
}

// Qwen3-30B-A3B's experts (H 2048, I 768) in clusters of 16: 48 gate/up rows and 128 down rows a block.
extern "C" __global__ void __launch_bounds__(32 * MC_WARPS, 1) moe_experts_cluster_r6x16_int4(
    const float* x, const int* ids, const float* wts, int topk, const uint4* gc, const u16* gs, const uint4* uc, const u16* us,
    const uint4* dc, const u16* ds, float* out, int accumulate, int H, int I, int E, float* ys, int* tickets, int* err) {
    pdl_enter();
    moe_experts_cluster<6, 16>(x, ids, wts, topk, gc, gs, uc, us, dc, ds, out, accumulate, H, I, E, ys, tickets, err);
}
