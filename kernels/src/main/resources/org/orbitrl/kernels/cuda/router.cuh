// Router helpers shared by the router kernels (moe.cu, moe_train.cu), the persistent decode MoE (moe_decode.cu) and the
// decode expert launches that pick their experts from a router's logits (qgemv.cu's _pk kernels).

// The larger value, then the lower index, among v[e] for e = first, first + step, ... below E, then across the warp by a
// butterfly of shuffles: a total order on finite values, so every reduction tree picks the same one (bv -inf and bi
// 0x7fffffff where no value is a number). Every lane gets the warp's pick.
__device__ __forceinline__ void warp_pick(const float* v, int first, int step, int E, float& bv, int& bi) {
    bv = -ORBIT_INF;
    bi = 0x7fffffff;
    for (int e = first; e < E; e += step) {
        float x = v[e];
        if (x > bv || (x == bv && e < bi)) {
            bv = x;
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
}

// acc plus one 16-byte unit of a bf16 row (q) times its 8 values of x (xr: shared, 16-byte aligned), in the order of
// the unit's values. x is read as two 16-byte loads: with lanes 32 bytes apart, 16 shared-memory wavefronts a warp for
// the unit's x where eight 4-byte loads took 64 (8-way bank conflicts); the sums are the same.
__device__ __forceinline__ void router_unit(uint4 q, const float* xr, float& acc) {
    float4 a = *(const float4*) xr;
    float4 b = *(const float4*) (xr + 4);
    float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    u32 words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        acc += __uint_as_float(words[j] << 16) * xv[2 * j] + __uint_as_float(words[j] & 0xffff0000u) * xv[2 * j + 1];
    }
}

// One warp's share of x . w[e] (w bf16, 16-byte units): the 8 units u0 + lane + 32 i held in q, times
// xs (shared, 16-byte aligned), added to acc.
__device__ __forceinline__ void router_dot_units(const uint4* q, const float* xs, int units, int u0, int lane, float& acc) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int u = u0 + lane + 32 * i;
        if (u < units) router_unit(q[i], xs + u * 8, acc);
    }
}

// The loads of units u0 + lane + 32 i (i < 8, those below units) of router row `row` into q.
__device__ __forceinline__ void router_fetch(const uint4* __restrict__ row, int units, int u0, int lane, uint4* q) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int u = u0 + lane + 32 * i;
        if (u < units) q[i] = row[u];
    }
}

// The softmax's max m and 1 / sum of expf(l - m) over the E logits lg (shared), as every selection computes them: lane
// over e = lane + 32 i in order, then the butterfly (every lane gets the same bits).
__device__ __forceinline__ void router_softmax(const float* lg, int E, float& m, float& inv) {
    int lane = threadIdx.x & 31;
    m = -ORBIT_INF;
    for (int e = lane; e < E; e += 32) m = fmaxf(m, lg[e]);
    m = warp_max(m);
    float s = 0.0f;
    for (int e = lane; e < E; e += 32) s += expf(lg[e] - m);
    s = warp_sum(s);
    inv = 1.0f / s;
}

// router_select_warp's selection by rescans of lg (shared memory, overwritten: a pick's logit becomes -inf), a pick a
// warp_pick, lane 0 writing each pick and then dividing the written values by their sum.
__device__ __forceinline__ void router_select_scan(float* lg, int E, int topk, int normalize, float* values, int* indices) {
    int lane = threadIdx.x & 31;
    float m, inv;
    router_softmax(lg, E, m, inv);
    ORBIT_TRACE_MARK(4); // the softmax's max and sum (marks 4 and 5: the selecting block's, in every router's timeline)
    float picked = 0.0f;
    for (int j = 0; j < topk; j++) {
        float bv;
        int bi;
        warp_pick(lg, lane, 32, E, bv, bi);
        float p = expf(bv - m) * inv;
        picked += p;
        if (lane == 0) {
            values[j] = p;
            indices[j] = bi;
            if ((unsigned) bi < (unsigned) E) lg[bi] = -ORBIT_INF; // taken (none when no logit is a number)
        }
        __syncwarp();
    }
    ORBIT_TRACE_MARK(5); // the picks made
    if (normalize && lane == 0) {
        float r = 1.0f / picked;
        for (int j = 0; j < topk; j++) values[j] *= r;
    }
}

