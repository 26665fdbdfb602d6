// The grouped mixture-of-experts block for training and prefill (see Backend's moe* operations):
// routing weights from the router probabilities, rows moved between token order and the
// expert-grouped pair order, the weighted combination, and the backward of the routing weights.
// T tokens, k experts a token, P = T * k pairs (pair p = token * k + j), E experts; order [P] lists the
// pairs grouped by expert and position [P] is its inverse.

#include "router.cuh"

// Per token (one block, blockDim a multiple of 32, dynamic shared E floats): the k largest of probs
// [T, E] in descending order, ties to the lower expert, into chosen and ids [T, k]; weights = chosen,
// divided by their sum (j ascending) when normalize.
extern "C" __global__ void moe_topk_weights(const float* probs, int E, int k, int normalize, float* chosen, float* weights,
                                            int* ids) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float pr[];
    __shared__ float red[32];
    __shared__ int redi[32];
    int t = blockIdx.x;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int warps = blockDim.x >> 5;
    for (int e = threadIdx.x; e < E; e += blockDim.x) pr[e] = probs[(i64) t * E + e];
    __syncthreads();
    for (int j = 0; j < k; j++) {
        float bv;
        int bi;
        warp_pick(pr, threadIdx.x, blockDim.x, E, bv, bi);
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
            chosen[(i64) t * k + j] = bv;
            ids[(i64) t * k + j] = bi;
            pr[bi] = -ORBIT_INF; // taken
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s += chosen[(i64) t * k + j];
        for (int j = 0; j < k; j++) {
            float c = chosen[(i64) t * k + j];
            weights[(i64) t * k + j] = normalize ? c / s : c;
        }
    }
}

// moe_topk_weights with a warp a token (MT_WARPS tokens a block; dynamic shared MT_WARPS * E floats): a round is a scan
// of the lane's experts and a butterfly of shuffles, with no block barrier. The choice is the same: the larger value,
// then the lower expert, is a total order on finite values, so every reduction tree finds the same one; the weights
// are summed and divided as there. T: tokens.
#define MT_WARPS 8
extern "C" __global__ void __launch_bounds__(32 * MT_WARPS)
    moe_topk_warps(const float* probs, int T, int E, int k, int normalize, float* chosen, float* weights, int* ids) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float prw[];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int t = blockIdx.x * MT_WARPS + warp;
    if (t >= T) return; // warp-uniform; nothing below waits for the other warps
    float* pr = prw + warp * E;
    for (int e = lane; e < E; e += 32) pr[e] = probs[(i64) t * E + e];
    __syncwarp();
    for (int j = 0; j < k; j++) {
        float bv;
        int bi;
        warp_pick(pr, lane, 32, E, bv, bi);
        if (lane == 0) {
            chosen[(i64) t * k + j] = bv;
            ids[(i64) t * k + j] = bi;
        }
        if (bi < E && (bi & 31) == lane) pr[bi] = -ORBIT_INF; // taken
        __syncwarp();
    }
    if (lane == 0) {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s += chosen[(i64) t * k + j];
        for (int j = 0; j < k; j++) {
            float c = chosen[(i64) t * k + j];
            weights[(i64) t * k + j] = normalize ? c / s : c;
        }
    }
}

