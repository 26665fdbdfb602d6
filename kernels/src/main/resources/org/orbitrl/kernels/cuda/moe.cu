// Device-side grouping of mixture-of-experts (token, expert) pairs by expert, and the row moves of
// the expert-chunked path.
//
// Routing buffer (i32), for E experts and P pairs:
//   offsets [E + 1]   pairs of expert e are order[offsets[e] .. offsets[e + 1])
//   active  [1 + E]   active[0] = number of experts with at least one pair, then those experts ascending
//   order   [P]       pair indices grouped by expert (within an expert in ascending pair order)

#include "router.cuh"

#define MR_RANK_PAIRS 1024 // pairs up to which moe_route ranks each pair among its expert's in parallel

__device__ __forceinline__ u32 dynamic_smem_bytes() {
    u32 n;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(n));
    return n;
}

// The pairs of ids [P] i32 grouped by expert into the routing buffer, by one block (blockDim a multiple of 32, at most
// 1024) with shared memory sh of 2 * E ints, or 2 * E ints and (P + 31) / 32 * E bytes; an id outside [0, E) is
// reported and its pair joins no expert. The ids are read past L1 (ld.global.cg), so that values other blocks of the
// same launch wrote are seen (moe_router_tiles' last block runs this too).
// With room for the table (at most MR_RANK_PAIRS pairs: a decode step's), every pair is placed at once: the pairs are
// taken in 32-pair tiles, a warp a tile, and __match_any_sync finds each tile's pairs of the same expert; tab[tile, e]
// counts them, so a pair's place is its expert's first slot, plus its expert's pairs in the tiles before its own, plus
// those before it in its own tile. Else warp 0 scatters the tiles in order. Both give the same order.
__device__ __forceinline__ void route_pairs(const int* ids, int P, int E, int* offsets, int* active, int* order,
                                            int* err, int* sh) {
    int* cnt = sh;
    int* start = sh + E;
    u8* tab = (u8*) (sh + 2 * E);
    int tiles = (P + 31) >> 5;
    bool rank = P <= MR_RANK_PAIRS && 8u * E + (u32) tiles * E <= dynamic_smem_bytes();
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int warps = blockDim.x >> 5;
    for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
    if (rank) {
        for (int i = threadIdx.x; i < tiles * E; i += blockDim.x) tab[i] = 0;
    }
    __syncthreads();
    if (rank) {
        for (int tile = warp; tile < tiles; tile += warps) {
            int p = tile * 32 + lane;
            int e = p < P ? __ldcg(ids + p) : -1;
            bool ok = e >= 0 && e < E;
            if (p < P && !ok) report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, p);
            u32 same = __match_any_sync(0xffffffffu, e); // the tile's lanes holding this lane's expert
            if (ok && lane == __ffs(same) - 1) {         // the first of them counts them
                int n = __popc(same);
                tab[tile * E + e] = (u8) n;
                atomicAdd(&cnt[e], n);
            }
        }
    } else {
        for (int p = threadIdx.x; p < P; p += blockDim.x) {
            int e = __ldcg(ids + p);
            if (e < 0 || e >= E) {
                report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, p);
            } else {
                atomicAdd(&cnt[e], 1);
            }
        }
    }
    __syncthreads();
    if (threadIdx.x < 32) { // warp 0: lane i scans experts [i*per, (i+1)*per)
        int per = (E + 31) / 32;
        int lo = lane * per < E ? lane * per : E;
        int hi = lo + per < E ? lo + per : E;
        int sum = 0;
        int nz = 0;
        for (int e = lo; e < hi; e++) {
            sum += cnt[e];
            nz += cnt[e] > 0 ? 1 : 0;
        }
        int incS = sum;
        int incN = nz;
        for (int o = 1; o < 32; o <<= 1) {
            int a = __shfl_up_sync(0xffffffffu, incS, o);
            int b = __shfl_up_sync(0xffffffffu, incN, o);
            if (lane >= o) {
                incS += a;
                incN += b;
            }
        }
        int s = incS - sum;
        int n = incN - nz;
        for (int e = lo; e < hi; e++) {
            offsets[e] = s;
            start[e] = s;
            if (cnt[e] > 0) active[1 + n++] = e;
            s += cnt[e];
        }
        if (lane == 31) {
            offsets[E] = incS;
            active[0] = incN;
        }
    }
    __syncthreads();
    if (rank) {
        for (int tile = warp; tile < tiles; tile += warps) {
            int p = tile * 32 + lane;
            int e = p < P ? __ldcg(ids + p) : -1;
            bool ok = e >= 0 && e < E;
            u32 same = __match_any_sync(0xffffffffu, e);
            if (ok) {
                int before = __popc(same & ((1u << lane) - 1u));
                for (int j = 0; j < tile; j++) before += tab[j * E + e];
                order[start[e] + before] = p;
            }
        }
        return;
    }
    // Stable scatter: warp w places pairs in 32-pair tiles, tiles in order, one warp at a time per tile,
    // ranking pairs of equal expert inside a tile by lane.
    if (threadIdx.x < 32) {
        for (int base = 0; base < P; base += 32) {
            int p = base + lane;
            int e = p < P ? __ldcg(ids + p) : -1;
            bool ok = e >= 0 && e < E;
            int rank = 0;
            int same = 0;
            for (int j = 0; j < 32; j++) {
                int ej = __shfl_sync(0xffffffffu, e, j);
                if (ok && ej == e) {
                    if (j < lane) rank++;
                    same++;
                }
            }
            if (ok) order[start[e] + rank] = p;
            __syncwarp();
            if (ok && rank == same - 1) start[e] += same; // the last of its expert in the tile advances it
            __syncwarp();
        }
    }
}

