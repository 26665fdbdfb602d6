// Multi-query attention with wide heads (DeepSeek-V3's and Kimi-K2's latent attention: one shared key/value head of
// 576/512 channels, 64-128 query heads) as cuBLAS products around these two row kernels (CudaMqaAttention): the scores
// of a chunk of queries [R = queries * H, S] (row r is query r / H, head r % H), their causal softmax, and the softmax's
// backward. One block a row; ld the row stride of the scores. (common.cuh is prepended by the compiler.)


// In place: row r of s holds the scaled scores of query position firstPos + r / rowsPerQuery against keys 0..cols-1;
// keys up to that position become the softmax's probabilities (f32, max subtracted), the others 0.
extern "C" __global__ void mqa_causal_softmax(float* s, int cols, int ld, int rowsPerQuery, int firstPos) {
    ORBIT_TRACE_KERNEL();
    __shared__ float red[32];
    float* row = s + (i64) blockIdx.x * ld;
    int valid = min(cols, firstPos + (int) blockIdx.x / rowsPerQuery + 1);
    float m = -ORBIT_INF;
    for (int j = threadIdx.x; j < valid; j += blockDim.x) m = fmaxf(m, row[j]);
    m = block_max(m, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < valid; j += blockDim.x) {
        float e = expf(row[j] - m);
        row[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) row[j] = j < valid ? row[j] * inv : 0.0f;
}

// In place in dp: the scores' gradient ds = p * (dp - sum_j p * dp) * scale of a row of probabilities p and their
// gradient dp (rows of cols values, ld apart; p is 0 beyond a row's keys, so ds is too).
extern "C" __global__ void mqa_softmax_backward(const float* p, float* dp, int cols, int ld, float scale) {
    ORBIT_TRACE_KERNEL();
    __shared__ float red[32];
    const float* pr = p + (i64) blockIdx.x * ld;
    float* dr = dp + (i64) blockIdx.x * ld;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dot += pr[j] * dr[j];
    dot = block_sum(dot, red);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dr[j] = pr[j] * (dr[j] - dot) * scale;
}

// In place: row r of s holds the scaled scores of query r / heads (head r % heads) against keys 0..cols-1; they become
// the probabilities of softmax([s_j + mask_j]_j ++ [sink_h]) without the sink's share (DeepSeek V4's attention: an
// additive mask row per query, maskLd apart, -inf hiding a key, and a logit per head that takes part of the weight).
// A hidden key's probability is 0.
extern "C" __global__ void mqa_masked_sink_softmax(float* s, const float* mask, const float* sinks, int cols, int ld,
                                                   int heads, int maskLd) {
    ORBIT_TRACE_KERNEL();
    __shared__ float red[32];
    float* row = s + (i64) blockIdx.x * ld;
    const float* mrow = mask + (i64) (blockIdx.x / heads) * maskLd;
    float sink = sinks[blockIdx.x % heads];
    float m = sink;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float b = mrow[j];
        float l = b == -ORBIT_INF ? -ORBIT_INF : row[j] + b;
        row[j] = l;
        m = fmaxf(m, l);
    }
    m = block_max(m, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float l = row[j];
        float e = l == -ORBIT_INF ? 0.0f : expf(l - m);
        row[j] = e;
        sum += e;
    }
    sum = block_sum(sum, red);
    float inv = 1.0f / (sum + expf(sink - m));
    for (int j = threadIdx.x; j < cols; j += blockDim.x) row[j] *= inv;
}