// DeepSeek-V3's (Kimi-K2's) routing, a warp a token (MT_WARPS tokens a block; dynamic shared 2 * MT_WARPS * E floats, a
// warp's scores and biased choices): scores = sigmoid(logits) in double, rounded to f32 (scores may be logits: a lane
// reads its logits before it writes their scores); with groups > 1 (at most 32) a lane a group sums its group's two
// largest choices as the host's scan does, lane 0 keeps the topkGroups best (ties to the lower group) and the others'
// choices become 0; then the k largest choices by warp_pick (ties to the lower expert, a taken one -inf). weights = the
// chosen scores / (their sum, j ascending, + 1e-20 when normalize) * scaling, as the host rounds them.
extern "C" __global__ void __launch_bounds__(32 * MT_WARPS)
    moe_sigmoid_topk(const float* logits, const float* bias, int T, int E, int groups, int topkGroups, int k, int normalize,
                     float scaling, float* scores, float* weights, int* ids) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float sig_smem[];
    __shared__ float gscore[MT_WARPS][32];
    __shared__ int gkeep[MT_WARPS][32];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int t = blockIdx.x * MT_WARPS + warp;
    if (t >= T) return; // warp-uniform; nothing below waits for the other warps
    float* sc = sig_smem + (i64) warp * 2 * E;
    float* ch = sc + E;
    for (int e = lane; e < E; e += 32) {
        float x = logits[(i64) t * E + e];
        float s = (float) (1.0 / (1.0 + exp(-(double) x)));
        scores[(i64) t * E + e] = s;
        sc[e] = s;
        ch[e] = __fadd_rn(s, bias ? bias[e] : 0.0f);
    }
    __syncwarp();
    if (groups > 1) {
        int per = E / groups;
        if (lane < groups) {
            float m1 = -ORBIT_INF;
            float m2 = -ORBIT_INF;
            for (int e = lane * per; e < (lane + 1) * per; e++) {
                float c = ch[e];
                if (c > m1) {
                    m2 = m1;
                    m1 = c;
                } else if (c > m2) {
                    m2 = c;
                }
            }
            gscore[warp][lane] = __fadd_rn(m1, m2);
            gkeep[warp][lane] = 0;
        }
        __syncwarp();
        if (lane == 0) {
            for (int j = 0; j < topkGroups; j++) {
                int best = -1;
                for (int g = 0; g < groups; g++) {
                    if (!gkeep[warp][g] && (best < 0 || gscore[warp][g] > gscore[warp][best])) best = g;
                }
                gkeep[warp][best] = 1;
            }
        }
        __syncwarp();
        for (int e = lane; e < E; e += 32) {
            if (!gkeep[warp][e / per]) ch[e] = 0.0f;
        }
        __syncwarp();
    }
    float sum = 0.0f; // lane 0's
    for (int j = 0; j < k; j++) {
        float bv;
        int bi;
        warp_pick(ch, lane, 32, E, bv, bi);
        if (lane == 0) {
            ids[(i64) t * k + j] = bi;
            sum = __fadd_rn(sum, sc[bi]);
        }
        if (bi < E && (bi & 31) == lane) ch[bi] = -ORBIT_INF; // taken
        __syncwarp();
    }
    if (lane == 0) {
        float denom = normalize ? __fadd_rn(sum, 1e-20f) : 1.0f;
        for (int j = 0; j < k; j++) {
            float s = sc[ids[(i64) t * k + j]];
            weights[(i64) t * k + j] = __fmul_rn(__fdiv_rn(s, denom), scaling);
        }
    }
}

