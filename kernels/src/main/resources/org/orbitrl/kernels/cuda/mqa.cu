// Multi-query attention with wide heads (DeepSeek-V3's and Kimi-K2's latent attention: one shared key/value head of
// 576/512 channels, 64-128 query heads) as cuBLAS products around these two row kernels (CudaMqaAttention): the scores
// of a chunk of queries [R = queries * H, S] (row r is query r / H, head r % H), their causal softmax, and the softmax's
// backward. One block a row; ld the row stride of the scores. (common.cuh is prepended by the compiler.)


// In place: row r of s holds the scaled scores of query position firstPos + r / rowsPerQuery against keys 0..cols-1;
// keys up to that position become the softmax's probabilities (f32, max subtracted), the others 0.
extern "C" __global__ void mqa_causal_softmax(float* s, int cols, int ld, int rowsPerQuery, int firstPos) {
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

// DeepSeek V4's decode attention, one query a sequence (CudaMqaAttention.sinkDecode): for sequence b (blockIdx.x) and
// head h (blockIdx.y * 8 + the warp), softmax([scale * q_(b,h)·key_j]_j ++ [sink_h]) without the sink's share weighs the
// keys (V = K). The keys of b, in order: the rows of its window, row b of k (the new token's key), then its entries (all,
// or those its indexer chose). table row b (6 words): window address, window rows, entries address, entries, offset of
// its chosen indices among the table's words (-1: every entry), keys after the window's and the new one. A block stages
// SINK_TILE keys at a time in shared memory (rows SINK_ROW floats apart: 16 banks between a key's row and the next, so
// the four lanes of each of two keys that a quarter-warp's 16-byte reads serve meet in no bank); its warps keep an
// online softmax each. A key's score: four lanes, each over every fourth 16-byte piece of the key in four partial sums
// (no dependent chain of d multiply-adds). The weighted sums: lane l holds dims 4l + 128i .. + 3 (16-byte reads of a
// key's row). d a multiple of 4, at most 512.
#define SINK_TILE 8
#define SINK_ROW 528
extern "C" __global__ void __launch_bounds__(256) mqa_sink_decode(const float* q, const long long* table, const float* k,
                                                                  const float* sinks, float* out, int heads, int d,
                                                                  float scale) {
    __shared__ __align__(16) float qs[8][512];
    __shared__ __align__(16) float ks[SINK_TILE][SINK_ROW];
    int b = blockIdx.x;
    int warp = threadIdx.x >> 5;
    int lane = threadIdx.x & 31;
    int h0 = blockIdx.y * 8;
    int h = h0 + warp;
    bool active = h < heads;
    const long long* row = table + (i64) b * 6;
    const float* win = (const float*) row[0];
    int winRows = (int) row[1];
    const float* ent = (const float*) row[2];
    int chosenAt = (int) row[4];
    int picked = (int) row[5];
    int keys = winRows + 1 + picked;
    for (int i = threadIdx.x; i < 8 * d; i += blockDim.x) {
        int hh = h0 + i / d;
        qs[i / d][i % d] = hh < heads ? q[((i64) b * heads + hh) * d + i % d] : 0.0f;
    }
    int d4 = d / 4;
    float4 acc[4];
#pragma unroll
    for (int i = 0; i < 4; i++) acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float m = -ORBIT_INF;
    float l = 0.0f;
    int kk = lane >> 2;
    int r = lane & 3;
    const float4* q4 = (const float4*) qs[warp];
    for (int t0 = 0; t0 < keys; t0 += SINK_TILE) {
        int nk = min(SINK_TILE, keys - t0);
        __syncthreads();
        for (int i = threadIdx.x; i < SINK_TILE * d4; i += blockDim.x) {
            int key = i / d4;
            int c4 = i % d4;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (key < nk) {
                int j = t0 + key;
                const float* src;
                if (j < winRows) {
                    src = win + (i64) j * d;
                } else if (j == winRows) {
                    src = k + (i64) b * d;
                } else {
                    int e = j - winRows - 1;
                    int idx = chosenAt < 0 ? e : (int) table[chosenAt + e];
                    src = ent + (i64) idx * d;
                }
                v = ((const float4*) src)[c4];
            }
            *(float4*) &ks[key][c4 * 4] = v;
        }
        __syncthreads();
        if (!active) continue;
        const float4* k4 = (const float4*) ks[kk];
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
        for (int i = r; i < d4; i += 4) {
            float4 a = q4[i];
            float4 c = k4[i];
            s0 = fmaf(a.x, c.x, s0);
            s1 = fmaf(a.y, c.y, s1);
            s2 = fmaf(a.z, c.z, s2);
            s3 = fmaf(a.w, c.w, s3);
        }
        float s = (s0 + s1) + (s2 + s3);
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        s = kk < nk ? s * scale : -ORBIT_INF;
        float tm = s;
        for (int o = 4; o < 32; o <<= 1) tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, o));
        float mn = fmaxf(m, tm);
        float corr = expf(m - mn);
        float p = kk < nk ? expf(s - mn) : 0.0f;
        float ps = r == 0 ? p : 0.0f;   // a key's four lanes hold its p: count it once
        for (int o = 1; o < 32; o <<= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
        l = l * corr + ps;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            acc[i].x *= corr;
            acc[i].y *= corr;
            acc[i].z *= corr;
            acc[i].w *= corr;
        }
        for (int j = 0; j < nk; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j * 4);
            const float4* kr = (const float4*) ks[j];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                if (lane + 32 * i < d4) {
                    float4 v = kr[lane + 32 * i];
                    acc[i].x = fmaf(pj, v.x, acc[i].x);
                    acc[i].y = fmaf(pj, v.y, acc[i].y);
                    acc[i].z = fmaf(pj, v.z, acc[i].z);
                    acc[i].w = fmaf(pj, v.w, acc[i].w);
                }
            }
        }
        m = mn;
    }
    if (!active) return;
    float sink = sinks[h];
    float mf = fmaxf(m, sink);
    float c = expf(m - mf);
    float inv = c / (l * c + expf(sink - mf));
    float4* o = (float4*) (out + ((i64) b * heads + h) * d);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (lane + 32 * i < d4) o[lane + 32 * i] = make_float4(acc[i].x * inv, acc[i].y * inv, acc[i].z * inv, acc[i].w * inv);
    }
}

// DeepSeek V4's hyper-connection mixes from their projections (CudaMqaAttention.hyperConnectionMix), a thread a token
// row: m and y rows of (2 + hc) * hc values (pre, post, comb row-major [j][k]); pre = sigmoid(m * s0 + base) + eps,
// post = 2 * sigmoid(m * s1 + base), comb = each row's softmax of m * s2 + base, plus eps, then 2 * iters - 1
// Sinkhorn normalisations, columns first and alternating (each divides by its sum plus eps). hc at most 8.
extern "C" __global__ void hc_mix(const float* m, const float* base, float* y, int rows, int hc, int iters, float s0,
                                  float s1, float s2, float eps) {
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