// DeepSeek V4's lightning-indexer scores of a chunk of queries: s holds [queries * heads, cols] products q_(t,h)·k_m;
// out row t (outLd apart) gets sum_h relu(s) * qScale * w[t, h], the heads in order, for entries m < closed[t] and
// -inf for the others. A thread an entry of a query: blockIdx.y the query, x over entries.
extern "C" __global__ void mqa_indexer_scores(const float* s, const float* w, const int* closed, float* out, int cols,
                                              int heads, float qScale, int outLd) {
    ORBIT_TRACE_KERNEL();
    int m = blockIdx.x * blockDim.x + threadIdx.x;
    int t = blockIdx.y;
    if (m >= cols) return;
    float acc = -ORBIT_INF;
    if (m < closed[t]) {
        acc = 0.0f;
        const float* col = s + (i64) t * heads * cols + m;
        const float* wt = w + (i64) t * heads;
        for (int h = 0; h < heads; h++) {
            float r = fmaxf(col[(i64) h * cols], 0.0f);
            acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(r, qScale), wt[h]));
        }
    }
    out[(i64) t * outLd + m] = acc;
}

// DeepSeek V4's decode attention, one query a sequence (CudaMqaAttention.sinkDecode): for sequence b and head h,
// softmax([scale * q_(b,h)·key_j]_j ++ [sink_h]) without the sink's share weighs the keys (V = K). The keys of b, in
// order: the rows of its window, row b of k (the new token's key), then its entries (all, or those its indexer chose).
// table row b (6 words): window address, window rows, entries address, entries, offset of its chosen indices among the
// table's words (-1: every entry), keys after the window's and the new one.
//
// Grid (sequences, head blocks * splits): blockIdx.x the sequence, blockIdx.y = split * head blocks + head block, a
// head block SINK_HEADS heads, a warp each. Split s of `splits` takes its sequence's keys [s * per, (s + 1) * per), per
// the keys over the splits rounded up to whole tiles; a split past the keys takes none. A block stages SINK_TILE keys at
// a time in shared memory (dynamic, [2][SINK_TILE][d]): the next tile's rows are copied (cp.async) while the warps work
// on this one, and the source rows of the tile after that (a chosen entry's is one more read of the table) are looked up
// meanwhile. Each warp keeps its head's online softmax: lane l holds the query's and the weighted sum's channels
// 4l + 128i .. + 3 (i < 4) in registers and reads the same channels of a key, so one warp reads a key's row whole, 16
// bytes a lane, and each quarter-warp meets every bank once: the rows lie d apart without padding. Four keys at a time:
// their dot products summed over the warp by shuffles (every lane gets the same sums), the running sums rescaled when
// the maximum grows, then the four keys added in with their weights from the same registers (128 registers a thread:
// two blocks an SM). One split: the block normalises with the sink in the sum and writes out. Several: it writes its
// unnormalised partial (m, l, acc[d]) for each of its heads (m = -inf, l = 0, acc = 0 for a split with no keys) and
// mqa_sink_decode_merge adds the splits and the sink. d a multiple of 4, at most 512.
#define SINK_TILE 16
#define SINK_HEADS 8

// Row of key j of a sequence: its window's row j, its new key kNew, or entry e = j - winRows - 1 (the e-th chosen one
// where chosenAt >= 0).
__device__ __forceinline__ const float* sink_key_row(const long long* table, const float* win, int winRows, const float* kNew,
                                                     const float* ent, int chosenAt, int d, int j) {
    if (j < winRows) return win + (i64) j * d;
    if (j == winRows) return kNew;
    int e = j - winRows - 1;
    int idx = chosenAt < 0 ? e : (int) table[chosenAt + e];
    return ent + (i64) idx * d;
}

// Copies one tile's rows (src[key], null past the split's keys: zeros) to dst [SINK_TILE][d], the block's threads over
// its 16-byte pieces; any is a valid address for the pieces that read nothing.
__device__ __forceinline__ void sink_stage(float* dst, const float* const* src, int d, const float* any) {
    int d4 = d / 4;
    u32 base = smem_addr(dst);
    for (int i = threadIdx.x; i < SINK_TILE * d4; i += blockDim.x) {
        int key = i / d4;
        const float* s = src[key];
        cp_async16_zfill(base + (u32) i * 16u, s != 0 ? s + 4 * (i - key * d4) : any, s != 0);
    }
}

