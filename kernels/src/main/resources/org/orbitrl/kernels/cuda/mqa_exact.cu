// Exact mode's DeepSeek V4 attention and lightning-indexer scores (CudaMqaAttention#sinkExact, #indexerExact): f32 on
// CUDA cores, every output's arithmetic fixed by its own operands alone, so that a decoded token's attention and
// indexer scores equal the same query's in any training forward bit for bit, whatever the launch's shape, the other
// queries beside it or the keys it does not see. (common.cuh is prepended by the compiler.)
//
// Attention, row (query t, head h) over kv [S, d] with mask row [S] (0 or -inf) and sink logit z_h:
//   the row's seen keys k_1 < k_2 < ... < k_n (mask 0) in chunks of SX_CHUNK consecutive seen keys, counted from its
//   first seen key (never from a position in kv: a decode step's kv holds other rows than training's); each chunk on
//   its own (it needs nothing of the others):
//     s_k = (sum over lanes of the lane's partial, in the butterfly below) * scale (+ mask_k = 0), the lane's partial the
//           fused multiply-adds of its channels c = lane, lane + 32, ... in ascending c; the butterfly adds lane
//           partials across offsets 16, 8, 4, 2, 1 (commutative at each step: every lane holds the same sum);
//     m_c = max(s_1, ..., s_c) in order; p_k = e^(s_k - m_c); l_c = p_1 + ... + p_c from 0 in order;
//     a_cj = p_k v_kj + a_cj (one fused multiply-add) from 0 for the chunk's keys in order;
//   then the chunks in order into m = z_h, l = 1, acc = 0: m' = max(m, m_c), x = e^(m - m') and y = e^(m_c - m') (1
//   where the exponent is 0), l = l x + l_c y, acc_j = a_cj y + acc_j x (one fused multiply-add after the product);
//   out_j = acc_j / l (0 for a row that sees nothing: the sink takes all of its weight).
// Two layouts, the same bits: a block of one query and 1-8 heads, a warp a head walking its chunks one after another
// (training's many queries), or a block of one (query, head) whose 8 warps take 8 chunks at a time, one warp then adding
// them in order (a decode step's one query a sequence). Either way the block finds the seen keys a block's width of
// mask entries at a time, keeping those of an unfinished chunk for the next scan, so that a chunk never depends on
// where a scan begins.
//
// Indexer, entry (query t, compressed entry m < closed[t]): sum over heads h in ascending order of
// relu(q[t, h] . keys[m]) * qScale * w[t, h], each product's dot the fused multiply-adds of its channels in ascending
// order from 0; -inf for m >= closed[t]. A block is IX_TILE queries x IX_TILE entries, a thread 4 x 4 of them; for a
// few queries (a decode step's), a block is one query and IR_ENTRIES entries (mqa_indexer_exact_rows, the same bits).

#define SX_CHUNK 8
#define SX_MAXC 16   // channels a lane: d <= 512

// The rows of n seen keys (indices idx) of kv [S, d] into ks [n][d] by `count` threads from thread `first` of the
// block (tid the caller's index among them), as cp.async copies (16 bytes where vec: d a multiple of 4 and kv 16-byte
// aligned; else 4), committed as one group.
__device__ __forceinline__ void sx_stage(float* ks, const float* kv, const int* idx, int n, int d, bool vec, int tid,
                                         int count) {
    if (vec) {
        int d4 = d >> 2;
        for (int e = tid; e < n * d4; e += count) {
            int k = e / d4;
            int c = (e - k * d4) << 2;
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(ks + k * d + c)),
                         "l"(kv + (i64) idx[k] * d + c) : "memory");
        }
    } else {
        for (int e = tid; e < n * d; e += count) {
            int k = e / d;
            asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_addr(ks + e)),
                         "l"(kv + (i64) idx[k] * d + (e - k * d)) : "memory");
        }
    }
    cp_async_commit();
}

