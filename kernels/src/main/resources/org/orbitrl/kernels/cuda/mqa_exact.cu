// Exact mode's DeepSeek V4 attention and lightning-indexer scores (CudaMqaAttention#sinkExact, #indexerExact): f32 on
// CUDA cores, every output's arithmetic fixed by its own operands alone, so that a decoded token's attention and
// indexer scores equal the same query's in any training forward bit for bit, whatever the launch's shape, the other
// queries beside it or the keys it does not see. (common.cuh is prepended by the compiler.)
//
// Attention, row (query t, head h) over kv [S, d] with mask row [S] (0 or -inf) and sink logit z_h:
//   the row's seen keys k_1 < k_2 < ... < k_n (mask 0) in chunks of SX_CHUNK consecutive seen keys, counted from its
//   first seen key (never from a position in kv: a decode step's kv holds other rows than training's);
//   from m = z_h, l = 1, acc = 0, for each chunk:
//     s_k = (sum over lanes of the lane's partial, in the butterfly below) * scale + mask_k, the lane's partial the
//           fused multiply-adds of its channels c = lane, lane + 32, ... in ascending c; the butterfly adds lane
//           partials across offsets 16, 8, 4, 2, 1 (commutative at each step: every lane holds the same sum);
//     m' = max(m, s_1, ..., s_c) in order; corr = e^(m - m') where m' != m;
//     p_k = e^(s_k - m'); l = l corr + p_1 + ... + p_c (in order); acc_j = acc_j corr, then acc_j = p_k v_kj + acc_j
//     (one fused multiply-add) for the chunk's keys in order;
//   out_j = acc_j / l (0 for a row that sees nothing: the sink takes all of its weight).
// A block is one query and SX_WARPS heads (a warp a head); its warps share the query's seen keys, staged a chunk at a
// time in shared memory. The seen keys are found SX_SCAN mask entries at a time and kept, those of an unfinished chunk
// carried into the next scan, so that a chunk never depends on where a scan begins.
//
// Indexer, entry (query t, compressed entry m < closed[t]): sum over heads h in ascending order of
// relu(q[t, h] . keys[m]) * qScale * w[t, h], each product's dot the fused multiply-adds of its channels in ascending
// order from 0; -inf for m >= closed[t]. A block is IX_TILE queries x IX_TILE entries, a thread 4 x 4 of them.

#define SX_WARPS 8
#define SX_THREADS (32 * SX_WARPS)
#define SX_SCAN SX_THREADS
#define SX_CHUNK 8
#define SX_MAXC 16   // channels a lane: d <= 512

// One chunk of n <= SX_CHUNK seen keys (their rows staged in ks, their indices in idx) into a warp's row: the steps
// above. Every lane ends with the same m and l.
__device__ __forceinline__ void sx_chunk(const float* ks, const int* idx, int n, const float* mrow, int d, int cpl,
                                         int lane, float scale, const float* qv, float* acc, float& m, float& l) {
    float sc[SX_CHUNK];
#pragma unroll
    for (int k = 0; k < SX_CHUNK; k++) {
        float part = 0.0f;
        if (k < n) {
#pragma unroll
            for (int i = 0; i < SX_MAXC; i++) {
                int c = i * 32 + lane;
                if (i < cpl) part = __fmaf_rn(qv[i], c < d ? ks[k * d + c] : 0.0f, part);
            }
        }
        sc[k] = part;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
        for (int k = 0; k < SX_CHUNK; k++) sc[k] = __fadd_rn(sc[k], __shfl_xor_sync(0xffffffffu, sc[k], off));
    }
    float mx = m;
#pragma unroll
    for (int k = 0; k < SX_CHUNK; k++) {
        if (k < n) {
            sc[k] = __fadd_rn(__fmul_rn(sc[k], scale), mrow[idx[k]]);
            mx = fmaxf(mx, sc[k]);
        }
    }
    float corr = mx == m ? 1.0f : expf(m - mx);
    m = mx;
#pragma unroll
    for (int k = 0; k < SX_CHUNK; k++) sc[k] = k < n ? expf(sc[k] - mx) : 0.0f;
    l = __fmul_rn(l, corr);
#pragma unroll
    for (int k = 0; k < SX_CHUNK; k++) {
        if (k < n) l = __fadd_rn(l, sc[k]);
    }
#pragma unroll
    for (int i = 0; i < SX_MAXC; i++) {
        if (i < cpl) {
            int c = i * 32 + lane;
            float a = __fmul_rn(acc[i], corr);
#pragma unroll
            for (int k = 0; k < SX_CHUNK; k++) {
                if (k < n) a = __fmaf_rn(sc[k], c < d ? ks[k * d + c] : 0.0f, a);
            }
            acc[i] = a;
        }
    }
}