extern "C" __global__ void __launch_bounds__(256, 2) mqa_sink_decode(const float* q, const long long* table, const float* k,
                                                                     const float* sinks, float* out, int heads, int d,
                                                                     float scale, int splits, float* partAcc,
                                                                     float* partMl) {
    ORBIT_TRACE_KERNEL();
    extern __shared__ __align__(16) float sink_tiles[];   // [2][SINK_TILE][d]
    __shared__ const float* rows[2][SINK_TILE];            // source rows of tiles t & 1 in flight
    int b = blockIdx.x;
    int headBlocks = (heads + SINK_HEADS - 1) / SINK_HEADS;
    int split = blockIdx.y / headBlocks;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int h = (blockIdx.y % headBlocks) * SINK_HEADS + warp;
    bool active = h < heads;
    const long long* row = table + (i64) b * 6;
    const float* win = (const float*) row[0];
    int winRows = (int) row[1];
    const float* ent = (const float*) row[2];
    int chosenAt = (int) row[4];
    int keys = winRows + 1 + (int) row[5];
    const float* kNew = k + (i64) b * d;
    int per = ((keys + splits - 1) / splits + SINK_TILE - 1) / SINK_TILE * SINK_TILE;
    int k0 = (int) min((i64) keys, (i64) split * per);
    int n = min(keys - k0, per);   // this split's keys: k0 .. k0 + n - 1
    int tiles = (n + SINK_TILE - 1) / SINK_TILE;
    int d4 = d / 4;
    if (threadIdx.x < 2 * SINK_TILE) {
        int j = threadIdx.x;
        rows[j / SINK_TILE][j % SINK_TILE] = j < n ? sink_key_row(table, win, winRows, kNew, ent, chosenAt, d, k0 + j) : 0;
    }
    float4 qv[4];
    float4 acc[4];
    const float* qr = q + ((i64) b * heads + (active ? h : 0)) * d;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int c = 4 * (lane + 32 * i);
        qv[i] = active && c < d ? make_float4(qr[c], qr[c + 1], qr[c + 2], qr[c + 3]) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    float m = -ORBIT_INF;
    float l = 0.0f;
    __syncthreads();
    if (tiles > 0) sink_stage(sink_tiles, rows[0], d, kNew);
    cp_async_commit();
    for (int t = 0; t < tiles; t++) {
        // tile t + 2's rows: looked up now, stored once this tile's work is done (slot t & 1, free then)
        const float* next = 0;
        int jn = (t + 2) * SINK_TILE + threadIdx.x;
        if (threadIdx.x < SINK_TILE && jn < n) next = sink_key_row(table, win, winRows, kNew, ent, chosenAt, d, k0 + jn);
        if (t + 1 < tiles) sink_stage(sink_tiles + ((t + 1) & 1) * SINK_TILE * d, rows[(t + 1) & 1], d, kNew);
        cp_async_commit();
        cp_async_wait<1>();   // this thread's copies of tile t have landed
        __syncthreads();      // and every thread's
        if (active) {
            const float* tile = sink_tiles + (t & 1) * SINK_TILE * d;
            int nk = min(SINK_TILE, n - t * SINK_TILE);
#pragma unroll 1
            for (int c = 0; c < nk; c += 4) {
                float4 kv[4][4];
                float s[4];
#pragma unroll
                for (int jj = 0; jj < 4; jj++) {
                    const float4* kr = (const float4*) (tile + (c + jj) * d);
                    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        kv[jj][i] = lane + 32 * i < d4 ? kr[lane + 32 * i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                        s0 = fmaf(qv[i].x, kv[jj][i].x, s0);
                        s1 = fmaf(qv[i].y, kv[jj][i].y, s1);
                        s0 = fmaf(qv[i].z, kv[jj][i].z, s0);
                        s1 = fmaf(qv[i].w, kv[jj][i].w, s1);
                    }
                    s[jj] = s0 + s1;
                }
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
                    for (int jj = 0; jj < 4; jj++) s[jj] += __shfl_xor_sync(0xffffffffu, s[jj], o);
                }
                float cm = -ORBIT_INF;
#pragma unroll
                for (int jj = 0; jj < 4; jj++) {
                    s[jj] = c + jj < nk ? s[jj] * scale : -ORBIT_INF;   // rows past the tile's keys are zeros
                    cm = fmaxf(cm, s[jj]);
                }
                if (cm > m) {   // the same in every lane
                    float corr = expf(m - cm);
                    l *= corr;
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        acc[i].x *= corr;
                        acc[i].y *= corr;
                        acc[i].z *= corr;
                        acc[i].w *= corr;
                    }
                    m = cm;
                }
                float p[4];
#pragma unroll
                for (int jj = 0; jj < 4; jj++) p[jj] = c + jj < nk ? expf(s[jj] - m) : 0.0f;
                l += (p[0] + p[1]) + (p[2] + p[3]);
#pragma unroll
                for (int jj = 0; jj < 4; jj++) {
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        acc[i].x = fmaf(p[jj], kv[jj][i].x, acc[i].x);
                        acc[i].y = fmaf(p[jj], kv[jj][i].y, acc[i].y);
                        acc[i].z = fmaf(p[jj], kv[jj][i].z, acc[i].z);
                        acc[i].w = fmaf(p[jj], kv[jj][i].w, acc[i].w);
                    }
                }
            }
        }
        if (threadIdx.x < SINK_TILE) rows[t & 1][threadIdx.x] = next;
        __syncthreads();      // tile t's buffer and rows slot free for tile t + 2
    }
    if (!active) return;
    if (splits == 1) {
        float sink = sinks[h];
        float mf = fmaxf(m, sink);
        float cs = expf(m - mf);
        float inv = cs / (l * cs + expf(sink - mf));
        float4* o = (float4*) (out + ((i64) b * heads + h) * d);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (lane + 32 * i < d4) o[lane + 32 * i] = make_float4(acc[i].x * inv, acc[i].y * inv, acc[i].z * inv, acc[i].w * inv);
        }
        return;
    }
    i64 part = ((i64) b * heads + h) * splits + split;
    float4* pa = (float4*) (partAcc + part * d);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (lane + 32 * i < d4) pa[lane + 32 * i] = acc[i];
    }
    if (lane == 0) {
        partMl[2 * part] = m;
        partMl[2 * part + 1] = l;
    }
}

