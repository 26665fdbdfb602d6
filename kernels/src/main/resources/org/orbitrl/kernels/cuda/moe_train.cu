// The grouped mixture-of-experts block for training and prefill (see Backend's moe* operations):
// routing weights from the router probabilities, rows moved between token order and the
// expert-grouped pair order, the weighted combination, and the backward of the routing weights.
// T tokens, k experts a token, P = T * k pairs (pair p = token * k + j), E experts; order [P] lists the
// pairs grouped by expert and position [P] is its inverse.

// Per token (one block, blockDim a multiple of 32, dynamic shared E floats): the k largest of probs
// [T, E] in descending order, ties to the lower expert, into chosen and ids [T, k]; weights = chosen,
// divided by their sum (j ascending) when normalize.
extern "C" __global__ void moe_topk_weights(const float* probs, int E, int k, int normalize, float* chosen, float* weights,
                                            int* ids) {
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
        float bv = -ORBIT_INF;
        int bi = 0x7fffffff;
        for (int e = threadIdx.x; e < E; e += blockDim.x) {
            float v = pr[e];
            if (v > bv || (v == bv && e < bi)) {
                bv = v;
                bi = e;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
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

// position[order[i]] = i.
extern "C" __global__ void moe_positions(const int* order, int P, int* position) {
    GRID_STRIDE(i, (i64) P) position[order[i]] = (int) i;
}

// dst[i] = w[order[i]] * src[order[i] / k] (w null: 1); src [T, H], dst [P, H].
extern "C" __global__ void moe_gather_pairs(const float* src, const int* order, int k, const float* w, float* dst, int P, int H) {
    i64 total = (i64) P * H;
    GRID_STRIDE(idx, total) {
        int i = (int) (idx / H);
        int c = (int) (idx % H);
        int p = order[i];
        float v = src[(i64) (p / k) * H + c];
        dst[idx] = w ? w[p] * v : v;
    }
}

// out[t] (+)= sum_j w[t * k + j] * ys[position[t * k + j]] (j ascending; w null: 1). One block a token.
extern "C" __global__ void moe_combine_grouped(const float* ys, const int* position, const float* w, int k, float* out,
                                               int accumulate, int H) {
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

// dw[p] = <dout[p / k], ys[position[p]]>: one warp a pair.
extern "C" __global__ void moe_weight_grad(const float* dout, const float* ys, const int* position, int k, float* dw, int P, int H) {
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
    extern __shared__ float widen_row[];
    u16* s = (u16*) widen_row;
    float* row = y + (i64) blockIdx.x * H;
    const u16* b = (const u16*) row;
    for (int c = threadIdx.x; c < H; c += blockDim.x) s[c] = b[c];
    __syncthreads();
    for (int c = threadIdx.x; c < H; c += blockDim.x) row[c] = bf16_to_f32(s[c]);
}