// A chunk of n <= SX_CHUNK seen keys (their rows in ks [n][d]) on its own, by one warp: m_c, l_c and the lane's
// channels of a_c (the steps above). Every lane ends with the same m_c and l_c.
__device__ __forceinline__ void sx_local(const float* ks, int n, int d, int cpl, int lane, float scale, const float* qv,
                                         float* a, float& mc, float& lc) {
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
    float mx = -ORBIT_INF;
#pragma unroll
    for (int k = 0; k < SX_CHUNK; k++) {
        if (k < n) {
            sc[k] = __fmul_rn(sc[k], scale);
            mx = fmaxf(mx, sc[k]);
        }
    }
    float l = 0.0f;
#pragma unroll
    for (int k = 0; k < SX_CHUNK; k++) {
        sc[k] = k < n ? expf(sc[k] - mx) : 0.0f;
        if (k < n) l = __fadd_rn(l, sc[k]);
    }
#pragma unroll
    for (int i = 0; i < SX_MAXC; i++) {
        if (i < cpl) {
            int c = i * 32 + lane;
            float v = 0.0f;
#pragma unroll
            for (int k = 0; k < SX_CHUNK; k++) {
                if (k < n) v = __fmaf_rn(sc[k], c < d ? ks[k * d + c] : 0.0f, v);
            }
            a[i] = v;
        }
    }
    mc = mx;
    lc = l;
}

// A chunk's m_c, l_c and a_c into the row's m, l and acc (the steps above).
__device__ __forceinline__ void sx_combine(float mc, float lc, const float* a, int cpl, float* acc, float& m, float& l) {
    float mx = fmaxf(m, mc);
    float x = m == mx ? 1.0f : expf(m - mx);
    float y = mc == mx ? 1.0f : expf(mc - mx);
    l = __fadd_rn(__fmul_rn(l, x), __fmul_rn(lc, y));
#pragma unroll
    for (int i = 0; i < SX_MAXC; i++) {
        if (i < cpl) acc[i] = __fmaf_rn(a[i], y, __fmul_rn(acc[i], x));
    }
    m = mx;
}

// The block's next scan of a mask row: entries [j0, j0 + THREADS) that are seen appended, in order, to seen[pending..];
// returns the count of seen keys now waiting. vis is this thread's entry's; warpSeen [THREADS / 32] scratch.
template <int THREADS>
__device__ __forceinline__ int sx_scan(bool vis, int j, int pending, int* seen, int* warpSeen) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    unsigned bal = __ballot_sync(0xffffffffu, vis);
    if (lane == 0) warpSeen[warp] = __popc(bal);
    __syncthreads();
    int at = pending, total = pending;
#pragma unroll
    for (int w = 0; w < THREADS / 32; w++) {
        at += w < warp ? warpSeen[w] : 0;
        total += warpSeen[w];
    }
    if (vis) seen[at + __popc(bal & ((1u << lane) - 1u))] = j;
    __syncthreads();
    return total;
}

// seen[from, from + rest) to seen[0, rest): the keys of an unfinished chunk kept for the next scan.
__device__ __forceinline__ void sx_carry(int* seen, int from, int rest) {
    int carried = threadIdx.x < rest ? seen[from + threadIdx.x] : 0;
    __syncthreads();
    if (threadIdx.x < rest) seen[threadIdx.x] = carried;
    __syncthreads();
}

// The lane's channels of row (t, h) of q, and the row's starting state.
__device__ __forceinline__ void sx_start(const float* q, const float* sinks, int t, int h, int heads, int d, int cpl,
                                         int lane, bool row, float* qv, float* acc, float& m, float& l) {
#pragma unroll
    for (int i = 0; i < SX_MAXC; i++) {
        int c = i * 32 + lane;
        qv[i] = row && i < cpl && c < d ? q[((i64) t * heads + h) * d + c] : 0.0f;
        acc[i] = 0.0f;
    }
    m = row ? sinks[h] : 0.0f;
    l = 1.0f;
}

__device__ __forceinline__ void sx_finish(float* out, int t, int h, int heads, int d, int cpl, int lane,
                                          const float* acc, float l) {
    float* o = out + ((i64) t * heads + h) * d;
#pragma unroll
    for (int i = 0; i < SX_MAXC; i++) {
        int c = i * 32 + lane;
        if (i < cpl && c < d) o[c] = __fdiv_rn(acc[i], l);
    }
}

