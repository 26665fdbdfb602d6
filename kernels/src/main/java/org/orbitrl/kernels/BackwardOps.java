package org.orbitrl.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Host-memory reverse-mode kernels for the operations of a decoder layer: the defaults of the
 * {@link Backend} backward methods. Each computes activation gradients only; base weights and
 * norms are frozen, so none of these produces a weight gradient.
 */
public final class BackwardOps {
    private BackwardOps() {
    }

    private static final ValueLayout.OfFloat F = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * RMSNorm backward: y = w ⊙ x·r with r = 1/sqrt(mean(x²)+eps). With g = w ⊙ dy,
     * dx = r·g − x·r³·Σ(g⊙x)/H. x, dy, dx [rows, H] f32 (dx may alias dy).
     */
    public static void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx) {
        int h = x.size(-1);
        long rows = x.numel() / h;
        float[] w = weight.toFloatArray();
        float[] xs = x.contiguous().toFloatArray();
        float[] d = dy.contiguous().toFloatArray();
        float[] out = new float[xs.length];
        for (long r = 0; r < rows; r++) {
            int o = (int) (r * h);
            float ss = 0;
            for (int i = 0; i < h; i++) {
                ss += xs[o + i] * xs[o + i];
            }
            float inv = (float) (1.0 / Math.sqrt(ss / h + eps));
            float dot = 0;
            for (int i = 0; i < h; i++) {
                dot += w[i] * d[o + i] * xs[o + i];
            }
            float c = inv * inv * inv * dot / h;
            for (int i = 0; i < h; i++) {
                out[o + i] = inv * w[i] * d[o + i] - c * xs[o + i];
            }
        }
        write(dx, out);
    }

    /** SwiGLU backward: out = silu(g)·u. dg = dout·u·silu'(g), du = dout·silu(g). All [rows, I] f32. */
    public static void swigluBackward(Tensor gate, Tensor up, Tensor dout, Tensor dgate, Tensor dup) {
        float[] g = gate.toFloatArray();
        float[] u = up.toFloatArray();
        float[] d = dout.toFloatArray();
        float[] dg = new float[g.length];
        float[] du = new float[g.length];
        for (int i = 0; i < g.length; i++) {
            float s = (float) (1.0 / (1.0 + Math.exp(-g[i])));
            float silu = g[i] * s;
            du[i] = d[i] * silu;
            dg[i] = d[i] * u[i] * (s * (1 + g[i] * (1 - s)));
        }
        write(dgate, dg);
        write(dup, du);
    }

    /** RoPE backward, in place on the gradient dx [T, H, D]: the inverse rotation. */
    public static void ropeBackward(Tensor dx, Tensor positions, RopeTable table) {
        int t = dx.size(0);
        int heads = dx.size(1);
        int half = table.rotaryDim() / 2;
        boolean halfStyle = table.style() == RopeTable.Style.HALF;
        for (int i = 0; i < t; i++) {
            int pos = Math.toIntExact(positions.getLong(i));
            for (int h = 0; h < heads; h++) {
                Tensor v = dx.select(0, i).select(0, h);
                for (int j = 0; j < half; j++) {
                    int a = halfStyle ? j : 2 * j;
                    int b = halfStyle ? j + half : 2 * j + 1;
                    float d1 = v.getFloat(a);
                    float d2 = v.getFloat(b);
                    float c = table.cos(pos, j);
                    float s = table.sin(pos, j);
                    v.setFloat(d1 * c + d2 * s, a);
                    v.setFloat(-d1 * s + d2 * c, b);
                }
            }
        }
    }

    /**
     * Causal attention backward for one sequence, recomputing the probabilities from q and k
     * (nothing quadratic is stored). Shapes as {@link Backend#attention}; dq [T, Hq, D],
     * dk [S, Hkv, D], dv [S, Hkv, Dv] are overwritten. Sinks are frozen and get no gradient.
     */
    public static void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec,
                                         Tensor dq, Tensor dk, Tensor dv) {
        int t = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        int dvd = v.size(2);
        int group = hq / hkv;
        float[] qs = q.contiguous().toFloatArray();  // [T, Hq, D]
        float[] ks = k.contiguous().toFloatArray();  // [S, Hkv, D]
        float[] vs = v.contiguous().toFloatArray();  // [S, Hkv, Dv]
        float[] dos = dout.contiguous().toFloatArray(); // [T, Hq, Dv]
        float[] dqs = new float[qs.length];
        float[] dks = new float[ks.length];
        float[] dvs = new float[vs.length];
        float[] p = new float[s];
        float[] dp = new float[s];
        for (int i = 0; i < t; i++) {
            int pos = queryStart + i;
            int lo = spec.slidingWindow() > 0 ? Math.max(0, pos - spec.slidingWindow() + 1) : 0;
            for (int h = 0; h < hq; h++) {
                int kvh = h / group;
                int qo = (i * hq + h) * d;
                float max = Float.NEGATIVE_INFINITY;
                for (int j = lo; j <= pos; j++) {
                    float acc = 0;
                    int ko = (j * hkv + kvh) * d;
                    for (int c = 0; c < d; c++) {
                        acc += qs[qo + c] * ks[ko + c];
                    }
                    p[j] = acc * spec.scale();
                    max = Math.max(max, p[j]);
                }
                float sink = spec.sinks() == null ? Float.NEGATIVE_INFINITY : spec.sinks().getFloat(h);
                max = Math.max(max, sink);
                float sum = spec.sinks() == null ? 0 : (float) Math.exp(sink - max);
                for (int j = lo; j <= pos; j++) {
                    p[j] = (float) Math.exp(p[j] - max);
                    sum += p[j];
                }
                int oo = (i * hq + h) * dvd;
                float pdp = 0;
                for (int j = lo; j <= pos; j++) {
                    p[j] /= sum;
                    int vo = (j * hkv + kvh) * dvd;
                    float acc = 0;
                    for (int c = 0; c < dvd; c++) {
                        acc += dos[oo + c] * vs[vo + c];
                        dvs[vo + c] += p[j] * dos[oo + c];
                    }
                    dp[j] = acc;
                    pdp += p[j] * acc;
                }
                for (int j = lo; j <= pos; j++) {
                    float ds = p[j] * (dp[j] - pdp) * spec.scale();
                    int ko = (j * hkv + kvh) * d;
                    for (int c = 0; c < d; c++) {
                        dqs[qo + c] += ds * ks[ko + c];
                        dks[ko + c] += ds * qs[qo + c];
                    }
                }
            }
        }
        write(dq, dqs);
        write(dk, dks);
        write(dv, dvs);
    }

    static void write(Tensor dst, float[] values) {
        if (dst.numel() != values.length || dst.dtype() != DType.F32) {
            throw new IllegalArgumentException("backward output " + dst + " for " + values.length + " values");
        }
        dst.requireContiguous("backward output");
        MemorySegment.copy(values, 0, dst.segment(), F, dst.byteOffset(), values.length);
    }
}