// route_pairs in a launch of its own: one block, dynamic shared memory as route_pairs says.
extern "C" __global__ void moe_route(const int* ids, int P, int E, int* offsets, int* active, int* order, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ int sh[]; // cnt [E], then start [E], then (rank) tab [tiles, E] bytes
    route_pairs(ids, P, E, offsets, active, order, err, sh);
}

// xs[i] = x[order[i] / xDiv] rounded to bf16 (round to nearest even); xs [P, K], x f32 [*, K].
extern "C" __global__ void moe_gather_bf16(const float* x, int xDiv, const int* order, u16* xs, int P, int K) {
    ORBIT_TRACE_KERNEL();
    i64 total = (i64) P * K;
    GRID_STRIDE(idx, total) {
        int i = (int) (idx / K);
        int c = (int) (idx % K);
        xs[idx] = f32_to_bf16_bits(x[(i64) (order[i] / xDiv) * K + c]);
    }
}

// y[order[i]] = ys[i]: rows of ys [P, N] (grouped by expert) back to pair order.
extern "C" __global__ void moe_scatter_rows(const float* ys, const int* order, float* y, int P, int N) {
    ORBIT_TRACE_KERNEL();
    i64 total = (i64) P * N;
    GRID_STRIDE(idx, total) {
        int i = (int) (idx / N);
        int c = (int) (idx % N);
        y[(i64) order[i] * N + c] = ys[idx];
    }
}

// out[t] (+)= sum_j w[t, j] * ys[t * topk + j] / (normalize ? sum_j w[t, j] : 1): the routed experts'
// outputs weighted into each token's row. ys [T * topk, H], w [T, topk] f32, out [T, H]. Block (t, chunk): token
// t's columns chunk * blockDim.x + threadIdx.x, + gridDim.y * blockDim.x, ... (a column's sum in the same order
// whatever the grid).
extern "C" __global__ void moe_combine(const float* ys, const float* w, int topk, int normalize, float* out, int accumulate,
                                       int H) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    int t = blockIdx.x;
    const float* wt = w + (i64) t * topk;
    float norm = 1.0f;
    if (normalize) {
        float s = 0.0f;
        for (int j = 0; j < topk; j++) s += wt[j];
        norm = 1.0f / s;
    }
    for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < H; c += gridDim.y * blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < topk; j++) acc += wt[j] * ys[((i64) t * topk + j) * H + c];
        acc *= norm;
        float* o = out + (i64) t * H + c;
        *o = accumulate ? *o + acc : acc;
    }
}

// One router logit per warp: x[t] . w[e] (w bf16 [E, H], H a multiple of 8, 16-byte aligned rows; f32
// accumulate, lanes over 8-wide units, then the warp's sum).
__device__ __forceinline__ float moe_router_dot(const float* xs, const uint4* w, int units, int e, int lane) {
    const uint4* row = w + (i64) e * units;
    float acc = 0.0f;
    for (int u = lane; u < units; u += 32) router_unit(row[u], xs + u * 8, acc);
    return warp_sum(acc);
}

