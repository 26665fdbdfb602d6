package org.orbitrl.kernels.cpu;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.fail;

/**
 * Attention with learned sinks and a sliding window (gpt-oss) on the CPU backend against the closed
 * form, computed here in double: query i at absolute position {@code p} sees keys
 * {@code max(0, p − W + 1) .. p}; {@code o = Σ_j e^{s_j} v_j / (Σ_j e^{s_j} + e^{sink_h})} with
 * {@code s_j = scale·q·k_j}. Backward is checked against central differences of the double forward
 * of {@code L = Σ dout ⊙ o} (step 1e-5, error far below the tolerance). Forward: 1e-5 absolute +
 * 1e-5 relative; gradients: 1e-4 absolute + 1e-4 relative (f32 sums over a few dozen terms).
 */
class SinkWindowAttentionTest {
    static final int HQ = 4;
    static final int HKV = 2;
    static final int D = 8;

    static double[] randoms(SplittableRandom rnd, int n, double scale) {
        double[] v = new double[n];
        for (int i = 0; i < n; i++) {
            v[i] = (rnd.nextDouble() * 2 - 1) * scale;
        }
        return v;
    }

    static Tensor f32(double[] v, long... shape) {
        float[] f = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            f[i] = (float) v[i];
        }
        return Tensor.of(f, shape);
    }

    /** The closed form: out [T, HQ, D] for q [T, HQ, D], k, v [S, HKV, D], from queryStart. */
    static double[] reference(double[] q, double[] k, double[] v, double[] sinks, int t, int start, int window,
                              double scale) {
        double[] out = new double[t * HQ * D];
        int group = HQ / HKV;
        for (int i = 0; i < t; i++) {
            int pos = start + i;
            int lo = window > 0 ? Math.max(0, pos - window + 1) : 0;
            for (int h = 0; h < HQ; h++) {
                int kh = h / group;
                double denom = sinks == null ? 0 : Math.exp(sinks[h]);
                double[] acc = new double[D];
                for (int j = lo; j <= pos; j++) {
                    double s = 0;
                    for (int c = 0; c < D; c++) {
                        s += q[(i * HQ + h) * D + c] * k[(j * HKV + kh) * D + c];
                    }
                    double e = Math.exp(s * scale);
                    denom += e;
                    for (int c = 0; c < D; c++) {
                        acc[c] += e * v[(j * HKV + kh) * D + c];
                    }
                }
                for (int c = 0; c < D; c++) {
                    out[(i * HQ + h) * D + c] = acc[c] / denom;
                }
            }
        }
        return out;
    }

    @Test
    void forwardAndBackwardMatchTheClosedForm() {
        try (Backend cpu = Backends.cpu()) {
            SplittableRandom rnd = new SplittableRandom(31);
            int[][] cases = {{12, 0, 5}, {3, 12, 5}, {10, 0, 0}, {1, 9, 4}}; // T, queryStart, window
            for (int[] cs : cases) {
                for (boolean withSinks : new boolean[]{true, false}) {
                    int t = cs[0];
                    int start = cs[1];
                    int window = cs[2];
                    int s = start + t;
                    double scale = 1 / Math.sqrt(D);
                    double[] q = randoms(rnd, t * HQ * D, 1.5);
                    double[] k = randoms(rnd, s * HKV * D, 1.5);
                    double[] v = randoms(rnd, s * HKV * D, 1);
                    double[] sinks = withSinks ? randoms(rnd, HQ, 2) : null;
                    double[] dout = randoms(rnd, t * HQ * D, 1);
                    // the kernel reads exactly the f32-rounded values the reference uses
                    round(q);
                    round(k);
                    round(v);
                    if (sinks != null) {
                        round(sinks);
                    }
                    AttentionSpec spec = new AttentionSpec((float) scale, window, sinks == null ? null : f32(sinks, HQ));
                    String what = "T=" + t + " start=" + start + " window=" + window + " sinks=" + withSinks;
                    Tensor out = Tensor.of(new float[t * HQ * D], t, HQ, D);
                    cpu.attention(f32(q, t, HQ, D), f32(k, s, HKV, D), f32(v, s, HKV, D), out, start, spec);
                    check(what + " out", reference(q, k, v, sinks, t, start, window, (float) scale), out.toFloatArray(), 1e-5);

                    Tensor dq = Tensor.of(new float[t * HQ * D], t, HQ, D);
                    Tensor dk = Tensor.of(new float[s * HKV * D], s, HKV, D);
                    Tensor dv = Tensor.of(new float[s * HKV * D], s, HKV, D);
                    cpu.attentionBackward(f32(q, t, HQ, D), f32(k, s, HKV, D), f32(v, s, HKV, D), f32(dout, t, HQ, D),
                            start, spec, dq, dk, dv);
                    double[][] inputs = {q, k, v};
                    Tensor[] grads = {dq, dk, dv};
                    String[] names = {"dq", "dk", "dv"};
                    for (int g = 0; g < 3; g++) {
                        double[] x = inputs[g];
                        double[] fd = new double[x.length];
                        for (int i = 0; i < x.length; i++) {
                            double keep = x[i];
                            x[i] = keep + 1e-5;
                            double plus = dot(dout, reference(q, k, v, sinks, t, start, window, (float) scale));
                            x[i] = keep - 1e-5;
                            double minus = dot(dout, reference(q, k, v, sinks, t, start, window, (float) scale));
                            x[i] = keep;
                            fd[i] = (plus - minus) / 2e-5;
                        }
                        check(what + " " + names[g], fd, grads[g].toFloatArray(), 1e-4);
                    }
                }
            }
        }
    }

    private static void round(double[] x) {
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) x[i];
        }
    }

    private static double dot(double[] a, double[] b) {
        double s = 0;
        for (int i = 0; i < a.length; i++) {
            s += a[i] * b[i];
        }
        return s;
    }

    private static void check(String what, double[] ref, float[] got, double tol) {
        int bad = 0;
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < ref.length; i++) {
            if (!(Math.abs(ref[i] - got[i]) <= tol + tol * Math.abs(ref[i])) && bad++ < 5) {
                sb.append(String.format("  [%d] ref %.7g got %.7g%n", i, ref[i], got[i]));
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + ref.length + " off by more than " + tol + " + " + tol + "·|ref|\n" + sb);
        }
    }
}
