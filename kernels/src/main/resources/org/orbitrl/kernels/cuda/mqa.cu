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