// Router logits spread over the device (grid T * ceil(E / warps), dynamic shared H floats): block
// (t, chunk) stages x[t] and its warps compute the logits of experts chunk * warps + warp into
// logits f32 [T, E]. The same per-expert sum as moe_router_topk's own, bit for bit.
extern "C" __global__ void moe_router_logits(const float* x, const uint4* w, int H, int E, float* logits) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float xs[];   // [H]
    int warps = blockDim.x >> 5;
    int chunks = (E + warps - 1) / warps;
    int t = blockIdx.x / chunks;
    int e = (blockIdx.x % chunks) * warps + (threadIdx.x >> 5);
    for (int c = threadIdx.x; c < H; c += blockDim.x) xs[c] = x[(i64) t * H + c];
    __syncthreads();
    if (e < E) {
        float v = moe_router_dot(xs, w, H / 8, e, threadIdx.x & 31);
        if ((threadIdx.x & 31) == 0) logits[(i64) t * E + e] = v;
    }
}

// Softmax over the E logits lg (shared memory, overwritten) by the whole block, then the topk largest
// probabilities in descending order (ties to the lower expert, as the scalar backend), optionally divided
// by their sum, into values f32 [topk] and indices i32 [topk]. red, redi: 32 entries of shared memory.
__device__ __forceinline__ void router_select(float* lg, int E, int topk, int normalize, float* values, int* indices,
                                              float* red, int* redi) {
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int warps = blockDim.x >> 5;
    float m = -ORBIT_INF;
    for (int e = threadIdx.x; e < E; e += blockDim.x) m = fmaxf(m, lg[e]);
    m = block_max(m, red);
    float s = 0.0f;
    for (int e = threadIdx.x; e < E; e += blockDim.x) s += expf(lg[e] - m);
    s = block_sum(s, red);
    float inv = 1.0f / s;
    for (int e = threadIdx.x; e < E; e += blockDim.x) lg[e] = expf(lg[e] - m) * inv;
    __syncthreads();
    float picked = 0.0f;
    for (int j = 0; j < topk; j++) {
        float bv;
        int bi;
        warp_pick(lg, threadIdx.x, blockDim.x, E, bv, bi);
        if (lane == 0) {
            red[warp] = bv;
            redi[warp] = bi;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int i = 1; i < warps; i++) {
                if (red[i] > bv || (red[i] == bv && redi[i] < bi)) {
                    bv = red[i];
                    bi = redi[i];
                }
            }
            values[j] = bv;
            indices[j] = bi;
            picked += bv;
            lg[bi] = -ORBIT_INF; // taken
        }
        __syncthreads();
    }
    if (normalize && threadIdx.x == 0) {
        float r = 1.0f / picked;
        for (int j = 0; j < topk; j++) values[j] *= r;
    }
}

// Router per token (grid T, blockDim a multiple of 32, dynamic shared H + E floats): logits[e] =
// x[t] . w[e] as above, or read from pre [T, E] when given (moe_router_logits), then router_select.
// values f32 [T, topk], indices i32 [T, topk].
extern "C" __global__ void moe_router_topk(const float* x, const uint4* w, int H, int E, int topk, int normalize,
                                           float* values, int* indices, const float* pre) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float smem[];
    float* xs = smem;       // [H]
    float* lg = smem + H;   // [E]
    __shared__ float red[32];
    __shared__ int redi[32];
    int t = blockIdx.x;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int warps = blockDim.x >> 5;
    if (pre != 0) {
        for (int e = threadIdx.x; e < E; e += blockDim.x) lg[e] = pre[(i64) t * E + e];
    } else {
        for (int c = threadIdx.x; c < H; c += blockDim.x) xs[c] = x[(i64) t * H + c];
        __syncthreads();
        for (int e = warp; e < E; e += warps) {
            float acc = moe_router_dot(xs, w, H / 8, e, lane);
            if (lane == 0) lg[e] = acc;
        }
    }
    __syncthreads();
    router_select(lg, E, topk, normalize, values + (i64) t * topk, indices + (i64) t * topk, red, redi);
}

// The warp's expert row's first 8 loads a lane (router_norm_topk's first step; the frozen weights alone).
__device__ __forceinline__ void router_row_fetch(const uint4* __restrict__ w, int H, int E, uint4* q) {
    int e = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (e < E) router_fetch(w + (i64) e * (H / 8), H / 8, 0, threadIdx.x & 31, q);
}

