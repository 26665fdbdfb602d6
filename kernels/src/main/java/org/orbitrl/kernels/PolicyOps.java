package org.orbitrl.kernels;

/**
 * Host implementations of the per-token log-probability operations of {@link Backend}: the
 * defaults, and the reference of the device versions. The arithmetic is the one the rollout
 * sampler uses to record log-probs: {@code z = (x − max) / T} in f32, {@code Σ exp(z)} in double
 * (ascending), {@code logp = z_token − log Σ} rounded to f32; temperature 0 counts as 1.
 */
public final class PolicyOps {
    private PolicyOps() {
    }

    /** out [n] = log softmax(logits[rows[i]] / T)[tokens[i]]. logits f32 [R, V]; rows, tokens i32 [n]. */
    public static void tokenLogProbs(Tensor logits, Tensor rows, Tensor tokens, float temperature, Tensor out) {
        int n = check("tokenLogProbs", logits, rows, tokens, out);
        int v = logits.size(-1);
        float[] x = logits.contiguous().toFloatArray();
        float t = temperature == 0 ? 1f : temperature;
        for (int i = 0; i < n; i++) {
            int o = row(logits, rows, i) * v;
            int tok = token(v, tokens, i);
            float max = Float.NEGATIVE_INFINITY;
            for (int k = 0; k < v; k++) {
                max = Math.max(max, x[o + k]);
            }
            double sum = 0;
            for (int k = 0; k < v; k++) {
                sum += Math.exp((x[o + k] - max) / t);
            }
            out.setFloat((float) ((x[o + tok] - max) / t - Math.log(sum)), i);
        }
    }

    /**
     * Accumulates into dLogits [R, V] the gradient of {@code Σ_i dLogp[i] · logp_i} with logp_i as
     * {@link #tokenLogProbs}: for each i with dLogp[i] ≠ 0, row rows[i] gets {@code −g·p_k/T} at every
     * k (p = softmax(logits/T), in double, rounded per element), then {@code g/T} at tokens[i]. The
     * rows must be distinct.
     */
    public static void tokenLogProbsBackward(Tensor logits, Tensor rows, Tensor tokens, Tensor dLogp, float temperature,
                                             Tensor dLogits) {
        int n = check("tokenLogProbsBackward", logits, rows, tokens, dLogp);
        if (!java.util.Arrays.equals(dLogits.shape(), logits.shape()) || dLogits.dtype() != DType.F32) {
            throw new IllegalArgumentException("tokenLogProbsBackward: dLogits " + dLogits + " must be f32 shaped as " + logits);
        }
        int v = logits.size(-1);
        float[] x = logits.contiguous().toFloatArray();
        float t = temperature == 0 ? 1f : temperature;
        for (int i = 0; i < n; i++) {
            float g = dLogp.getFloat(i);
            if (g == 0f) {
                continue;
            }
            int r = row(logits, rows, i);
            int o = r * v;
            int tok = token(v, tokens, i);
            float max = Float.NEGATIVE_INFINITY;
            for (int k = 0; k < v; k++) {
                max = Math.max(max, x[o + k]);
            }
            double sum = 0;
            for (int k = 0; k < v; k++) {
                sum += Math.exp((x[o + k] - max) / t);
            }
            for (int k = 0; k < v; k++) {
                double p = Math.exp((x[o + k] - max) / t) / sum;
                dLogits.setFloat(dLogits.getFloat(r, k) + (float) (-g * p / t), r, k);
            }
            dLogits.setFloat(dLogits.getFloat(r, tok) + g / t, r, tok);
        }
    }

    private static int check(String op, Tensor logits, Tensor rows, Tensor tokens, Tensor perToken) {
        int n = Math.toIntExact(rows.numel());
        if (logits.rank() != 2 || logits.dtype() != DType.F32 || tokens.numel() != n || perToken.numel() != n
                || perToken.dtype() != DType.F32) {
            throw new IllegalArgumentException(op + ": logits " + logits + " (f32 [rows, vocab]), rows " + rows + ", tokens "
                    + tokens + ", per-token " + perToken + " (f32 [n]) do not agree");
        }
        return n;
    }

    private static int row(Tensor logits, Tensor rows, int i) {
        long r = rows.getLong(i);
        if (r < 0 || r >= logits.dim(0)) {
            throw new IndexOutOfBoundsException("token log-probs: row " + r + " (index " + i + ") outside " + logits);
        }
        return (int) r;
    }

    private static int token(int v, Tensor tokens, int i) {
        long tok = tokens.getLong(i);
        if (tok < 0 || tok >= v) {
            throw new IndexOutOfBoundsException("token log-probs: token " + tok + " (index " + i + ") outside the vocabulary of " + v);
        }
        return (int) tok;
    }
}
