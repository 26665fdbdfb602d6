package org.orbitrl.model;

import org.orbitrl.kernels.Tensor;

/**
 * DeepSeek V4's sink attention in double precision, each query and head in turn: the reference {@link StrictBackend}
 * runs as its device operation ({@code Backend#sinkAttention} and its backward).
 */
final class SinkAttentionReference {
    private SinkAttentionReference() {
    }

    /** The forward's output, or with dout the gradients into grads {dq, dkv}; q [T, H, d], kv [S, d], mask [T, S]. */
    static float[] run(Tensor qt, Tensor kvt, Tensor maskt, Tensor sinkt, float scale, float[] dout,
                                     float[][] grads) {
        float[] q = qt.toFloatArray();
        float[] kv = kvt.toFloatArray();
        float[] mask = maskt.toFloatArray();
        float[] sinks = sinkt.toFloatArray();
        int t = qt.size(0);
        int h = qt.size(1);
        int d = qt.size(2);
        int s = kvt.size(0);
        float[] y = new float[t * h * d];
        double[] p = new double[s];
        for (int i = 0; i < t; i++) {
            for (int hh = 0; hh < h; hh++) {
                int qo = (i * h + hh) * d;
                double max = sinks[hh];
                for (int j = 0; j < s; j++) {
                    p[j] = Double.NEGATIVE_INFINITY;
                    if (mask[i * s + j] != Float.NEGATIVE_INFINITY) {
                        double dot = 0;
                        for (int c = 0; c < d; c++) {
                            dot += (double) q[qo + c] * kv[j * d + c];
                        }
                        p[j] = dot * scale + mask[i * s + j];
                    }
                    max = Math.max(max, p[j]);
                }
                double sum = Math.exp(sinks[hh] - max);
                for (int j = 0; j < s; j++) {
                    p[j] = p[j] == Double.NEGATIVE_INFINITY ? 0 : Math.exp(p[j] - max);
                    sum += p[j];
                }
                for (int j = 0; j < s; j++) {
                    p[j] /= sum;
                }
                if (dout == null) {
                    for (int c = 0; c < d; c++) {
                        double acc = 0;
                        for (int j = 0; j < s; j++) {
                            acc += p[j] * kv[j * d + c];
                        }
                        y[qo + c] = (float) acc;
                    }
                    continue;
                }
                double[] dp = new double[s];
                double dot = 0;
                for (int j = 0; j < s; j++) {
                    for (int c = 0; c < d; c++) {
                        dp[j] += (double) dout[qo + c] * kv[j * d + c];
                    }
                    dot += p[j] * dp[j];
                }
                for (int j = 0; j < s; j++) {
                    if (p[j] == 0) {
                        continue;
                    }
                    double dl = p[j] * (dp[j] - dot) * scale;
                    for (int c = 0; c < d; c++) {
                        grads[0][qo + c] += (float) (dl * kv[j * d + c]);
                        grads[1][j * d + c] += (float) (dl * q[qo + c] + p[j] * dout[qo + c]);
                    }
                }
            }
        }
        return y;
    }
}
