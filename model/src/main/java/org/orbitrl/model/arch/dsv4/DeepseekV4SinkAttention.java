package org.orbitrl.model.arch.dsv4;

/**
 * Multi-query attention with per-head sink logits: for query i of head h,
 * {@code softmax([q·k_j·scale + mask_ij]_j ++ [sink_h])} drops the sink's share and weighs the
 * shared K=V rows. Rows whose keys are all masked cannot occur (a query always sees itself).
 */
final class DeepseekV4SinkAttention {
    private DeepseekV4SinkAttention() {
    }

    /** q [T, heads, d], kv [S, d], mask [T, S] additive -> [T, heads, d]. */
    static Node attend(GradTape t, Node q, Node kv, float[] mask, float[] sinks, int heads, int d, float scale) {
        int tq = q.size() / (heads * d);
        int s = kv.size() / d;
        float[] probs = new float[tq * heads * s];
        float[] y = new float[tq * heads * d];
        for (int i = 0; i < tq; i++) {
            for (int h = 0; h < heads; h++) {
                int qo = (i * heads + h) * d;
                int po = (i * heads + h) * s;
                float max = sinks[h];
                for (int j = 0; j < s; j++) {
                    float l = Float.NEGATIVE_INFINITY;
                    if (mask[i * s + j] != Float.NEGATIVE_INFINITY) {
                        float dot = 0;
                        for (int c = 0; c < d; c++) {
                            dot += q.v[qo + c] * kv.v[j * d + c];
                        }
                        l = dot * scale + mask[i * s + j];
                    }
                    probs[po + j] = l;
                    max = Math.max(max, l);
                }
                float sum = (float) Math.exp(sinks[h] - max);
                for (int j = 0; j < s; j++) {
                    float e = probs[po + j] == Float.NEGATIVE_INFINITY ? 0f : (float) Math.exp(probs[po + j] - max);
                    probs[po + j] = e;
                    sum += e;
                }
                for (int j = 0; j < s; j++) {
                    float p = probs[po + j] / sum;
                    probs[po + j] = p;
                    if (p != 0) {
                        for (int c = 0; c < d; c++) {
                            y[qo + c] += p * kv.v[j * d + c];
                        }
                    }
                }
            }
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dq = q.grad();
                float[] dk = kv.grad();
                float[] dp = new float[s];
                for (int i = 0; i < tq; i++) {
                    for (int h = 0; h < heads; h++) {
                        int qo = (i * heads + h) * d;
                        int po = (i * heads + h) * s;
                        float dot = 0;
                        for (int j = 0; j < s; j++) {
                            float v = 0;
                            for (int c = 0; c < d; c++) {
                                v += dy[qo + c] * kv.v[j * d + c];
                            }
                            dp[j] = v;
                            dot += probs[po + j] * v;
                        }
                        for (int j = 0; j < s; j++) {
                            float p = probs[po + j];
                            if (p == 0) {
                                continue;
                            }
                            float dl = p * (dp[j] - dot) * scale;
                            for (int c = 0; c < d; c++) {
                                dq[qo + c] += dl * kv.v[j * d + c];
                                dk[j * d + c] += dl * q.v[qo + c] + p * dy[qo + c];
                            }
                        }
                    }
                }
            });
        }
        return yn;
    }
}
