// Products of f32 x with a few f32 rows of a long K (a LoRA's A): moe_pairs.cu's grouped A products and
// narrow_matmul_f32 / narrow_matmul3_f32; bgemv.cu's bgemv_lra, whose first blocks make its terms' A products.

#define MP_WARPS 8 // warps of a block of the pair and narrow kernels

// Blocks of one launch that wait for other blocks of it (bgemv_lra's products after the blocks that make their terms'
// A products): spins until *count, read with device-scope acquire, reaches need. The producers write, fence
// (__threadfence), meet at a barrier and then add to the count; blocks start in grid order, so producers with the lower
// block indices are never held back by the blocks that wait for them.
__device__ __forceinline__ void wait_count(const int* count, int need) {
    for (;;) {
        int v;
        asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(count) : "memory");
        if (v >= need) return;
        __nanosleep(64);
    }
}

// f32 rows of a long K, few of them (a LoRA's A: N is its rank): a row a warp, and the lane's share of a pass of K
// (MA_V 16-byte pieces, lane l the pieces l, l + 32, ...: 2048 values a pass) loaded into registers before anything
// else, so every weight byte of the block is in flight at once (r1 loads a piece, multiplies it and loads the next:
// a round trip to DRAM a piece). The x rows are taken mt at a time, the pass's slices staged in shared memory
// (conflict-free 16-byte reads); a (row of x, row of W) sums its lane's pieces in order, then across the warp, pass
// after pass into the output. Needs K % 4 == 0 and x and the rows of W 16-byte aligned.
//   ma_rows: row block rb's MP_WARPS rows of W against count x rows, xrow(i) the i-th; out(i, n, later, d) takes the
//   sum d of x row i and W row n over one pass (later: not the first pass); xout(i, q, v) sees every 16-byte piece q of
//   x row i as it is staged (ma_none: nothing).
#define MA_V 16
#define MA_PIECES (32 * MA_V) // 16-byte pieces of a row a pass
#define MA_XB 4                // x pieces a thread loads before it stores any
#define MA_ROWS 8              // x rows a chunk at most (mt: ROUTED_PAIRS and NARROW_ROWS_PER_BLOCK in the host code)

struct MaNone {
    __device__ __forceinline__ void operator()(int, int, float4) const {}
};

// A warp's sum of a row of W and a staged row of x: the lane's V pieces of W (pieces lane, lane + 32, ... of the
// pass, in wv) times the same pieces of x (xj, staged in shared memory), pieces past kl left out, in order, then across
// the warp (every lane gets it).
template <int V>
__device__ __forceinline__ float narrow_dot(const float4 (&wv)[V], const float4* xj, int kl, int lane) {
    float d = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) {
        int q = lane + 32 * i;
        if (q < kl) { // slots past kl were not staged
            float4 a = xj[q];
            d = fmaf(wv[i].x, a.x, d);
            d = fmaf(wv[i].y, a.y, d);
            d = fmaf(wv[i].z, a.z, d);
            d = fmaf(wv[i].w, a.w, d);
        }
    }
    return warp_sum(d);
}