// mqa_sink_decode's splits merged, a block a (sequence, head) row r = b * heads + h, thread c its channels 4c .. 4c + 3:
// partAcc [rows, splits, d] and partMl [rows, splits, {m, l}] the splits' partials; with M the largest of their m and
// the sink, out = sum_s e^(m_s - M) acc_s / (sum_s e^(m_s - M) l_s + e^(sink_h - M)), the splits added in order. A split
// with no keys (m = -inf, l = 0, acc = 0) weighs nothing.
extern "C" __global__ void mqa_sink_decode_merge(const float* partAcc, const float* partMl, const float* sinks, float* out,
                                                 int heads, int d, int splits) {
    ORBIT_TRACE_KERNEL();
    i64 r = blockIdx.x;
    int c = threadIdx.x;
    const float* ml = partMl + r * splits * 2;
    float sink = sinks[r % heads];
    float mx = sink;
    for (int s = 0; s < splits; s++) mx = fmaxf(mx, ml[2 * s]);
    float sum = 0.0f;
    for (int s = 0; s < splits; s++) sum += ml[2 * s + 1] * expf(ml[2 * s] - mx);
    float inv = 1.0f / (sum + expf(sink - mx));
    int d4 = d / 4;
    if (c >= d4) return;
    const float4* a = (const float4*) (partAcc + r * splits * d) + c;
    float4 o = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
    for (int s = 0; s < splits; s++) {
        float w = expf(ml[2 * s] - mx);
        float4 v = a[(i64) s * d4];
        o.x = fmaf(w, v.x, o.x);
        o.y = fmaf(w, v.y, o.y);
        o.z = fmaf(w, v.z, o.z);
        o.w = fmaf(w, v.w, o.w);
    }
    ((float4*) (out + r * d))[c] = make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
}

