// Router helpers shared by the router kernels (moe.cu, moe_train.cu) and the persistent decode MoE (moe_decode.cu).

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

// The selection of router_select by one warp (no block barriers): the softmax's max and sum over the E
// logits lg (shared memory), then the topk largest logits in descending order (ties to the lower expert),
// their probabilities expf(l - max) / sum, optionally divided by their sum. lg is overwritten.
__device__ __forceinline__ void router_select_warp(float* lg, int E, int topk, int normalize, float* values, int* indices) {
    int lane = threadIdx.x & 31;
    float m = -ORBIT_INF;
    for (int e = lane; e < E; e += 32) m = fmaxf(m, lg[e]);
    m = warp_max(m);
    float s = 0.0f;
    for (int e = lane; e < E; e += 32) s += expf(lg[e] - m);
    s = warp_sum(s);
    float inv = 1.0f / s;
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
    if (normalize && lane == 0) {
        float r = 1.0f / picked;
        for (int j = 0; j < topk; j++) values[j] *= r;
    }
}