// Order-preserving keys of floats that are numbers (x < y exactly when key(x) < key(y); -0 and +0 one key, as they
// compare equal), and back (+0 for that key).
__device__ __forceinline__ u32 router_key(float x) {
    u32 u = x == 0.0f ? 0u : __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

__device__ __forceinline__ float router_unkey(u32 k) {
    return __uint_as_float((k & 0x80000000u) ? k & 0x7fffffffu : ~k);
}

// router_select_scan's values and experts with the logits in registers (lane l's E / 32 of them: e = l + 32 i, i < L):
// a pick is each lane's best (the larger, then the lower expert, as warp_pick) and then the warp's by two reductions
// (the largest key, then the lowest expert that holds it: warp_pick's total order), its owner striking it out; lane j
// keeps pick j and writes it (the division by the picks' sum once, as the scan divides what it wrote). Nothing is
// written to memory between picks.
#if defined(ORBIT_ROUTER_REGS) && __CUDA_ARCH__ >= 800
template <int L>
__device__ __forceinline__ void router_select_regs(const float* lg, int E, int topk, int normalize, float* values, int* indices) {
    int lane = threadIdx.x & 31;
    float v[L];
    float m = -ORBIT_INF;
#pragma unroll
    for (int i = 0; i < L; i++) {
        int e = lane + 32 * i;
        v[i] = e < E ? lg[e] : -ORBIT_INF;
        if (e < E) m = fmaxf(m, v[i]);
    }
    m = warp_max(m);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < L; i++)
        if (lane + 32 * i < E) s += expf(v[i] - m);
    s = warp_sum(s);
    float inv = 1.0f / s;
    ORBIT_TRACE_MARK(4); // the softmax's max and sum
    float picked = 0.0f;
    float mine = 0.0f;
    int mineAt = 0;
    for (int j = 0; j < topk; j++) {
        float bv = -ORBIT_INF;
        int bi = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < L; i++) {
            int e = lane + 32 * i;
            if (e < E && (v[i] > bv || (v[i] == bv && e < bi))) {
                bv = v[i];
                bi = e;
            }
        }
        u32 key = router_key(bv);
        u32 top = __reduce_max_sync(0xffffffffu, key);
        bi = (int) __reduce_min_sync(0xffffffffu, key == top ? (u32) bi : 0x7fffffffu);
        bv = router_unkey(top);
        float p = expf(bv - m) * inv;
        picked += p;
        if (lane == j) {
            mine = p;
            mineAt = bi;
        }
        if ((unsigned) bi < (unsigned) E && lane == (bi & 31)) { // taken (none when no logit is a number)
#pragma unroll
            for (int i = 0; i < L; i++)
                if (i == (bi >> 5)) v[i] = -ORBIT_INF;
        }
    }
    ORBIT_TRACE_MARK(5); // the picks made
    if (lane < topk) {
        values[lane] = normalize ? mine * (1.0f / picked) : mine;
        indices[lane] = mineAt;
    }
    __syncwarp();
}
#endif

// The selection of router_select by one warp (no block barriers): the softmax's max and sum over the E
// logits lg (shared memory), then the topk largest logits in descending order (ties to the lower expert),
// their probabilities expf(l - max) / sum, optionally divided by their sum. Built with ORBIT_ROUTER_REGS (KernelLibrary's
// orbit.cuda.routerRegs, on by default), router_select_regs where the logits fit the lanes' registers (E <= 384) and
// topk <= 32; else router_select_scan (which overwrites lg). The same values and experts.
__device__ __forceinline__ void router_select_warp(float* lg, int E, int topk, int normalize, float* values, int* indices) {
#if defined(ORBIT_ROUTER_REGS) && __CUDA_ARCH__ >= 800 // redux.sync
    if (topk <= 32 && E <= 128) {
        router_select_regs<4>(lg, E, topk, normalize, values, indices);
        return;
    }
    if (topk <= 32 && E <= 384) {
        router_select_regs<12>(lg, E, topk, normalize, values, indices);
        return;
    }
#endif
    router_select_scan(lg, E, topk, normalize, values, indices);
}

// The block forms of router_select_warp's selection (router_select_block, router_picks_block): in the selection's total
// order (the larger, then the lower expert: warp_pick's), lane l of warp w holds logit 32 w + l and counts the warp's
// logits before its own (shuffles); the warp's first topk are candidates, in slot w * topk + that count, so that among
// equal values the lower slot is the lower expert. Then candidate c counts the candidates before it (the larger, then
// the lower slot): every pick is among its warp's first topk, and its count among the candidates is its place. About
// 64 comparisons a thread in place of topk rounds of reductions a warp. They take the block's threads where the E
// logits fit them (E <= blockDim.x), topk <= 32, ceil(E / 32) * topk <= ROUTER_CANDS and every logit is finite.
#define ROUTER_CANDS 128

// Whether the block forms take these logits (lg shared, written before the call; a block barrier, which every thread
// of the block must reach).
__device__ __forceinline__ bool router_block_takes(const float* lg, int E, int topk) {
    int t = threadIdx.x;
    bool whole = E <= (int) blockDim.x && topk <= 32 && ((E + 31) >> 5) * topk <= ROUTER_CANDS;
    return whole && !__syncthreads_or(t < E && !isfinite(lg[t])); // uniform: E, topk and blockDim are the block's
}

