package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The gpt-oss MoE block's input gradient (through the experts' biases, the clamped SwiGLU with both
 * clamps active, and the softmax over the top-k router logits) against central finite differences of
 * {@code L(x) = Σ dout ⊙ moe(x)}. Inputs are chosen with every top-k margin and every clamp point
 * at least 0.05 away, so the ±5e-3 steps stay on one smooth piece; f32 forward noise then bounds the
 * difference quotient's error near 1e-3: tolerance 3e-3 + 3e-3·|ref|.
 */
class GptOssMoeGradientTest {
    static final int N = 5;
    static final int H = 8;
    static final int I = 4;
    static final int E = 4;
    static final int K = 2;

    static Tensor random(SplittableRandom rnd, double scale, long... shape) {
        int n = 1;
        for (long s : shape) {
            n *= (int) s;
        }
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) ((rnd.nextDouble() * 2 - 1) * scale);
        }
        return Tensor.of(v, shape);
    }

    @Test
    void inputGradientIsTheFiniteDifference() {
        SplittableRandom rnd = new SplittableRandom(21);
        Linear router = new Linear("router", Weight.of(random(rnd, 1.5, E, H)), random(rnd, 0.5, E));
        Linear[] gateUp = new Linear[E];
        Linear[] down = new Linear[E];
        for (int e = 0; e < E; e++) {
            gateUp[e] = new Linear("gu" + e, Weight.of(random(rnd, 6, 2 * I, H)), random(rnd, 1, 2 * I));
            down[e] = new Linear("down" + e, Weight.of(random(rnd, 0.5, H, I)), random(rnd, 0.5, H));
        }
        GptOssMoe moe = new GptOssMoe(router, gateUp, down, K, 1.702f, 7f);
        Backend b = Backends.cpu();
        Tensor x = random(rnd, 1, N, H);
        Tensor dout = random(rnd, 1, N, H);

        GptOssMoe.Tape tape = new GptOssMoe.Tape();
        Tensor out = Tensor.of(new float[N * H], N, H);
        moe.forward(b, x, out, tape);
        checkMargins(b, moe, x, tape);
        Tensor dx = Tensor.of(new float[N * H], N, H);
        moe.backward(b, tape, dout, dx);
        float[] got = dx.toFloatArray();

        float[] xv = x.toFloatArray();
        float[] d = dout.toFloatArray();
        double eps = 5e-3;
        int bad = 0;
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < xv.length; i++) {
            float[] p = xv.clone();
            p[i] += (float) eps;
            float[] m = xv.clone();
            m[i] -= (float) eps;
            double fd = (loss(b, moe, p, d) - loss(b, moe, m, d)) / ((p[i] - xv[i]) - (m[i] - xv[i]));
            double tol = 3e-3 + 3e-3 * Math.abs(fd);
            if (!(Math.abs(fd - got[i]) <= tol) && bad++ < 5) {
                sb.append(String.format("  x[%d,%d]: finite difference %.6g, backward %.6g%n", i / H, i % H, fd, got[i]));
            }
        }
        if (bad > 0) {
            fail(bad + " of " + xv.length + " input gradients off\n" + sb);
        }
    }

    private static double loss(Backend b, GptOssMoe moe, float[] x, float[] dout) {
        Tensor out = Tensor.of(new float[N * H], N, H);
        moe.forward(b, Tensor.of(x, N, H), out, null);
        float[] o = out.toFloatArray();
        double s = 0;
        for (int i = 0; i < o.length; i++) {
            s += (double) dout[i] * o[i];
        }
        return s;
    }

    /** The step stays on one smooth piece: top-k sets and clamp sides are far from flipping. */
    private static void checkMargins(Backend b, GptOssMoe moe, Tensor x, GptOssMoe.Tape tape) {
        Tensor logits = Tensor.of(new float[N * E], N, E);
        moe.router.forward(b, x, logits);
        float[] lg = logits.toFloatArray();
        for (int t = 0; t < N; t++) {
            float[] row = java.util.Arrays.copyOfRange(lg, t * E, (t + 1) * E);
            java.util.Arrays.sort(row);
            assertTrue(row[E - K] - row[E - K - 1] > 0.05f, "token " + t + " top-k margin " + (row[E - K] - row[E - K - 1]));
        }
        int gateClamped = 0;
        int upClamped = 0;
        for (Tensor guT : tape.gu) {
            if (guT == null) {
                continue;
            }
            float[] gu = guT.toFloatArray();
            for (int i = 0; i < gu.length; i += 2) {
                assertTrue(Math.abs(gu[i] - 7f) > 0.05f && Math.abs(Math.abs(gu[i + 1]) - 7f) > 0.05f,
                        "a gate/up value near the clamp: " + gu[i] + ", " + gu[i + 1]);
                gateClamped += gu[i] > 7f ? 1 : 0;
                upClamped += Math.abs(gu[i + 1]) > 7f ? 1 : 0;
            }
        }
        assertTrue(gateClamped > 0 && upClamped > 0, "both clamps active: gate " + gateClamped + ", up " + upClamped);
    }
}