// The router prologue kernels' work before their wait, on frozen memory only: the warp's router row's first loads
// (router_row_fetch, into q), the norm weight's lines asked of the L2, and the spans a0..a2 asked of the L2 (l2_ahead).
__device__ __forceinline__ void router_prologue(const uint4* w, int H, int E, const void* nw, int nwBf16, const char* a0,
                                                long long n0, const char* a1, long long n1, const char* a2, long long n2,
                                                int bulk, uint4* q) {
    router_row_fetch(w, H, E, q);
    for (int l = threadIdx.x; nw != nullptr && l < (H * (nwBf16 ? 2 : 4) + 127) / 128; l += blockDim.x)
        prefetch_l2((const char*) nw + 128 * l);
    l2_ahead(a0, n0, bulk);
    l2_ahead(a1, n1, bulk);
    l2_ahead(a2, n2, bulk);
}

// The norm weight's four values at float4 c (f32 or bf16), by scalar loads (no alignment asked of nw past its type's).
__device__ __forceinline__ float4 router_norm_weight4(const void* nw, int nwBf16, int c) {
    if (nwBf16) {
        const u16* w = (const u16*) nw + 4 * c;
        return make_float4(bf16_to_f32(w[0]), bf16_to_f32(w[1]), bf16_to_f32(w[2]), bf16_to_f32(w[3]));
    }
    const float* w = (const float*) nw + 4 * c;
    return make_float4(w[0], w[1], w[2], w[3]);
}

// router_norm_weight4's loads with no value made of them (a bf16's bits in each float's low half; router_norm_bits4_value
// makes them values): a warp stalls at the first use of a load that has not come, so that the conversion right after
// the loads held back every later load of the staging, a round trip for each float4 of the row.
__device__ __forceinline__ float4 router_norm_bits4(const void* nw, int nwBf16, int c) {
    if (nwBf16) {
        const u16* w = (const u16*) nw + 4 * c;
        return make_float4(__uint_as_float((u32) w[0]), __uint_as_float((u32) w[1]), __uint_as_float((u32) w[2]),
                           __uint_as_float((u32) w[3]));
    }
    const float* w = (const float*) nw + 4 * c;
    return make_float4(w[0], w[1], w[2], w[3]);
}

__device__ __forceinline__ float router_norm_bits_value(float bits, int nwBf16) {
    return nwBf16 ? __uint_as_float(__float_as_uint(bits) << 16) : bits; // bf16_to_f32's expression
}