// The rows of n seen keys (indices idx) of kv [S, d] into ks [n][d], by every thread of the block.
__device__ __forceinline__ void sx_stage(float* ks, const float* kv, const int* idx, int n, int d) {
    for (int e = threadIdx.x; e < n * d; e += SX_THREADS) {
        int k = e / d;
        ks[e] = kv[(i64) idx[k] * d + (e - k * d)];
    }
}

// q [T, H, d], kv [S, d], mask [T, S], sinks [H], out [T, H, d], all f32 and contiguous. Grid (T, ceil(H / SX_WARPS)),
// SX_THREADS threads, dynamic shared memory SX_CHUNK * d floats.
extern "C" __global__ void __launch_bounds__(SX_THREADS) mqa_sink_attention_exact(const float* q, const float* kv,
        const float* mask, const float* sinks, float* out, int s, int heads, int d, float scale) {
    extern __shared__ float ks[];                    // [SX_CHUNK][d]: the chunk's key rows
    __shared__ int seen[SX_SCAN + SX_CHUNK];         // seen keys not yet taken, in ascending order
    __shared__ int warpSeen[SX_WARPS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x;
    const int h = blockIdx.y * SX_WARPS + warp;
    const bool row = h < heads;
    const float* mrow = mask + (i64) t * s;
    const int cpl = (d + 31) >> 5;
    float qv[SX_MAXC], acc[SX_MAXC];
#pragma unroll
    for (int i = 0; i < SX_MAXC; i++) {
        int c = i * 32 + lane;
        qv[i] = row && i < cpl && c < d ? q[((i64) t * heads + h) * d + c] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = row ? sinks[h] : 0.0f;
    float l = 1.0f;
    int pending = 0;
    for (int j0 = 0; j0 < s; j0 += SX_SCAN) {
        int j = j0 + threadIdx.x;
        bool vis = j < s && mrow[j] != -ORBIT_INF;
        unsigned bal = __ballot_sync(0xffffffffu, vis);
        if (lane == 0) warpSeen[warp] = __popc(bal);
        __syncthreads();
        int at = pending, total = pending;
        for (int w = 0; w < SX_WARPS; w++) {
            at += w < warp ? warpSeen[w] : 0;
            total += warpSeen[w];
        }
        if (vis) seen[at + __popc(bal & ((1u << lane) - 1u))] = j;
        __syncthreads();
        int full = total - total % SX_CHUNK;
        for (int c0 = 0; c0 < full; c0 += SX_CHUNK) {
            sx_stage(ks, kv, seen + c0, SX_CHUNK, d);
            __syncthreads();
            if (row) sx_chunk(ks, seen + c0, SX_CHUNK, mrow, d, cpl, lane, scale, qv, acc, m, l);
            __syncthreads();
        }
        int rest = total - full;   // an unfinished chunk's keys go on to the next scan
        int carried = threadIdx.x < rest ? seen[full + threadIdx.x] : 0;
        __syncthreads();
        if (threadIdx.x < rest) seen[threadIdx.x] = carried;
        pending = rest;
        __syncthreads();
    }
    if (pending > 0) {   // the last chunk, short
        sx_stage(ks, kv, seen, pending, d);
        __syncthreads();
        if (row) sx_chunk(ks, seen, pending, mrow, d, cpl, lane, scale, qv, acc, m, l);
    }
    if (row) {
        float* o = out + ((i64) t * heads + h) * d;
#pragma unroll
        for (int i = 0; i < SX_MAXC; i++) {
            int c = i * 32 + lane;
            if (i < cpl && c < d) o[c] = __fdiv_rn(acc[i], l);
        }
    }
}

#define IX_TILE 32
#define IX_THREADS 64

// q [T, H, D], keys [M, D], w [T, H] (the heads' weights), closed [T] i32, out [T, M], all contiguous. Grid
// (ceil(M / IX_TILE), ceil(T / IX_TILE)), IX_THREADS threads, dynamic shared memory 2 * IX_TILE * (D + 1) floats.
extern "C" __global__ void __launch_bounds__(IX_THREADS) mqa_indexer_exact(const float* q, const float* keys,
        const float* w, const int* closed, float* out, int tq, int mm, int heads, int dd, float qScale) {
    extern __shared__ float sm[];
    const int ld = dd + 1;
    float* Ks = sm;                  // [IX_TILE][D + 1]: the tile's entries
    float* Qs = sm + IX_TILE * ld;   // [IX_TILE][D + 1]: the tile's queries, one head
    const int t0 = blockIdx.y * IX_TILE, m0 = blockIdx.x * IX_TILE;
    const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;
    int open = threadIdx.x < IX_TILE && t0 + threadIdx.x < tq && closed[t0 + threadIdx.x] > m0;
    if (!__syncthreads_or(open)) {   // no query of the tile has closed any entry of it
        for (int e = threadIdx.x; e < IX_TILE * IX_TILE; e += IX_THREADS) {
            int t = t0 + e / IX_TILE, m = m0 + e % IX_TILE;
            if (t < tq && m < mm) out[(i64) t * mm + m] = -ORBIT_INF;
        }
        return;
    }
    for (int e = threadIdx.x; e < IX_TILE * dd; e += IX_THREADS) {
        int r = e / dd, c = e - r * dd;
        Ks[r * ld + c] = m0 + r < mm ? keys[(i64) (m0 + r) * dd + c] : 0.0f;
    }
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    }
    for (int h = 0; h < heads; h++) {
        __syncthreads();
        for (int e = threadIdx.x; e < IX_TILE * dd; e += IX_THREADS) {
            int r = e / dd, c = e - r * dd;
            Qs[r * ld + c] = t0 + r < tq ? q[((i64) (t0 + r) * heads + h) * dd + c] : 0.0f;
        }
        __syncthreads();
        float dot[4][4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
#pragma unroll
            for (int j = 0; j < 4; j++) dot[i][j] = 0.0f;
        }
        for (int c = 0; c < dd; c++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = Qs[(ty + 8 * i) * ld + c];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = Ks[(tx + 8 * j) * ld + c];
#pragma unroll
            for (int i = 0; i < 4; i++) {
#pragma unroll
                for (int j = 0; j < 4; j++) dot[i][j] = __fmaf_rn(a[i], b[j], dot[i][j]);
            }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int t = t0 + ty + 8 * i;
            float wt = t < tq ? w[(i64) t * heads + h] : 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                acc[i][j] = __fadd_rn(acc[i][j], __fmul_rn(__fmul_rn(fmaxf(dot[i][j], 0.0f), qScale), wt));
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int t = t0 + ty + 8 * i;
        if (t >= tq) continue;
        int n = closed[t];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int m = m0 + tx + 8 * j;
            if (m < mm) out[(i64) t * mm + m] = m < n ? acc[i][j] : -ORBIT_INF;
        }
    }
}
