package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The clamped SwiGLU against closed forms: hand-computed values, the interleaved layout, central
 * finite differences (in double) away from the clamp points, and an exactly zero gradient where
 * gate > limit or |up| > limit.
 */
class ClampedSwigluTest {
    static final float ALPHA = 1.702f;
    static final float LIMIT = 7f;

    static double ref(double gate, double up) {
        double g = Math.min(gate, LIMIT);
        double u = Math.max(-LIMIT, Math.min(up, LIMIT));
        return (u + 1) * g / (1 + Math.exp(-ALPHA * g));
    }

    @Test
    void handComputedValuesAndInterleaving() {
        // rows of [gate0, up0, gate1, up1]
        float[] gu = {1f, 2f, 9f, -8f,
                      -2f, 0.5f, 7f, 7.5f};
        float[] out = new float[4];
        ClampedSwiglu.forward(gu, 2, 2, ALPHA, LIMIT, out);
        double s1 = 1 / (1 + Math.exp(-1.702));          // sigmoid(1.702)
        assertEquals(3 * s1, out[0], 1e-6, "gate 1, up 2: (2+1)·1·σ(1.702)");
        double s7 = 1 / (1 + Math.exp(-1.702 * 7));
        assertEquals((-7 + 1) * 7 * s7, out[1], 1e-5, "gate 9 -> 7, up -8 -> -7");
        double sm2 = 1 / (1 + Math.exp(1.702 * 2));
        assertEquals(1.5 * -2 * sm2, out[2], 1e-6, "gate -2, up 0.5");
        assertEquals(8 * 7 * s7, out[3], 1e-5, "gate 7 (at the limit), up 7.5 -> 7");
    }

    @Test
    void gradientIsTheFiniteDifferenceInsideAndZeroWhereClamped() {
        SplittableRandom rnd = new SplittableRandom(7);
        int rows = 40;
        int inter = 5;
        float[] gu = new float[rows * inter * 2];
        for (int i = 0; i < gu.length; i++) {
            float v;
            do {
                v = (float) (rnd.nextDouble() * 24 - 12); // [-12, 12): about 40% clamped
            } while (Math.abs(Math.abs(v) - LIMIT) < 0.05f);
            gu[i] = v;
        }
        float[] dout = new float[rows * inter];
        for (int i = 0; i < dout.length; i++) {
            dout[i] = (float) (rnd.nextDouble() * 2 - 1);
        }
        float[] dgu = new float[gu.length];
        ClampedSwiglu.backward(gu, dout, rows, inter, ALPHA, LIMIT, dgu);
        int clampedGate = 0;
        int clampedUp = 0;
        int bad = 0;
        StringBuilder sb = new StringBuilder();
        double h = 1e-4;
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < inter; j++) {
                int i = (r * inter + j) * 2;
                double gate = gu[i];
                double up = gu[i + 1];
                double d = dout[r * inter + j];
                double dg = d * (ref(gate + h, up) - ref(gate - h, up)) / (2 * h);
                double du = d * (ref(gate, up + h) - ref(gate, up - h)) / (2 * h);
                if (gate > LIMIT) {
                    clampedGate++;
                    dg = 0;
                }
                if (Math.abs(up) > LIMIT) {
                    clampedUp++;
                    du = 0;
                }
                double[][] pairs = {{dg, dgu[i]}, {du, dgu[i + 1]}};
                for (int p = 0; p < 2; p++) {
                    double tol = 1e-4 + 1e-4 * Math.abs(pairs[p][0]);
                    boolean zeroExpected = p == 0 ? gate > LIMIT : Math.abs(up) > LIMIT;
                    boolean ok = zeroExpected ? pairs[p][1] == 0 : Math.abs(pairs[p][0] - pairs[p][1]) <= tol;
                    if (!ok && bad++ < 5) {
                        sb.append(String.format("  [%d,%d] %s: expected %.6g got %.6g (gate %.4f up %.4f)%n", r, j,
                                p == 0 ? "dgate" : "dup", pairs[p][0], pairs[p][1], gate, up));
                    }
                }
            }
        }
        assertTrue(clampedGate > 10 && clampedUp > 10, "both clamps exercised: " + clampedGate + ", " + clampedUp);
        if (bad > 0) {
            fail(bad + " gradient elements off (atol 1e-4 + rtol 1e-4)\n" + sb);
        }
    }
}