// The router of a decode step in one launch over the device (grid ceil(E / warps) x T, dynamic shared
// H + E floats): every block of token t = blockIdx.y stages xs = nw * (x[t] / sqrt(mean(x[t]^2) + eps))
// (rmsnorm_f32's expression; nw f32 or bf16) and writes its share of those values to h[t] (the experts'
// input; nw null: xs = x[t], nothing written to h); its warps compute the logits of experts
// blockIdx.x * warps + warp into logits [T, E], each lane's first 8 weight loads issued before x is read
// (one memory round trip at H <= 2048). The block that finishes token t last (a ticket counted on the
// device) reads the E logits back and its first warp selects the experts (router_select_warp), then
// re-arms the ticket to 0.
// moe_router_norm_topk's body; with d (not null) the row staged is x[t] + d[t] (one f32 add a value, add_rmsnorm's sum),
// and each block writes its share of that sum to sum[t] (the residual stream after the attention) beside its share of h.
// fetched: q holds router_row_fetch's loads already (issued before the kernel's wait), else they are issued here.
// SELECT: ROUTER_WARP the last block selects with its first warp (router_select_warp), ROUTER_BLOCK with all its warps
// (router_select_block; the same values and experts), ROUTER_LOGITS none: the blocks write h and the logits and leave
// (no ticket; values and indices untouched), the selection left to the launches that read the logits.
#define ROUTER_WARP 0
#define ROUTER_BLOCK 1
#define ROUTER_LOGITS 2
// NB: the one pass's norm weights loaded as their bits (router_norm_bits4) and made values where the norm is applied, so
// that the whole row's loads go out together; the same values.
template <int SELECT = ROUTER_WARP, bool NB = false>
__device__ __forceinline__ void router_norm_topk(const float* x, const float* d, float* sum, const void* nw, int nwBf16,
                                                 float eps, float* h, const uint4* w, int H, int E, int topk, int normalize,
                                                 float* logits, int* tickets, float* values, int* indices, uint4* q,
                                                 bool fetched) {
    extern __shared__ float smem[];
    float* xs = smem;       // [H]
    float* lg = smem + H;   // [E]
    __shared__ float red[32];
    __shared__ int last;
    int t = blockIdx.y;
    int lane = threadIdx.x & 31;
    int warps = blockDim.x >> 5;
    int e = blockIdx.x * warps + (threadIdx.x >> 5);
    int units = H / 8;
    const uint4* wrow = w + (i64) (e < E ? e : 0) * units;
    if (!fetched && e < E) router_fetch(wrow, units, 0, lane, q);   // router_row_fetch's loads
    const float4* xr = (const float4*) (x + (i64) t * H);
    const float4* dr = d == nullptr ? nullptr : (const float4*) (d + (i64) t * H);
    int H4 = H >> 2;
    // one pass (H <= 2048 at 128 threads): the thread's float4s of the row and of the norm weight loaded together, and
    // the norm applied to them in registers; past that the norm's loop below reads the weight a value at a time
    bool onePass = H4 <= 4 * (int) blockDim.x;
    float4 xv[4]; // the row's float4s of this thread (then x + d), loaded together
    float4 dv[4];
    float4 gv[4]; // the norm weight's values at those float4s (one pass)
    float ss = 0.0f;
    for (int c0 = 0; c0 < H4; c0 += 4 * blockDim.x) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int c = c0 + threadIdx.x + i * blockDim.x;
            if (c < H4) {
                xv[i] = xr[c];
                if (d != nullptr) dv[i] = dr[c];
                if (onePass && nw != nullptr) gv[i] = NB ? router_norm_bits4(nw, nwBf16, c) : router_norm_weight4(nw, nwBf16, c);
            }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int c = c0 + threadIdx.x + i * blockDim.x;
            if (c < H4) {
                float4 v = xv[i];
                if (d != nullptr) {
                    v.x += dv[i].x;
                    v.y += dv[i].y;
                    v.z += dv[i].z;
                    v.w += dv[i].w;
                }
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
                *(float4*) (xs + 4 * c) = v;
                xv[i] = v;
            }
        }
    }
    ss = block_sum(ss, red);   // its barriers also order the staging above
    // nw null: x is the router's input as it is (normed before), h not written
    if (nw != nullptr && onePass) { // each thread norms its own float4s (rmsnorm_f32's expression), from registers
        float inv = 1.0f / sqrtf(ss / (float) H + eps);
        int share = (H + gridDim.x - 1) / gridDim.x;
        int lo = blockIdx.x * share;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int c = threadIdx.x + i * blockDim.x;
            if (c < H4) {
                float raw[4] = {xv[i].x, xv[i].y, xv[i].z, xv[i].w};
                float wi[4] = {gv[i].x, gv[i].y, gv[i].z, gv[i].w};
                if (NB) {
#pragma unroll
                    for (int j = 0; j < 4; j++) wi[j] = router_norm_bits_value(wi[j], nwBf16);
                }
                float v[4];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    v[j] = wi[j] * (raw[j] * inv);
                    int col = 4 * c + j;
                    if (col >= lo && col < lo + share) {
                        h[(i64) t * H + col] = v[j];
                        if (sum != nullptr) sum[(i64) t * H + col] = raw[j];
                    }
                }
                *(float4*) (xs + 4 * c) = make_float4(v[0], v[1], v[2], v[3]);
            }
        }
        __syncthreads();
    } else if (nw != nullptr) { // rows past one pass: the norm from xs, the weight read a value at a time
        float inv = 1.0f / sqrtf(ss / (float) H + eps);
        int share = (H + gridDim.x - 1) / gridDim.x;
        int lo = blockIdx.x * share;
        for (int c = threadIdx.x; c < H; c += blockDim.x) {
            float wi = nwBf16 ? bf16_to_f32(((const u16*) nw)[c]) : ((const float*) nw)[c];
            float raw = xs[c];
            float v = wi * (raw * inv);
            xs[c] = v;
            if (c >= lo && c < lo + share) {
                h[(i64) t * H + c] = v;
                if (sum != nullptr) sum[(i64) t * H + c] = raw;
            }
        }
        __syncthreads();
    }
    if (e < E) {
        float acc = 0.0f;
        router_dot_units(q, xs, units, 0, lane, acc);
        for (int u0 = 256; u0 < units; u0 += 256) {
            router_fetch(wrow, units, u0, lane, q);
            router_dot_units(q, xs, units, u0, lane, acc);
        }
        acc = warp_sum(acc);
        if (lane == 0) logits[(i64) t * E + e] = acc;
    }
    ORBIT_TRACE_MARK(0); // the block's logits
    if (SELECT == ROUTER_LOGITS) return;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(tickets + t, 1) == (int) gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    ORBIT_TRACE_MARK(1); // the last block, its ticket back
    __threadfence();
    for (int c = threadIdx.x; c < E; c += blockDim.x) lg[c] = ((volatile const float*) logits)[(i64) t * E + c]; // past L1: other blocks wrote them
    __syncthreads();
    ORBIT_TRACE_MARK(2); // the logits read back
    if (SELECT == ROUTER_BLOCK) {
        router_select_block(lg, E, topk, normalize, values + (i64) t * topk, indices + (i64) t * topk);
        if (threadIdx.x == 0) tickets[t] = 0;
    } else if (threadIdx.x < 32) {
        router_select_warp(lg, E, topk, normalize, values + (i64) t * topk, indices + (i64) t * topk);
        if (threadIdx.x == 0) tickets[t] = 0;
    }
    ORBIT_TRACE_MARK(3); // selected
}

