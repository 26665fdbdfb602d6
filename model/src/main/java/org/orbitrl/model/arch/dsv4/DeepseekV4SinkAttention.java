package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * Multi-query attention with per-head sink logits: for query i of head h,
 * {@code softmax([q·k_j·scale + mask_ij]_j ++ [sink_h])} drops the sink's share and weighs the
 * shared K=V rows. Rows whose keys are all masked cannot occur (a query always sees itself).
 * On a device backend that takes it ({@link Backend#sinkAttention}: the CUDA backend outside exact
 * mode) the operands are copied there and the products run there, forward and backward; otherwise
 * (the host backends, exact mode) it runs here on the host, each query and head on its own.
 */
final class DeepseekV4SinkAttention {
    private DeepseekV4SinkAttention() {
    }

    /** q [T, heads, d], kv [S, d], mask [T, S] additive -> [T, heads, d]. */
    static Node attend(GradTape t, Backend b, Node q, Node kv, float[] mask, float[] sinks, int heads, int d, float scale) {
        if (!b.allocator().hostMemory() && b.takesDeepseekV4Attention()) {
            Node y = onBackend(t, b, q, kv, mask, sinks, heads, d, scale);
            if (y != null) {
                return y;
            }
        }
        return onHost(t, q, kv, mask, sinks, heads, d, scale);
    }

    /**
     * {@link Backend#sinkAttention} on the operands in the backend's memory (where they are not already, copied there;
     * the mask and sinks copied again for the backward rather than held); null where the backend declines.
     */
    private static Node onBackend(GradTape t, Backend b, Node q, Node kv, float[] mask, float[] sinks, int heads, int d,
                                  float scale) {
        TensorAllocator a = b.allocator();
        int tq = q.size() / (heads * d);
        int s = kv.size() / d;
        boolean keep = Ops.keepsValues(b);
        Tensor qt = keep ? q.placed(a, tq, heads, d) : Ops.device(a, q.v(), tq, heads, d);
        Tensor kvt = keep ? kv.placed(a, s, d) : Ops.device(a, kv.v(), s, d);
        Tensor mt = Ops.device(a, mask, tq, s);
        Tensor st = Ops.device(a, sinks, heads);
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, tq, heads, d);
        boolean taken = b.sinkAttention(qt, kvt, mt, st, scale, out);
        Ops.release(a, mt, st);
        if (!taken) {
            a.release(out);
            return null;
        }
        Node y = Ops.made(b, out);
        if (!keep) {   // a layer's queries are large to hold in device memory when its values live on the host
            Ops.release(a, qt, kvt);
        }
        if (t != null) {
            t.record(y, () -> {
                Tensor bq = keep ? q.placed(a, tq, heads, d) : Ops.device(a, q.v(), tq, heads, d);
                Tensor bkv = keep ? kv.placed(a, s, d) : Ops.device(a, kv.v(), s, d);
                Tensor bm = Ops.device(a, mask, tq, s);
                Tensor bs = Ops.device(a, sinks, heads);
                Tensor dy = y.gradPlaced(a, tq, heads, d);
                Tensor dq = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, tq, heads, d);
                Tensor dkv = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, s, d);
                if (!b.sinkAttentionBackward(bq, bkv, bm, bs, scale, dy, dq, dkv)) {
                    throw new IllegalStateException(b.name() + " took the sink attention's forward but not its backward");
                }
                Ops.release(a, bm, bs);
                if (!keep) {
                    Ops.release(a, bq, bkv);
                }
                Ops.sendGrad(b, q, dq);
                Ops.sendGrad(b, kv, dkv);
            });
        }
        return y;
    }

    /** The host's computation: each query and head in turn, f32 sums in key and channel order. */
    private static Node onHost(GradTape t, Node qn, Node kvn, float[] mask, float[] sinks, int heads, int d, float scale) {
        float[] q = qn.v();
        float[] kv = kvn.v();
        int tq = q.length / (heads * d);
        int s = kv.length / d;
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
                            dot += q[qo + c] * kv[j * d + c];
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
                            y[qo + c] += p * kv[j * d + c];
                        }
                    }
                }
            }
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dq = qn.grad();
                float[] dk = kvn.grad();
                float[] dp = new float[s];
                for (int i = 0; i < tq; i++) {
                    for (int h = 0; h < heads; h++) {
                        int qo = (i * heads + h) * d;
                        int po = (i * heads + h) * s;
                        float dot = 0;
                        for (int j = 0; j < s; j++) {
                            float v = 0;
                            for (int c = 0; c < d; c++) {
                                v += dy[qo + c] * kv[j * d + c];
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
                                dq[qo + c] += dl * kv[j * d + c];
                                dk[j * d + c] += dl * q[qo + c] + p * dy[qo + c];
                            }
                        }
                    }
                }
            });
        }
        return yn;
    }
}
