package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
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
 * {@code L(x) = Σ dout ⊙ moe(x)}, in both its forms (grouped in backend memory, and per expert with host
 * routing). Inputs are chosen with every top-k margin and every clamp point at least 0.05 away, so the
 * ±5e-3 steps stay on one smooth piece; f32 forward noise then bounds the difference quotient's error
 * near 1e-3: tolerance 3e-3 + 3e-3·|ref|. The two forms agree with each other to f32 rounding (outputs and
 * input gradients within 2e-5 + 2e-5·|value|: the grouped form renormalises the softmax over all experts
 * where the per-expert form takes the softmax of the chosen logits, and sums in another order).
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

    /** The block of seed 21: a router with bias, experts with biases, clamps active. */
    static GptOssMoe block(SplittableRandom rnd) {
        Linear router = new Linear("router", Weight.of(random(rnd, 1.5, E, H)), random(rnd, 0.5, E));
        Tensor guBias = random(rnd, 1, E, 2 * I);
        Tensor downBias = random(rnd, 0.5, E, H);
        Linear[] gateUp = new Linear[E];
        Linear[] down = new Linear[E];
        for (int e = 0; e < E; e++) {
            gateUp[e] = new Linear("gu" + e, Weight.of(random(rnd, 6, 2 * I, H)), guBias.select(0, e));
            down[e] = new Linear("down" + e, Weight.of(random(rnd, 0.5, H, I)), downBias.select(0, e));
        }
        return new GptOssMoe(router, gateUp, down, K, 1.702f, 7f, guBias, downBias);
    }

    @ParameterizedTest(name = "grouped {0}")
    @ValueSource(booleans = {true, false})
    void inputGradientIsTheFiniteDifference(boolean grouped) {
        SplittableRandom rnd = new SplittableRandom(21);
        GptOssMoe moe = block(rnd);
        Backend b = Backends.cpu();
        Tensor x = random(rnd, 1, N, H);
        Tensor dout = random(rnd, 1, N, H);

        moe.setGrouped(false);
        GptOssMoe.Tape hostTape = new GptOssMoe.Tape();
        moe.forward(b, x, Tensor.of(new float[N * H], N, H), hostTape, true);
        checkMargins(b, moe, x, hostTape);
        moe.setGrouped(grouped);
        GptOssMoe.Tape tape = new GptOssMoe.Tape();
        Tensor out = Tensor.of(new float[N * H], N, H);
        moe.forward(b, x, out, tape, true);
        assertTrue((tape.grouped != null) == grouped, "the " + (grouped ? "grouped" : "per-expert") + " form ran");
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
        moe.forward(b, Tensor.of(x, N, H), out, null, false);
        float[] o = out.toFloatArray();
        double s = 0;
        for (int i = 0; i < o.length; i++) {
            s += (double) dout[i] * o[i];
        }
        return s;
    }

    @Test
    void groupedAndPerExpertFormsAgree() {
        SplittableRandom rnd = new SplittableRandom(21);
        GptOssMoe moe = block(rnd);
        Backend b = Backends.cpu();
        Tensor x = random(rnd, 1, N, H);
        Tensor dout = random(rnd, 1, N, H);
        float[][] outs = new float[2][];
        float[][] dxs = new float[2][];
        for (int f = 0; f < 2; f++) {
            moe.setGrouped(f == 0);
            GptOssMoe.Tape tape = new GptOssMoe.Tape();
            Tensor out = Tensor.of(new float[N * H], N, H);
            moe.forward(b, x, out, tape, true);
            Tensor dx = Tensor.of(new float[N * H], N, H);
            moe.backward(b, tape, dout, dx);
            outs[f] = out.toFloatArray();
            dxs[f] = dx.toFloatArray();
            Tensor inference = Tensor.of(new float[N * H], N, H);
            moe.forward(b, x, inference, null, false);
            assertTrue(java.util.Arrays.equals(outs[f], inference.toFloatArray()), "an inference forward has the training forward's bits");
        }
        for (int i = 0; i < N * H; i++) {
            assertTrue(Math.abs(outs[0][i] - outs[1][i]) <= 2e-5 + 2e-5 * Math.abs(outs[1][i]),
                    "out[" + i + "]: grouped " + outs[0][i] + ", per expert " + outs[1][i]);
            assertTrue(Math.abs(dxs[0][i] - dxs[1][i]) <= 2e-5 + 2e-5 * Math.abs(dxs[1][i]),
                    "dx[" + i + "]: grouped " + dxs[0][i] + ", per expert " + dxs[1][i]);
        }
    }

    /**
     * An inference forward where the backend asks for the per-pair products ({@link Backend#moePairs}): each pair through
     * its expert, the biases by the pair's expert id; the grouped form's output to f32 rounding (2e-5 + 2e-5·|value|).
     */
    @Test
    void thePerPairFormAgreesWithTheGroupedForm() {
        SplittableRandom rnd = new SplittableRandom(21);
        GptOssMoe moe = block(rnd);
        Tensor x = random(rnd, 1, N, H);
        int[] pairBiases = new int[1];
        Backend pairs = new org.orbitrl.kernels.cpu.ScalarBackend() {
            @Override
            public boolean moePairs(org.orbitrl.kernels.ExpertWeights experts) {
                return true;
            }

            @Override
            public void moeExpertBiasPairs(Tensor ys, Tensor bias, Tensor ids) {
                pairBiases[0]++;
                super.moeExpertBiasPairs(ys, bias, ids);
            }
        };
        Tensor got = Tensor.of(new float[N * H], N, H);
        moe.forward(pairs, x, got, null, false);
        assertTrue(pairBiases[0] == 2, "gate_up's and down's biases added per pair: " + pairBiases[0] + " calls");
        Tensor ref = Tensor.of(new float[N * H], N, H);
        moe.forward(Backends.cpu(), x, ref, new GptOssMoe.Tape(), true);
        float[] g = got.toFloatArray();
        float[] e = ref.toFloatArray();
        for (int i = 0; i < g.length; i++) {
            assertTrue(Math.abs(g[i] - e[i]) <= 2e-5 + 2e-5 * Math.abs(e[i]), "out[" + i + "]: per pair " + g[i] + ", grouped " + e[i]);
        }
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