// DeepSeek V4's hyper-connection mixes from their projections (CudaMqaAttention.hyperConnectionMix), a thread a token
// row: m and y rows of (2 + hc) * hc values (pre, post, comb row-major [j][k]); pre = sigmoid(m * s0 + base) + eps,
// post = 2 * sigmoid(m * s1 + base), comb = each row's softmax of m * s2 + base, plus eps, then 2 * iters - 1
// Sinkhorn normalisations, columns first and alternating (each divides by its sum plus eps). hc at most 8.
extern "C" __global__ void hc_mix(const float* m, const float* base, float* y, int rows, int hc, int iters, float s0,
                                  float s1, float s2, float eps) {
    ORBIT_TRACE_KERNEL();
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    int mm = (2 + hc) * hc;
    const float* mr = m + (i64) r * mm;
    float* yr = y + (i64) r * mm;
    for (int i = 0; i < hc; i++) {
        yr[i] = 1.0f / (1.0f + expf(-(mr[i] * s0 + base[i]))) + eps;
        yr[hc + i] = 2.0f / (1.0f + expf(-(mr[hc + i] * s1 + base[hc + i])));
    }
    float c[64];
    const float* mc = mr + 2 * hc;
    const float* bc = base + 2 * hc;
    for (int j = 0; j < hc; j++) {
        float mx = -ORBIT_INF;
        for (int k = 0; k < hc; k++) mx = fmaxf(mx, mc[j * hc + k] * s2 + bc[j * hc + k]);
        float sum = 0.0f;
        for (int k = 0; k < hc; k++) {
            float e = expf(mc[j * hc + k] * s2 + bc[j * hc + k] - mx);
            c[j * hc + k] = e;
            sum += e;
        }
        for (int k = 0; k < hc; k++) c[j * hc + k] = c[j * hc + k] / sum + eps;
    }
    for (int s = 1; s < 2 * iters; s++) {
        bool columns = (s & 1) == 1;
        for (int a = 0; a < hc; a++) {
            float sum = 0.0f;
            for (int b = 0; b < hc; b++) sum += c[columns ? b * hc + a : a * hc + b];
            float den = sum + eps;
            for (int b = 0; b < hc; b++) c[columns ? b * hc + a : a * hc + b] /= den;
        }
    }
    for (int i = 0; i < hc * hc; i++) yr[2 * hc + i] = c[i];
}