// DeepSeek V4's routing, a warp a token (MT_WARPS tokens a block; dynamic shared 2 * MT_WARPS * E floats, a warp's scores
// and biased choices): scores = sqrt(softplus(logits)) (softplus x above 20, else log1p(exp x) in double rounded to f32;
// the root in double rounded to f32) when sqrtSoftplus, else the sigmoid in double rounded to f32 (scores may be logits).
// ids: the token's row of fixed (the hash layers' experts) when given, else the k largest scores + bias by warp_pick
// (ties to the lower expert). weights = the chosen scores / (their sum, j ascending, + 1e-20) * scaling, as the host
// rounds them. A fixed id outside [0, E), or a choice that finds no expert left (NaN scores), is reported
// (ERR_EXPERT_OUT_OF_RANGE) and weighs 0.
extern "C" __global__ void __launch_bounds__(32 * MT_WARPS)
    moe_score_topk(const float* logits, int sqrtSoftplus, const float* bias, const int* fixed, int T, int E, int k,
                   float scaling, float* scores, float* weights, int* ids, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ float score_smem[];
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int t = blockIdx.x * MT_WARPS + warp;
    if (t >= T) return; // warp-uniform; nothing below waits for the other warps
    float* sc = score_smem + (i64) warp * 2 * E;
    float* ch = sc + E;
    for (int e = lane; e < E; e += 32) {
        float x = logits[(i64) t * E + e];
        float s;
        if (sqrtSoftplus) {
            float sp = x > 20.0f ? x : (float) log1p(exp((double) x));
            s = (float) sqrt((double) sp);
        } else {
            s = (float) (1.0 / (1.0 + exp(-(double) x)));
        }
        scores[(i64) t * E + e] = s;
        sc[e] = s;
        ch[e] = __fadd_rn(s, bias ? bias[e] : 0.0f);
    }
    __syncwarp();
    if (fixed) {
        if (lane == 0) {
            for (int j = 0; j < k; j++) {
                int id = fixed[(i64) t * k + j];
                if (id < 0 || id >= E) report_error(err, ERR_EXPERT_OUT_OF_RANGE, id, t * k + j);
                ids[(i64) t * k + j] = id;
            }
        }
    } else {
        for (int j = 0; j < k; j++) {
            float bv;
            int bi;
            warp_pick(ch, lane, 32, E, bv, bi);
            if (lane == 0) {
                if (bi >= E) report_error(err, ERR_EXPERT_OUT_OF_RANGE, bi, t * k + j); // no choice left (NaN scores)
                ids[(i64) t * k + j] = bi;
            }
            // taken: NaN, which warp_pick passes over (-inf would be chosen again once every number left is -inf)
            if (bi < E && (bi & 31) == lane) ch[bi] = __int_as_float(0x7fffffff);
            __syncwarp();
        }
    }
    if (lane == 0) {
        float sum = 0.0f;
        for (int j = 0; j < k; j++) {
            int id = ids[(i64) t * k + j];
            sum = __fadd_rn(sum, id >= 0 && id < E ? sc[id] : 0.0f);
        }
        float denom = __fadd_rn(sum, 1e-20f);
        for (int j = 0; j < k; j++) {
            int id = ids[(i64) t * k + j];
            float s = id >= 0 && id < E ? sc[id] : 0.0f;
            weights[(i64) t * k + j] = __fmul_rn(__fdiv_rn(s, denom), scaling);
        }
    }
}

// The router-logit gradient of moe_sigmoid_topk, a warp a token (MT_WARPS tokens a block): dlogits [T, E] is 0 but at the
// token's chosen experts, ds * s * (1 - s) with ds = dw * scaling / denom - (sum_j dw_j * scaling * s_j) / denom^2 when
// normalize (else dw * scaling / 1), in the host's order of operations (no contractions).
extern "C" __global__ void __launch_bounds__(32 * MT_WARPS)
    moe_sigmoid_router_backward(const float* scores, const int* ids, const float* dw, int T, int E, int k, int normalize,
                                float scaling, float* dlogits) {
    ORBIT_TRACE_KERNEL();
    int lane = threadIdx.x & 31;
    int t = blockIdx.x * MT_WARPS + (threadIdx.x >> 5);
    if (t >= T) return;
    float* dl = dlogits + (i64) t * E;
    for (int e = lane; e < E; e += 32) dl[e] = 0.0f;
    __syncwarp();
    if (lane == 0) {
        const float* sc = scores + (i64) t * E;
        const int* id = ids + (i64) t * k;
        const float* d = dw + (i64) t * k;
        float sum = 0.0f;
        float dot = 0.0f;
        for (int j = 0; j < k; j++) sum = __fadd_rn(sum, sc[id[j]]);
        float denom = normalize ? __fadd_rn(sum, 1e-20f) : 1.0f;
        for (int j = 0; j < k; j++) dot = __fadd_rn(dot, __fmul_rn(__fmul_rn(d[j], scaling), sc[id[j]]));
        for (int j = 0; j < k; j++) {
            float g = __fdiv_rn(__fmul_rn(d[j], scaling), denom);
            float ds = normalize ? __fsub_rn(g, __fdiv_rn(dot, __fmul_rn(denom, denom))) : g;
            float s = sc[id[j]];
            dl[id[j]] = __fmul_rn(__fmul_rn(ds, s), __fsub_rn(1.0f, s));
        }
    }
}