// The candidates of warps w < ceil(E / 32) into candV / candE (shared, ROUTER_CANDS each); no barrier after.
__device__ __forceinline__ void router_candidates(const float* lg, int E, int topk, float* candV, int* candE) {
    int t = threadIdx.x;
    int lane = t & 31;
    int warp = t >> 5;
    if (warp >= (E + 31) >> 5) return;
    float v = t < E ? lg[t] : -ORBIT_INF; // a lane past E holds -inf, which no finite logit counts
    int before = 0;
#pragma unroll
    for (int j = 0; j < 32; j++) {
        float u = __shfl_sync(0xffffffffu, v, j);
        before += (u > v) | ((u == v) & (j < lane));
    }
    if (lane < topk) {
        candV[warp * topk + lane] = -ORBIT_INF; // the slots of a warp of fewer than topk logits
        candE[warp * topk + lane] = 0;
    }
    __syncwarp();
    if (t < E && before < topk) {
        candV[warp * topk + before] = v;
        candE[warp * topk + before] = t;
    }
}

// The picks' logits and experts in pick order into pickV / pickE (shared, topk each) from the candidates (after a
// barrier that ends router_candidates); no barrier after.
__device__ __forceinline__ void router_places(int E, int topk, const float* candV, const int* candE, float* pickV, int* pickE) {
    int t = threadIdx.x;
    int cands = ((E + 31) >> 5) * topk;
    if (t >= cands) return;
    float c = candV[t];
    if (c == -ORBIT_INF) return;
    int before = 0;
#pragma unroll 8
    for (int j = 0; j < cands; j++) {
        float u = candV[j];
        before += (u > c) | ((u == c) & (j < t));
    }
    if (before < topk) {
        pickV[before] = c;
        pickE[before] = candE[t];
    }
}

// router_select_warp's values and experts (the same bits) by every warp of the block where the block forms take the
// logits, else by its first warp (router_select_warp). Every warp computes the softmax's max and sum as the warp forms
// do (lane over e = lane + 32 i in order, then the butterfly), and lanes j < topk of the first warp take the picks'
// probabilities in pick order (their sum in that order, as the warp forms add them). Every thread of the block must
// call it (it has block barriers); lg (shared) is read only. values and indices may be shared; written by threads
// below topk, with no barrier after.
__device__ __forceinline__ void router_select_block(float* lg, int E, int topk, int normalize, float* values, int* indices) {
    __shared__ float candV[ROUTER_CANDS];
    __shared__ int candE[ROUTER_CANDS];
    __shared__ float pickV[32];
    __shared__ int pickE[32];
    int t = threadIdx.x;
    if (!router_block_takes(lg, E, topk)) {
        if (t < 32) router_select_warp(lg, E, topk, normalize, values, indices);
        return;
    }
    router_candidates(lg, E, topk, candV, candE);
    float m, inv;
    router_softmax(lg, E, m, inv);
    ORBIT_TRACE_MARK(4); // the softmax's max and sum
    __syncthreads();
    router_places(E, topk, candV, candE, pickV, pickE);
    if (((E + 31) >> 5) * topk <= 32) {
        __syncwarp();
    } else {
        __syncthreads();
    }
    ORBIT_TRACE_MARK(5); // the picks made
    if (t < topk) {
        float picked = 0.0f;
        float mine = 0.0f;
#pragma unroll 8
        for (int j = 0; j < topk; j++) {
            float p = expf(pickV[j] - m) * inv;
            picked += p;
            if (j == t) mine = p;
        }
        values[t] = normalize ? mine * (1.0f / picked) : mine;
        indices[t] = pickE[t];
    }
}

// The experts router_select_warp picks (the same experts), in pick order into pickE (shared, topk), with no values:
// the block forms where they take the logits, else router_select_scan by the first warp (router_select_warp's rescans,
// its values into pickV, shared, topk; it overwrites lg), whose loops leave the launch's registers to its own work
// where the register form's unrolled picks, compiled in beside it, made a gate/up launch spill. Every thread of the
// block must call it; every thread sees pickE after it (a barrier ends it).
__device__ __forceinline__ void router_picks_block(float* lg, int E, int topk, float* pickV, int* pickE) {
    __shared__ float candV[ROUTER_CANDS];
    __shared__ int candE[ROUTER_CANDS];
    if (!router_block_takes(lg, E, topk)) {
        if (threadIdx.x < 32) router_select_scan(lg, E, topk, 0, pickV, pickE);
        __syncthreads();
        return;
    }
    router_candidates(lg, E, topk, candV, candE);
    __syncthreads();
    router_places(E, topk, candV, candE, pickV, pickE);
    __syncthreads();
}