extern "C" __global__ void moe_router_norm_topk(const float* x, const void* nw, int nwBf16, float eps, float* h, const uint4* w,
                                                int H, int E, int topk, int normalize, float* logits, int* tickets,
                                                float* values, int* indices) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    uint4 q[8];
    router_norm_topk(x, nullptr, nullptr, nw, nwBf16, eps, h, w, H, E, topk, normalize, logits, tickets, values, indices, q,
                     false);
}

// moe_router_norm_topk with its warps' weight loads issued before its wait (the whole row at H <= 2048), and the norm
// weight's lines asked of the L2, so that under dependent launches they stream while the launch before it runs; the same
// sums (the same bits). a0..a2 (n0..n2 bytes; null or 0: none): frozen weights of later launches (the next layer's q, k
// and v) asked of the L2 the same way (l2_ahead, by lines or in bulk), streaming while this latency-bound launch runs.
extern "C" __global__ void moe_router_norm_topk_pre(const float* x, const void* nw, int nwBf16, float eps, float* h,
                                                    const uint4* w, int H, int E, int topk, int normalize, float* logits,
                                                    int* tickets, float* values, int* indices, const char* a0, long long n0,
                                                    const char* a1, long long n1, const char* a2, long long n2, int bulk) {
    ORBIT_TRACE_KERNEL();
    uint4 q[8];
    router_prologue(w, H, E, nw, nwBf16, a0, n0, a1, n1, a2, n2, bulk, q);
    pdl_enter();
    router_norm_topk(x, nullptr, nullptr, nw, nwBf16, eps, h, w, H, E, topk, normalize, logits, tickets, values, indices, q,
                     true);
}

// moe_router_norm_topk of the row x[t] + d[t] (a decode step's residual after the attention, add_rmsnorm's sum), which
// its blocks also write to sum: the residual add, the post-attention norm (into h, the experts' input) and the router
// in one launch.
extern "C" __global__ void moe_router_add_norm_topk(const float* x, const float* d, float* sum, const void* nw, int nwBf16,
                                                    float eps, float* h, const uint4* w, int H, int E, int topk, int normalize,
                                                    float* logits, int* tickets, float* values, int* indices) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    uint4 q[8];
    router_norm_topk(x, d, sum, nw, nwBf16, eps, h, w, H, E, topk, normalize, logits, tickets, values, indices, q, false);
}

// moe_router_add_norm_topk with moe_router_norm_topk_pre's prologue (the warps' router rows in registers, the norm
// weight's lines asked of the L2, before the wait); the same sums (the same bits).
extern "C" __global__ void moe_router_add_norm_topk_pre(const float* x, const float* d, float* sum, const void* nw, int nwBf16,
                                                        float eps, float* h, const uint4* w, int H, int E, int topk,
                                                        int normalize, float* logits, int* tickets, float* values,
                                                        int* indices, const char* a0, long long n0, const char* a1,
                                                        long long n1, const char* a2, long long n2, int bulk) {
    ORBIT_TRACE_KERNEL();
    uint4 q[8];
    router_prologue(w, H, E, nw, nwBf16, a0, n0, a1, n1, a2, n2, bulk, q);
    pdl_enter();
    router_norm_topk(x, d, sum, nw, nwBf16, eps, h, w, H, E, topk, normalize, logits, tickets, values, indices, q, true);
}