// position[order[i]] = i.
extern "C" __global__ void moe_positions(const int* order, int P, int* position) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, (i64) P) {
        int o = order[i];
        if (o >= 0 && o < P) position[o] = (int) i;   // a slot left empty by an id out of range is skipped
    }
}

// dst[i] = w[order[i]] * src[order[i] / k] (w null: 1); src [T, H], dst [P, H].
extern "C" __global__ void moe_gather_pairs(const float* src, const int* order, int k, const float* w, float* dst, int P, int H) {
    ORBIT_TRACE_KERNEL();
    i64 total = (i64) P * H;
    GRID_STRIDE(idx, total) {
        int i = (int) (idx / H);
        int c = (int) (idx % H);
        int p = order[i];
        float v = src[(i64) (p / k) * H + c];
        dst[idx] = w ? w[p] * v : v;
    }
}

// The same rows as moe_gather_pairs, a block a row (grid-stride over rows): the source row read once
// and written 16 bytes at a time when vec (H % 4 == 0, src and dst 16-byte aligned). Bit-identical.
extern "C" __global__ void moe_gather_rows(const float* src, const int* order, int k, const float* w, float* dst, int P, int H,
                                           int vec) {
    ORBIT_TRACE_KERNEL();
    for (int i = blockIdx.x; i < P; i += gridDim.x) {
        int p = order[i];
        float s = w ? w[p] : 1.0f;
        const float* from = src + (i64) (p / k) * H;
        float* to = dst + (i64) i * H;
        if (vec) {
            const float4* f4 = reinterpret_cast<const float4*>(from);
            float4* t4 = reinterpret_cast<float4*>(to);
            for (int c = threadIdx.x; c < (H >> 2); c += blockDim.x) {
                float4 v = f4[c];
                if (w) {
                    v.x = s * v.x;
                    v.y = s * v.y;
                    v.z = s * v.z;
                    v.w = s * v.w;
                }
                t4[c] = v;
            }
        } else {
            for (int c = threadIdx.x; c < H; c += blockDim.x) {
                float v = from[c];
                to[c] = w ? s * v : v;
            }
        }
    }
}

// out[t] (+)= sum_j w[t * k + j] * ys[position[t * k + j]] (j ascending; w null: 1). One block a token.
extern "C" __global__ void moe_combine_grouped(const float* ys, const int* position, const float* w, int k, float* out,
                                               int accumulate, int H) {
    ORBIT_TRACE_KERNEL();
    int t = blockIdx.x;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) {
            int p = t * k + j;
            float v = ys[(i64) position[p] * H + c];
            acc += w ? w[p] * v : v;
        }
        float* o = out + (i64) t * H + c;
        *o = accumulate ? *o + acc : acc;
    }
}

// ys[r] += bias[e] for the expert e whose grouped rows [offsets[e], offsets[e + 1]) hold r (the largest e with
// offsets[e] <= r: experts without rows are passed over). One block a row.
extern "C" __global__ void moe_expert_bias(float* ys, const float* bias, const int* offsets, int E, int N) {
    ORBIT_TRACE_KERNEL();
    int r = blockIdx.x;
    int lo = 0;
    int hi = E;
    while (hi - lo > 1) {
        int mid = (lo + hi) >> 1;
        if (offsets[mid] <= r) lo = mid; else hi = mid;
    }
    const float* b = bias + (i64) lo * N;
    float* y = ys + (i64) r * N;
    for (int c = threadIdx.x; c < N; c += blockDim.x) {
        y[c] += b[c];
    }
}

// ys[p] += bias[ids[p]]: rows a (token, expert) pair each. One block a row.
extern "C" __global__ void moe_expert_bias_pairs(float* ys, const float* bias, const int* ids, int N) {
    ORBIT_TRACE_KERNEL();
    int r = blockIdx.x;
    const float* b = bias + (i64) ids[r] * N;
    float* y = ys + (i64) r * N;
    for (int c = threadIdx.x; c < N; c += blockDim.x) {
        y[c] += b[c];
    }
}