// hc_mix for hc = 4 (DeepSeek V4's), 16 lanes a token row (two rows a warp): lane (j, k) = (l / 4, l % 4) of its group
// holds comb[j][k], lanes 0..3 also pre[l] and lanes 4..7 post[l - 4]. A row's or a column's sum gathers its four
// values by shuffles and adds them in the host's order (0, 1, 2, 3), so every value is hc_mix's bit for bit, with the
// 2 * iters - 1 normalisations of a row spread over its lanes instead of one thread's loops over local memory.
extern "C" __global__ void hc_mix4(const float* m, const float* base, float* y, int rows, int iters, float s0, float s1, float s2,
                                   float eps) {
    ORBIT_TRACE_KERNEL();
    int lane = threadIdx.x & 31;
    int l = lane & 15;
    int gbase = lane & 16;
    int r = (int) (((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 4);
    bool live = r < rows;
    int rr = live ? r : rows - 1;
    const float* mr = m + (i64) rr * 24;
    float* yr = y + (i64) rr * 24;
    if (live && l < 4) yr[l] = 1.0f / (1.0f + expf(-(mr[l] * s0 + base[l]))) + eps;
    if (live && l >= 4 && l < 8) yr[l] = 2.0f / (1.0f + expf(-(mr[l] * s1 + base[l])));
    int j = l >> 2;
    int k = l & 3;
    float v = mr[8 + l] * s2 + base[8 + l];
    float a0 = __shfl_sync(0xffffffffu, v, gbase + 4 * j);
    float a1 = __shfl_sync(0xffffffffu, v, gbase + 4 * j + 1);
    float a2 = __shfl_sync(0xffffffffu, v, gbase + 4 * j + 2);
    float a3 = __shfl_sync(0xffffffffu, v, gbase + 4 * j + 3);
    float mx = fmaxf(fmaxf(fmaxf(fmaxf(-ORBIT_INF, a0), a1), a2), a3);
    float e = expf(v - mx);
    float sum = __shfl_sync(0xffffffffu, e, gbase + 4 * j);
    sum += __shfl_sync(0xffffffffu, e, gbase + 4 * j + 1);
    sum += __shfl_sync(0xffffffffu, e, gbase + 4 * j + 2);
    sum += __shfl_sync(0xffffffffu, e, gbase + 4 * j + 3);
    float c = e / sum + eps;
    for (int st = 1; st < 2 * iters; st++) {
        bool columns = (st & 1) == 1;   // a column: lanes b * 4 + k; a row: j * 4 + b
        int at = columns ? gbase + k : gbase + 4 * j;
        int step = columns ? 4 : 1;
        float t = __shfl_sync(0xffffffffu, c, at);
        t += __shfl_sync(0xffffffffu, c, at + step);
        t += __shfl_sync(0xffffffffu, c, at + 2 * step);
        t += __shfl_sync(0xffffffffu, c, at + 3 * step);
        c /= t + eps;
    }
    if (live) yr[8 + l] = c;
}

// DeepSeek V4's hyper-connection collapse (CudaMqaAttention.hyperConnectionCollapse), a thread an element of y [rows, H]:
// y[r, c] = sum over j ascending of w[r, j] * s[r, j, c], the pre mixes the first hc of w's width columns a row, the
// streams s [rows, hc, H]; each product rounded, then added in order from 0 (no contraction), as the host's loops.
extern "C" __global__ void hc_collapse(const float* w, const float* s, float* y, int rows, int hc, int H, int width) {
    ORBIT_TRACE_KERNEL();
    i64 i = (i64) blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64) rows * H) return;
    i64 r = i / H;
    int c = (int) (i - r * H);
    const float* wr = w + r * width;
    const float* sr = s + r * hc * H + c;
    float acc = 0.0f;
    for (int j = 0; j < hc; j++) acc = __fadd_rn(acc, __fmul_rn(wr[j], sr[(i64) j * H]));
    y[i] = acc;
}

// The expansion into new streams out [rows, hc, H], a thread an element: out[r, k, c] = post[r, k] * f[r, c] then plus,
// j ascending, comb[r, j, k] * s[r, j, c]; post is w's columns hc + k, comb [j][k] its columns 2 hc + j hc + k. Each
// product rounded, then added in order (no contraction), as the host's loops.
extern "C" __global__ void hc_expand(const float* w, const float* f, const float* s, float* out, int rows, int hc, int H,
                                     int width) {
    ORBIT_TRACE_KERNEL();
    i64 i = (i64) blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64) rows * hc * H) return;
    i64 rk = i / H;
    int c = (int) (i - rk * H);
    i64 r = rk / hc;
    int k = (int) (rk - r * hc);
    const float* wr = w + r * width;
    const float* sr = s + r * hc * H + c;
    float acc = __fmul_rn(wr[hc + k], f[r * H + c]);
    for (int j = 0; j < hc; j++) acc = __fadd_rn(acc, __fmul_rn(wr[2 * hc + j * hc + k], sr[(i64) j * H]));
    out[i] = acc;
}