// moe_router_norm_topk_pre and moe_router_add_norm_topk_pre with the last block's selection by all its threads
// (router_select_block): the same values and experts.
extern "C" __global__ void moe_router_norm_topk_rk_pre(const float* x, const void* nw, int nwBf16, float eps, float* h,
                                                       const uint4* w, int H, int E, int topk, int normalize, float* logits,
                                                       int* tickets, float* values, int* indices, const char* a0, long long n0,
                                                       const char* a1, long long n1, const char* a2, long long n2, int bulk) {
    ORBIT_TRACE_KERNEL();
    uint4 q[8];
    router_prologue(w, H, E, nw, nwBf16, a0, n0, a1, n1, a2, n2, bulk, q);
    pdl_enter();
    router_norm_topk<ROUTER_BLOCK>(x, nullptr, nullptr, nw, nwBf16, eps, h, w, H, E, topk, normalize, logits, tickets, values, indices,
                           q, true);
}

extern "C" __global__ void moe_router_add_norm_topk_rk_pre(const float* x, const float* d, float* sum, const void* nw,
                                                           int nwBf16, float eps, float* h, const uint4* w, int H, int E,
                                                           int topk, int normalize, float* logits, int* tickets,
                                                           float* values, int* indices, const char* a0, long long n0,
                                                           const char* a1, long long n1, const char* a2, long long n2,
                                                           int bulk) {
    ORBIT_TRACE_KERNEL();
    uint4 q[8];
    router_prologue(w, H, E, nw, nwBf16, a0, n0, a1, n1, a2, n2, bulk, q);
    pdl_enter();
    router_norm_topk<ROUTER_BLOCK>(x, d, sum, nw, nwBf16, eps, h, w, H, E, topk, normalize, logits, tickets, values, indices, q, true);
}

// moe_router_add_norm_topk_rk_pre with the norm weights loaded as their bits (router_norm_topk's NB): the row's loads
// of x, d and the weights issued together where the conversion of bf16 weights held each float4's behind the one
// before; the same values, the same bits.
extern "C" __global__ void moe_router_add_norm_topk_rk_pre_nb(const float* x, const float* d, float* sum, const void* nw,
                                                              int nwBf16, float eps, float* h, const uint4* w, int H, int E,
                                                              int topk, int normalize, float* logits, int* tickets,
                                                              float* values, int* indices, const char* a0, long long n0,
                                                              const char* a1, long long n1, const char* a2, long long n2,
                                                              int bulk) {
    ORBIT_TRACE_KERNEL();
    uint4 q[8];
    router_prologue(w, H, E, nw, nwBf16, a0, n0, a1, n1, a2, n2, bulk, q);
    pdl_enter();
    router_norm_topk<ROUTER_BLOCK, true>(x, d, sum, nw, nwBf16, eps, h, w, H, E, topk, normalize, logits, tickets, values,
                                         indices, q, true);
}

// moe_router_norm_topk_pre's h and logits alone (ROUTER_LOGITS): the selection is left to the launches that read the
// logits (qgemv's _pk kernels, moe_router_select), so that the launch ends when its last block has written its logits.
extern "C" __global__ void moe_router_norm_logits_pre(const float* x, const void* nw, int nwBf16, float eps, float* h,
                                                      const uint4* w, int H, int E, float* logits, const char* a0, long long n0,
                                                      const char* a1, long long n1, const char* a2, long long n2, int bulk) {
    ORBIT_TRACE_KERNEL();
    uint4 q[8];
    router_prologue(w, H, E, nw, nwBf16, a0, n0, a1, n1, a2, n2, bulk, q);
    pdl_enter();
    router_norm_topk<ROUTER_LOGITS>(x, nullptr, nullptr, nw, nwBf16, eps, h, w, H, E, 0, 0, logits, nullptr, nullptr, nullptr, q,
                                    true);
}