// dw[p] = <dout[p / k], ys[position[p]]>: one warp a pair.
extern "C" __global__ void moe_weight_grad(const float* dout, const float* ys, const int* position, int k, float* dw, int P, int H) {
    ORBIT_TRACE_KERNEL();
    int p = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (p >= P) return;
    const float* d = dout + (i64) (p / k) * H;
    const float* y = ys + (i64) position[p] * H;
    float acc = 0.0f;
    for (int c = lane; c < H; c += 32) acc += d[c] * y[c];
    acc = warp_sum(acc);
    if (lane == 0) dw[p] = acc;
}

// Router backward per token (one block, dynamic shared E floats): from the routing-weight gradient
// dw [T, k] through the top-k renormalisation (when normalize) and the softmax into dlogits [T, E].
extern "C" __global__ void moe_router_backward(const float* probs, const float* chosen, const float* w, const int* ids,
                                               const float* dw, int k, int normalize, int E, float* dlogits) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float dp[];
    __shared__ float red[32];
    int t = blockIdx.x;
    for (int e = threadIdx.x; e < E; e += blockDim.x) dp[e] = 0.0f;
    __syncthreads();
    if (threadIdx.x == 0) {
        float sumChosen = 0.0f;
        float dotWd = 0.0f;
        for (int j = 0; j < k; j++) {
            sumChosen += chosen[(i64) t * k + j];
            dotWd += w[(i64) t * k + j] * dw[(i64) t * k + j];
        }
        for (int j = 0; j < k; j++) {
            i64 s = (i64) t * k + j;
            dp[ids[s]] += normalize ? (dw[s] - dotWd) / sumChosen : dw[s];
        }
    }
    __syncthreads();
    const float* pt = probs + (i64) t * E;
    float pd = 0.0f;
    for (int e = threadIdx.x; e < E; e += blockDim.x) pd += pt[e] * dp[e];
    pd = block_sum(pd, red);
    for (int e = threadIdx.x; e < E; e += blockDim.x) dlogits[(i64) t * E + e] = pt[e] * (dp[e] - pd);
}

// In place, one block a row: row r of y [R, H] f32 holds H bf16 values in its first 2 * H bytes (a
// product written as bf16 with a row stride of 2 * H); they become the row's H f32 values. Dynamic
// shared 2 * H bytes: the whole row is read before any of it is written.
extern "C" __global__ void moe_widen_bf16_rows(float* y, int H) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float widen_row[];
    u16* s = (u16*) widen_row;
    float* row = y + (i64) blockIdx.x * H;
    const u16* b = (const u16*) row;
    for (int c = threadIdx.x; c < H; c += blockDim.x) s[c] = b[c];
    __syncthreads();
    for (int c = threadIdx.x; c < H; c += blockDim.x) row[c] = bf16_to_f32(s[c]);
}

// The batched expert products' last partial tiles: entry blockIdx.y of table [entries, 3] (u64) is
// (source, destination, rows): the first rows of an f32 tile [T, cols] of the pad buffer go to the
// expert's last rows in the output, or are added to them (accumulate). cols a multiple of 4, both
// addresses 16-byte aligned.
extern "C" __global__ void moe_copy_tile_rows(const unsigned long long* table, int cols, int accumulate) {
    ORBIT_TRACE_KERNEL();
    const unsigned long long* t = table + 3 * (i64) blockIdx.y;
    const float4* src = (const float4*) t[0];
    float4* dst = (float4*) t[1];
    i64 n = (i64) t[2] * (cols / 4);
    GRID_STRIDE(i, n) {
        float4 v = src[i];
        if (accumulate) {
            float4 d = dst[i];
            v.x += d.x;
            v.y += d.y;
            v.z += d.z;
            v.w += d.w;
        }
        dst[i] = v;
    }
}

// Grouping the pairs by expert as a stable counting sort in three launches (moe_group_count,
// moe_group_scan, moe_group_scatter), tiles of MG_TILE consecutive pairs. counts i32 [tiles, E].
#define MG_WARPS 8
#define MG_ROUNDS 8
#define MG_TILE (MG_WARPS * MG_ROUNDS * 32)