// Warp-a-head layout. q [T, H, d], kv [S, d], mask [T, S], sinks [H], out [T, H, d], all f32 and contiguous. Grid (T,
// ceil(H / WARPS)), 32 WARPS threads, dynamic shared memory 2 * SX_CHUNK * d floats (two chunks' rows: the next one's
// copies in flight while this one is taken).
template <int WARPS>
__device__ __forceinline__ void sink_attention_exact(const float* q, const float* kv, const float* mask,
        const float* sinks, float* out, int s, int heads, int d, float scale, int vec) {
    constexpr int THREADS = 32 * WARPS;
    extern __shared__ float ks[];                    // [2][SX_CHUNK][d]: the chunks' key rows
    __shared__ int seen[THREADS + SX_CHUNK];         // seen keys not yet taken, in ascending order
    __shared__ int warpSeen[WARPS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x;
    const int h = blockIdx.y * WARPS + warp;
    const bool row = h < heads;
    const float* mrow = mask + (i64) t * s;
    const int cpl = (d + 31) >> 5;
    const int chunkFloats = SX_CHUNK * d;
    float qv[SX_MAXC], acc[SX_MAXC], a[SX_MAXC], m, l, mc, lc;
    sx_start(q, sinks, t, h, heads, d, cpl, lane, row, qv, acc, m, l);
    int pending = 0;
    float mj = threadIdx.x < s ? mrow[threadIdx.x] : -ORBIT_INF;
    for (int j0 = 0; j0 < s; j0 += THREADS) {
        int j = j0 + threadIdx.x;
        bool vis = mj != -ORBIT_INF;
        mj = j + THREADS < s ? mrow[j + THREADS] : -ORBIT_INF;   // the next scan's entry, in flight meanwhile
        int total = sx_scan<THREADS>(vis, j, pending, seen, warpSeen);
        int chunks = total / SX_CHUNK;
        if (chunks > 0) sx_stage(ks, kv, seen, SX_CHUNK, d, vec, threadIdx.x, THREADS);
        for (int c = 0; c < chunks; c++) {
            float* buf = ks + (c & 1) * chunkFloats;
            if (c + 1 < chunks) {   // the next chunk's copies into the other buffer, which the last chunk has left
                sx_stage(ks + ((c + 1) & 1) * chunkFloats, kv, seen + (c + 1) * SX_CHUNK, SX_CHUNK, d, vec, threadIdx.x,
                         THREADS);
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            if (row) {
                sx_local(buf, SX_CHUNK, d, cpl, lane, scale, qv, a, mc, lc);
                sx_combine(mc, lc, a, cpl, acc, m, l);
            }
            __syncthreads();
        }
        pending = total - chunks * SX_CHUNK;
        sx_carry(seen, chunks * SX_CHUNK, pending);
    }
    if (pending > 0) {   // the last chunk, short
        sx_stage(ks, kv, seen, pending, d, vec, threadIdx.x, THREADS);
        cp_async_wait<0>();
        __syncthreads();
        if (row) {
            sx_local(ks, pending, d, cpl, lane, scale, qv, a, mc, lc);
            sx_combine(mc, lc, a, cpl, acc, m, l);
        }
    }
    if (row) sx_finish(out, t, h, heads, d, cpl, lane, acc, l);
}

#define SINK_EXACT(W)                                                                                                  \
    extern "C" __global__ void __launch_bounds__(32 * W) mqa_sink_attention_exact_w##W(const float* q, const float* kv, \
            const float* mask, const float* sinks, float* out, int s, int heads, int d, float scale, int vec) {        \
        ORBIT_TRACE_KERNEL();                                                                                          \
        sink_attention_exact<W>(q, kv, mask, sinks, out, s, heads, d, scale, vec);                                     \
    }
SINK_EXACT(1)
SINK_EXACT(2)
SINK_EXACT(4)
SINK_EXACT(8)

#define SR_WARPS 8
#define SR_THREADS (32 * SR_WARPS)

// Block-a-row layout, the same operands. Grid (T, H), SR_THREADS threads, dynamic shared memory SR_WARPS * (SX_CHUNK * d
// + d + 2) floats: each warp's chunk rows, and its chunk's a_c, m_c and l_c for warp 0 to add in order.
extern "C" __global__ void __launch_bounds__(SR_THREADS) mqa_sink_attention_exact_row(const float* q, const float* kv,
        const float* mask, const float* sinks, float* out, int s, int heads, int d, float scale, int vec) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float sm[];
    __shared__ int seen[SR_THREADS + SX_CHUNK];
    __shared__ int warpSeen[SR_WARPS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.x, h = blockIdx.y;
    const float* mrow = mask + (i64) t * s;
    const int cpl = (d + 31) >> 5;
    float* ks = sm + warp * SX_CHUNK * d;                    // this warp's chunk rows
    float* part = sm + SR_WARPS * SX_CHUNK * d;              // [SR_WARPS][d + 2]: a_c, then m_c and l_c
    float qv[SX_MAXC], acc[SX_MAXC], a[SX_MAXC], m, l, mc, lc;
    sx_start(q, sinks, t, h, heads, d, cpl, lane, true, qv, acc, m, l);
    int pending = 0;
    float mj = threadIdx.x < s ? mrow[threadIdx.x] : -ORBIT_INF;
    for (int j0 = 0; j0 < s; j0 += SR_THREADS) {
        int j = j0 + threadIdx.x;
        bool vis = mj != -ORBIT_INF;
        mj = j + SR_THREADS < s ? mrow[j + SR_THREADS] : -ORBIT_INF;
        int total = sx_scan<SR_THREADS>(vis, j, pending, seen, warpSeen);
        bool last = j0 + SR_THREADS >= s;   // every seen key is found: the short chunk goes too
        int chunks = last ? (total + SX_CHUNK - 1) / SX_CHUNK : total / SX_CHUNK;
        for (int c0 = 0; c0 < chunks; c0 += SR_WARPS) {   // a round: warp w takes chunk c0 + w
            int c = c0 + warp;
            if (c < chunks) {
                int n = min(SX_CHUNK, total - c * SX_CHUNK);
                sx_stage(ks, kv, seen + c * SX_CHUNK, n, d, vec, lane, 32);
                cp_async_wait<0>();
                __syncwarp();
                sx_local(ks, n, d, cpl, lane, scale, qv, a, mc, lc);
                float* p = part + warp * (d + 2);
#pragma unroll
                for (int i = 0; i < SX_MAXC; i++) {
                    int ch = i * 32 + lane;
                    if (i < cpl && ch < d) p[ch] = a[i];
                }
                if (lane == 0) {
                    p[d] = mc;
                    p[d + 1] = lc;
                }
            }
            __syncthreads();
            if (warp == 0) {
                for (int w = 0; w < SR_WARPS && c0 + w < chunks; w++) {
                    const float* p = part + w * (d + 2);
#pragma unroll
                    for (int i = 0; i < SX_MAXC; i++) {
                        int ch = i * 32 + lane;
                        a[i] = i < cpl && ch < d ? p[ch] : 0.0f;
                    }
                    sx_combine(p[d], p[d + 1], a, cpl, acc, m, l);
                }
            }
            __syncthreads();
        }
        int taken = min(chunks * SX_CHUNK, total);
        pending = total - taken;
        sx_carry(seen, taken, pending);
        if (last) break;
    }
    if (warp == 0) sx_finish(out, t, h, heads, d, cpl, lane, acc, l);
}

#define IX_TILE 32
#define IX_THREADS 64

// Rows [0, rows) of D values each, `stride` apart from src, into dst (row stride D + 1, against bank conflicts), by
// `threads` threads of the block; rows from `valid` on as zeros.
__device__ __forceinline__ void ix_stage(float* dst, const float* src, i64 stride, int rows, int valid, int dd,
                                         int threads) {
    for (int e = threadIdx.x; e < rows * dd; e += threads) {
        int r = e / dd, c = e - r * dd;
        dst[r * (dd + 1) + c] = r < valid ? src[r * stride + c] : 0.0f;
    }
}

// A head's term of a score, added in the heads' order (the same in both forms): relu(dot) * qScale * w.
__device__ __forceinline__ float ix_add_head(float acc, float dot, float qScale, float w) {
    return __fadd_rn(acc, __fmul_rn(__fmul_rn(fmaxf(dot, 0.0f), qScale), w));
}

// q [T, H, D], keys [M, D], w [T, H] (the heads' weights), closed [T] i32, out [T, M], all contiguous. Grid
// (ceil(M / IX_TILE), ceil(T / IX_TILE)), IX_THREADS threads, dynamic shared memory 2 * IX_TILE * (D + 1) floats.
extern "C" __global__ void __launch_bounds__(IX_THREADS) mqa_indexer_exact(const float* q, const float* keys,
        const float* w, const int* closed, float* out, int tq, int mm, int heads, int dd, float qScale) {
    ORBIT_TRACE_KERNEL();
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
    ix_stage(Ks, keys + (i64) m0 * dd, dd, IX_TILE, mm - m0, dd, IX_THREADS);
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    }
    for (int h = 0; h < heads; h++) {
        __syncthreads();
        ix_stage(Qs, q + ((i64) t0 * heads + h) * dd, (i64) heads * dd, IX_TILE, tq - t0, dd, IX_THREADS);
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
                acc[i][j] = ix_add_head(acc[i][j], dot[i][j], qScale, wt);
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

#define IR_ENTRIES 32
#define IR_THREADS 256

// The same scores for few queries (a decode step's): a block is one query and IR_ENTRIES entries; its threads take the
// (head, entry) products, each the same chain of fused multiply-adds as above, into shared memory, then a thread an
// entry sums the heads in order as above: the same bits as mqa_indexer_exact. Grid (ceil(M / IR_ENTRIES), T),
// IR_THREADS threads, dynamic shared memory (H + IR_ENTRIES) * (D + 1) + H * IR_ENTRIES floats.
extern "C" __global__ void __launch_bounds__(IR_THREADS) mqa_indexer_exact_rows(const float* q, const float* keys,
        const float* w, const int* closed, float* out, int tq, int mm, int heads, int dd, float qScale) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ float sm[];
    const int ld = dd + 1;
    float* Qs = sm;                          // [H][D + 1]: the query's heads
    float* Ks = Qs + heads * ld;             // [IR_ENTRIES][D + 1]
    float* Ds = Ks + IR_ENTRIES * ld;        // [H][IR_ENTRIES]: the products
    const int t = blockIdx.y, m0 = blockIdx.x * IR_ENTRIES;
    const int n = closed[t];
    if (m0 >= n) {
        if (threadIdx.x < IR_ENTRIES && m0 + threadIdx.x < mm) out[(i64) t * mm + m0 + threadIdx.x] = -ORBIT_INF;
        return;
    }
    ix_stage(Qs, q + (i64) t * heads * dd, dd, heads, heads, dd, IR_THREADS);
    ix_stage(Ks, keys + (i64) m0 * dd, dd, IR_ENTRIES, mm - m0, dd, IR_THREADS);
    __syncthreads();
    const int ent = threadIdx.x % IR_ENTRIES;
    for (int h0 = threadIdx.x / IR_ENTRIES; h0 < heads; h0 += 4 * (IR_THREADS / IR_ENTRIES)) {
        float dot[4];
#pragma unroll
        for (int u = 0; u < 4; u++) dot[u] = 0.0f;
        for (int c = 0; c < dd; c++) {
            float b = Ks[ent * ld + c];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                int h = h0 + u * (IR_THREADS / IR_ENTRIES);
                if (h < heads) dot[u] = __fmaf_rn(Qs[h * ld + c], b, dot[u]);
            }
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int h = h0 + u * (IR_THREADS / IR_ENTRIES);
            if (h < heads) Ds[h * IR_ENTRIES + ent] = dot[u];
        }
    }
    __syncthreads();
    if (threadIdx.x < IR_ENTRIES && m0 + threadIdx.x < mm) {
        int m = m0 + threadIdx.x;
        float acc = 0.0f;
        const float* wt = w + (i64) t * heads;
        for (int h = 0; h < heads; h++) {
            acc = ix_add_head(acc, Ds[h * IR_ENTRIES + threadIdx.x], qScale, wt[h]);
        }
        out[(i64) t * mm + m] = m < n ? acc : -ORBIT_INF;
    }
}