// The selection of router_select_warp (the same values and experts) from the logits [T, E] a router launch left
// (moe_router_norm_logits_pre): block t (grid T, blockDim a multiple of 32 at least E where the block forms take the
// logits; dynamic shared E floats) selects token t's experts with router_select_block.
extern "C" __global__ void moe_router_select(const float* logits, int E, int topk, int normalize, float* values, int* indices) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float lg[]; // [E]
    int t = blockIdx.x;
    for (int c = threadIdx.x; c < E; c += blockDim.x) lg[c] = __ldcg(logits + (i64) t * E + c);
    __syncthreads();
    router_select_block(lg, E, topk, normalize, values + (i64) t * topk, indices + (i64) t * topk);
}

// The router of a decode batch over x as it is (moe_router_norm_topk without its norm) in fewer, wider blocks: block
// (expert chunk blockIdx.x, token tile blockIdx.y) of RT_WARPS warps stages the tile's tt rows of x (dynamic shared
// memory, max(tt * H, RT_WARPS * E) floats) once, every copy in flight at once (cp.async), and warp w holds expert
// blockIdx.x * RT_WARPS + w's first 256 units in registers and multiplies them with each row. Each x row is read
// ceil(E / RT_WARPS) times (ceil(E / 4) there, with a block a token) and each weight row once a tile. Every logit is
// moe_router_norm_topk's sum (lane over units lane + 32 i in order, then warp_sum), so the same bits, and the selection
// is the same router_select_warp: the block that finishes a tile last (a ticket a tile) selects its tokens' experts, a
// warp a token, then re-arms the ticket. With offsets given (the routing buffer of moe_route, and routeTicket 0), the
// block that selects the last tile (a second ticket) also groups the T * topk pairs by expert (route_pairs: moe_route's
// results), and re-arms that ticket.
#define RT_WARPS 8
extern "C" __global__ void __launch_bounds__(32 * RT_WARPS)
    moe_router_tiles(const float* x, const uint4* w, int H, int E, int T, int tt, int topk, int normalize,
                     float* logits, int* tickets, float* values, int* indices, int* offsets, int* active, int* order,
                     int* routeTicket, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) float smem[]; // [tt, H] x rows, then [RT_WARPS, E] the selecting warps' logits
    __shared__ int last;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int e = blockIdx.x * RT_WARPS + warp;
    int t0 = blockIdx.y * tt;
    int rows = min(tt, T - t0);
    int units = H / 8;
    const uint4* wrow = w + (i64) (e < E ? e : 0) * units;
    uint4 q[8];
    if (e < E) router_fetch(wrow, units, 0, lane, q);
    const float4* xr = (const float4*) (x + (i64) t0 * H);
    int n4 = rows * (H >> 2);
    u32 xs0 = smem_addr(smem);
    for (int c = threadIdx.x; c < n4; c += blockDim.x) { // every copy in flight at once
        cp_async16_zfill(xs0 + 16u * c, xr + c, true);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    if (e < E) {
        for (int j = 0; j < rows; j++) {
            const float* xs = smem + (i64) j * H;
            float acc = 0.0f;
            router_dot_units(q, xs, units, 0, lane, acc);
            for (int u0 = 256; u0 < units; u0 += 256) { // past 256 units: fetched again for each row (L1)
                uint4 p[8];
                router_fetch(wrow, units, u0, lane, p);
                router_dot_units(p, xs, units, u0, lane, acc);
            }
            acc = warp_sum(acc);
            if (lane == 0) logits[(i64) (t0 + j) * E + e] = acc;
        }
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(tickets + blockIdx.y, 1) == (int) gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    float* lg = smem + warp * E; // the x rows are read no more (the barriers above)
    for (int j = warp; j < rows; j += RT_WARPS) {
        for (int c = lane; c < E; c += 32) lg[c] = ((volatile const float*) logits)[(i64) (t0 + j) * E + c]; // past L1
        __syncwarp();
        router_select_warp(lg, E, topk, normalize, values + (i64) (t0 + j) * topk, indices + (i64) (t0 + j) * topk);
        __syncwarp();
    }
    if (threadIdx.x == 0) tickets[blockIdx.y] = 0;
    if (offsets == nullptr) return;
    __threadfence();
    __syncthreads(); // the tile's indices are written; last is read no more
    if (threadIdx.x == 0) last = atomicAdd(routeTicket, 1) == (int) gridDim.y - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    route_pairs(indices, T * topk, E, offsets, active, order, err, (int*) smem); // the selecting warps are done with it
    if (threadIdx.x == 0) *routeTicket = 0;
}