// Grid tiles, 256 threads, dynamic shared E ints: counts[tile, e] = pairs of expert e in the tile; an id
// outside [0, E) is reported and left out.
extern "C" __global__ void moe_group_count(const int* ids, int P, int E, int* counts, int* err) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ int hist[];   // [E]
    for (int e = threadIdx.x; e < E; e += blockDim.x) hist[e] = 0;
    __syncthreads();
    int first = blockIdx.x * MG_TILE;
    for (int i = threadIdx.x; i < MG_TILE; i += blockDim.x) {
        int p = first + i;
        if (p < P) {
            int e = ids[p];
            if (e < 0 || e >= E) {
                report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, p);
            } else {
                atomicAdd(&hist[e], 1);
            }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) counts[(i64) blockIdx.x * E + e] = hist[e];
}

// One block of 1024 threads (E <= 1024): offsets [E + 1] = exclusive sum of the experts' totals, and
// counts[tile, e] becomes the first slot of the tile's pairs of expert e in order.
extern "C" __global__ void moe_group_scan(int* counts, int tiles, int E, int* offsets) {
    ORBIT_TRACE_KERNEL();
    __shared__ int sums[1024];
    int e = threadIdx.x;
    int total = 0;
    if (e < E) {
        for (int t = 0; t < tiles; t++) total += counts[(i64) t * E + e];
    }
    sums[e] = total;
    __syncthreads();
    for (int o = 1; o < 1024; o <<= 1) {   // inclusive scan over the experts
        int add = e >= o ? sums[e - o] : 0;
        __syncthreads();
        sums[e] += add;
        __syncthreads();
    }
    if (e < E) {
        int run = sums[e] - total;
        offsets[e] = run;
        if (e == E - 1) offsets[E] = sums[e];
        for (int t = 0; t < tiles; t++) {
            int c = counts[(i64) t * E + e];
            counts[(i64) t * E + e] = run;
            run += c;
        }
    }
}

// Grid tiles, 256 threads (8 warps), dynamic shared 8 * E ints: warp w places the pairs
// [tile * MG_TILE + w * 256, + 256) in rounds of 32, pairs of one expert ranked by lane inside a round;
// the warps' slots of an expert follow each other in warp order, so order lists each expert's pairs
// ascending.
extern "C" __global__ void moe_group_scatter(const int* ids, int P, int E, const int* counts, int* order) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ int slots[];   // [warps, E]
    int lane = threadIdx.x & 31;
    int w = threadIdx.x >> 5;
    for (int i = threadIdx.x; i < MG_WARPS * E; i += blockDim.x) slots[i] = 0;
    __syncthreads();
    int first = blockIdx.x * MG_TILE + w * (MG_ROUNDS * 32);
    int* mine = slots + w * E;
    unsigned below = (1u << lane) - 1u;
    for (int r = 0; r < MG_ROUNDS; r++) {   // per warp and expert: its pairs in the tile
        int p = first + r * 32 + lane;
        int e = p < P ? ids[p] : -1;
        bool ok = e >= 0 && e < E;
        unsigned peers = __match_any_sync(0xffffffffu, e);
        if (ok && (peers & below) == 0) mine[e] += __popc(peers);
        __syncwarp();
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) {   // warp counts -> first slots
        int run = counts[(i64) blockIdx.x * E + e];
        for (int v = 0; v < MG_WARPS; v++) {
            int c = slots[v * E + e];
            slots[v * E + e] = run;
            run += c;
        }
    }
    __syncthreads();
    for (int r = 0; r < MG_ROUNDS; r++) {
        int p = first + r * 32 + lane;
        int e = p < P ? ids[p] : -1;
        bool ok = e >= 0 && e < E;
        unsigned peers = __match_any_sync(0xffffffffu, e);
        if (ok) order[mine[e] + __popc(peers & below)] = p;
        __syncwarp();
        if (ok && (peers & below) == 0) mine[e] += __popc(peers);
        __syncwarp();
    }
}