template <typename XRow, typename Out, typename XOut>
__device__ __forceinline__ void ma_rows(const float* w, int N, int K, int count, int mt, XRow xrow, Out out, float4* xa,
                                        int rb, XOut xout) {
    int lane = threadIdx.x & 31;
    int n = rb * MP_WARPS + (threadIdx.x >> 5);
    bool row = n < N; // warp-uniform
    int K4 = K >> 2;
    int stride = K4 < MA_PIECES ? K4 : MA_PIECES;
    const float4* wr = (const float4*) (w + (i64) (row ? n : 0) * K);
    for (int k0 = 0; k0 < K4; k0 += MA_PIECES) {
        int kl = K4 - k0 < MA_PIECES ? K4 - k0 : MA_PIECES; // pieces in this pass
        float4 wv[MA_V];
#pragma unroll
        for (int i = 0; i < MA_V; i++) {
            int q = lane + 32 * i;
            wv[i] = row && q < kl ? __ldg(wr + k0 + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
        for (int c = 0; c < count; c += mt) {
            int m = min(mt, count - c);
            __shared__ const float4* rows[MA_ROWS]; // the chunk's x rows from this pass's first piece
            if ((int) threadIdx.x < m) rows[threadIdx.x] = (const float4*) xrow(c + threadIdx.x) + k0;
            __syncthreads();
            // this thread's pieces: (j, q) steps by blockDim.x through the chunk's [m, kl] pieces, no division a piece
            int j = 0;
            int q = threadIdx.x;
            while (q >= kl) {
                q -= kl;
                j++;
            }
            while (j < m) { // MA_XB loads in flight a thread
                float4 v[MA_XB];
                int at[MA_XB];
                int pj[MA_XB];
                int pq[MA_XB];
#pragma unroll
                for (int u = 0; u < MA_XB; u++) {
                    at[u] = -1;
                    if (j < m) {
                        v[u] = __ldg(rows[j] + q);
                        at[u] = j * stride + q;
                        pj[u] = j;
                        pq[u] = q;
                        q += blockDim.x;
                        while (q >= kl) {
                            q -= kl;
                            j++;
                        }
                    }
                }
#pragma unroll
                for (int u = 0; u < MA_XB; u++) {
                    if (at[u] >= 0) {
                        xa[at[u]] = v[u];
                        xout(c + pj[u], k0 + pq[u], v[u]);
                    }
                }
            }
            __syncthreads();
            if (row) {
                for (int j = 0; j < m; j++) {
                    float d = narrow_dot(wv, xa + j * stride, kl, lane);
                    if (lane == 0) out(c + j, n, k0 > 0, d);
                }
            }
            __syncthreads();
        }
    }
}

// y [M, N] = x [M, K] . w^T for f32 x and a few f32 rows of w (a LoRA's A over a decode batch): block (row chunk of w,
// chunk-th mt rows of x), the same sums as moe_routed_dense_a (a row of y does not depend on the others: batch-invariant).
template <typename XOut = MaNone>
__device__ __forceinline__ void narrow_rows(const float* x, const float* w, float* y, int M, int N, int K, int mt, int rb,
                                            int chunk, float4* xa, XOut xout = XOut()) {
    int m0 = chunk * mt;
    ma_rows(w, N, K, min(mt, M - m0), mt,
            [&](int i) { return x + (i64) (m0 + i) * K; },
            [&](int i, int n, bool later, float d) {
                float* o = y + (i64) (m0 + i) * N + n;
                *o = (later ? *o : 0.0f) + d;
            },
            xa, rb, [&](int i, int q, float4 v) { xout(m0 + i, q, v); });
}

// The split-K form of narrow_rows for a long K (DeepSeek V4's hyper-connection mix: y [M, 24] = x [M, 4 * 4096] . w^T),
// where the row blocks alone are too few blocks to draw on the device's bandwidth (3 at 24 rows of w: 18 us at one row
// on an H100). Block (rb, split s, chunk of mt x rows), blockIdx.x = rb * splits + s: warp w takes row n = rb * MP_WARPS
// + w of w over the split's SK_PIECES 16-byte pieces (lane l the pieces l, l + 32, ..., loaded before anything else),
// the chunk's x slices staged in shared memory; the sum of (x row i, w row n) over the split (its lane's pieces in
// order, then across the warp) goes to part [splits, M, N]. The block of (chunk, rb) that writes its partials last (a
// ticket counted per (chunk, rb), re-armed to 0 by that block) adds each output's splits: lane l the splits l, l + 32,
// ... in order, then across the warp. A value's sums are set by K (the split count) alone, never by M or by which
// block finishes last: batch-invariant and the same bits every run. Needs mt <= MA_ROWS, blockDim.x = 32 * MP_WARPS,
// K % 4 == 0, x and the rows of w 16-byte aligned; xa holds [mt, SK_PIECES] pieces.
#define SK_V 4                                          // 16-byte pieces of a w row a lane holds
#define SK_PIECES (32 * SK_V)                           // pieces a split takes (512 values: NarrowSplitK.SPLIT_VALUES)
#define SK_XB (MA_ROWS * SK_PIECES / (32 * MP_WARPS))   // x pieces a thread stages

__device__ __forceinline__ void narrow_split(const float* x, const float* w, float* y, int M, int N, int K, int mt, int splits,
                                             float* part, int* tickets, float4* xa) {
    __shared__ int last;
    int rb = blockIdx.x / splits;
    int s = blockIdx.x - rb * splits;
    int m0 = blockIdx.y * mt;
    int m = min(mt, M - m0);
    int p0 = s * SK_PIECES;
    int kl = min(SK_PIECES, (K >> 2) - p0); // pieces of this split
    int lane = threadIdx.x & 31;
    int n = rb * MP_WARPS + (threadIdx.x >> 5);
    bool row = n < N; // warp-uniform
    const float4* wr = (const float4*) (w + (i64) (row ? n : 0) * K) + p0;
    float4 wv[SK_V];
#pragma unroll
    for (int i = 0; i < SK_V; i++) {
        int q = lane + 32 * i;
        wv[i] = row && q < kl ? __ldg(wr + q) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    float4 v[SK_XB]; // every x load of the thread in flight before any is stored
#pragma unroll
    for (int u = 0; u < SK_XB; u++) {
        int i = threadIdx.x + u * 32 * MP_WARPS;
        int j = i / SK_PIECES;
        int q = i - j * SK_PIECES;
        if (j < m && q < kl) v[u] = __ldg((const float4*) (x + (i64) (m0 + j) * K) + p0 + q);
    }
#pragma unroll
    for (int u = 0; u < SK_XB; u++) {
        int i = threadIdx.x + u * 32 * MP_WARPS;
        int j = i / SK_PIECES;
        if (j < m && i - j * SK_PIECES < kl) xa[i] = v[u];
    }
    __syncthreads();
    if (row) {
        for (int j = 0; j < m; j++) {
            float d = narrow_dot(wv, xa + j * SK_PIECES, kl, lane);
            if (lane == 0) part[((i64) s * M + m0 + j) * N + n] = d;
        }
    }
    int t = blockIdx.y * (gridDim.x / splits) + rb;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(tickets + t, 1) == splits - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (row) { // reads past L1 (__ldcg): the other splits' blocks wrote them
        float d[MA_ROWS];
#pragma unroll
        for (int j = 0; j < MA_ROWS; j++) d[j] = 0.0f;
        for (int sl = lane; sl < splits; sl += 32) {
#pragma unroll
            for (int j = 0; j < MA_ROWS; j++) {
                if (j < m) d[j] += __ldcg(part + ((i64) sl * M + m0 + j) * N + n);
            }
        }
#pragma unroll
        for (int j = 0; j < MA_ROWS; j++) {
            if (j < m) {
                float r = warp_sum(d[j]);
                if (lane == 0) y[(i64) (m0 + j) * N + n] = r;
            }
        }
    }
    if (threadIdx.x == 0) tickets[t] = 0;
}

// Block (rb, chunk) of up to three such products of the same x (an attention block's q, k and v LoRA A): y_i = x . w_i^T
// for the i with n_i > 0, the row blocks of w_0, then w_1's, then w_2's along rb; each the sums of narrow_rows. With xb
// (n0 > 0), the first row block's blocks also write x rounded to bf16 (round to nearest even) into xb [M, K].
__device__ __forceinline__ void narrow3_block(const float* x, int M, int K, int mt, const float* w0, float* y0, int n0,
                                              const float* w1, float* y1, int n1, const float* w2, float* y2, int n2, u16* xb,
                                              float4* xa, int rb, int chunk) {
    int b0 = (n0 + MP_WARPS - 1) / MP_WARPS;
    int b1 = (n1 + MP_WARPS - 1) / MP_WARPS;
    if (rb < b0) {
        if (xb != 0 && rb == 0) {
            narrow_rows(x, w0, y0, M, n0, K, mt, rb, chunk, xa, [&](int m, int q, float4 v) {
                u32 lo = (u32) f32_to_bf16_bits(v.x) | ((u32) f32_to_bf16_bits(v.y) << 16);
                u32 hi = (u32) f32_to_bf16_bits(v.z) | ((u32) f32_to_bf16_bits(v.w) << 16);
                *(uint2*) (xb + (i64) m * K + 4 * q) = make_uint2(lo, hi);
            });
        } else {
            narrow_rows(x, w0, y0, M, n0, K, mt, rb, chunk, xa);
        }
    } else if (rb < b0 + b1) {
        narrow_rows(x, w1, y1, M, n1, K, mt, rb - b0, chunk, xa);
    } else {
        narrow_rows(x, w2, y2, M, n2, K, mt, rb - b0 - b1, chunk, xa);
    }
}
