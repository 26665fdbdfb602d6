// Gathers and selections.

// out[r, :] = table[ids[r], :]; table f32 or bf16 [vocab, h]; ids i32 or i64 [n]. A thread loads EMB_V values of the
// row before it stores any (a decode step's one row is one block: its loads in one round trip, not one a value).
#define EMB_V 8
extern "C" __global__ void embedding_f32(const void* table, int tableBf16, const void* ids, int idsI64,
                                         float* out, int n, int h, i64 vocab, int* err) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    for (int r = blockIdx.x; r < n; r += gridDim.x) {
        i64 id = idsI64 ? ((const i64*) ids)[r] : (i64) ((const int*) ids)[r];
        float* o = out + (i64) r * h;
        if (id < 0 || id >= vocab) {
            if (threadIdx.x == 0) report_error(err, ERR_INDEX_OUT_OF_RANGE, id, r);
            continue;
        }
        const u16* rowb = (const u16*) table + id * h;
        const float* rowf = (const float*) table + id * h;
        for (int i0 = threadIdx.x; i0 < h; i0 += EMB_V * blockDim.x) {
            float v[EMB_V];
#pragma unroll
            for (int k = 0; k < EMB_V; k++) {
                int i = i0 + k * blockDim.x;
                if (i < h) v[k] = tableBf16 ? bf16_to_f32(rowb[i]) : rowf[i];
            }
#pragma unroll
            for (int k = 0; k < EMB_V; k++) {
                int i = i0 + k * blockDim.x;
                if (i < h) o[i] = v[k];
            }
        }
    }
}

// Order used by argmax and topk: larger value first, then lower index. NaN is never chosen.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ void warp_best(float& bv, int& bi) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (better(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
}

// Best (value, index) over the block; every thread gets it. shv/shi: 32 entries each.
__device__ __forceinline__ void block_best(float& bv, int& bi, float* shv, int* shi) {
    int lane = threadIdx.x & 31;
    int wid = threadIdx.x >> 5;
    int nw = (blockDim.x + 31) >> 5;
    warp_best(bv, bi);
    if (lane == 0) {
        shv[wid] = bv;
        shi[wid] = bi;
    }
    __syncthreads();
    if (wid == 0) {
        bv = lane < nw ? shv[lane] : -ORBIT_INF;
        bi = lane < nw ? shi[lane] : 0x7fffffff;
        warp_best(bv, bi);
        if (lane == 0) {
            shv[0] = bv;
            shi[0] = bi;
        }
    }
    __syncthreads();
    bv = shv[0];
    bi = shi[0];
    __syncthreads();
}

// Per row of n: the index of the largest value, ties to the lower index. out i32 or i64.
extern "C" __global__ void argmax_f32(const float* x, int n, void* out, int outI64) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    __shared__ float shv[32];
    __shared__ int shi[32];
    const float* xr = x + (i64) blockIdx.x * n;
    float bv = -ORBIT_INF;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = xr[i];
        if (better(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    block_best(bv, bi, shv, shi);
    if (threadIdx.x == 0) {
        int r = bi == 0x7fffffff ? 0 : bi;
        if (outI64) ((i64*) out)[blockIdx.x] = r; else ((int*) out)[blockIdx.x] = r;
    }
}

// Per row of n: the k best (value, index) in the order above, written in that order.
// Pass j picks the best element that comes strictly after pass j-1's pick in the order.
extern "C" __global__ void topk_f32(const float* x, int n, int k, float* values, void* indices, int idxI64) {
    ORBIT_TRACE_KERNEL();
    __shared__ float shv[32];
    __shared__ int shi[32];
    const float* xr = x + (i64) blockIdx.x * n;
    float pv = ORBIT_INF;
    int pi = -1;
    for (int j = 0; j < k; j++) {
        float bv = -ORBIT_INF;
        int bi = 0x7fffffff;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float v = xr[i];
            bool after = v < pv || (v == pv && i > pi);
            if (after && better(v, i, bv, bi)) {
                bv = v;
                bi = i;
            }
        }
        block_best(bv, bi, shv, shi);
        if (bi == 0x7fffffff) bi = 0; // only NaNs were left
        if (threadIdx.x == 0) {
            i64 o = (i64) blockIdx.x * k + j;
            values[o] = bv;
            if (idxI64) ((i64*) indices)[o] = bi; else ((int*) indices)[o] = bi;
        }
        pv = bv;
        pi = bi;
    }
}
