package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's SwiGLU with its limit against closed forms in double: hand-computed values on both sides of each clamp,
 * central finite differences (step 1e-4) away from the clamp points within 1e-4 + 1e-4·|ref|, and an exactly zero
 * gradient where gate ≥ limit or |up| ≥ limit; the backend operation's default is the same reference.
 */
class LimitedSwigluTest {
    static final float LIMIT = 10f;

    static double ref(double g, double u) {
        double gc = Math.min(g, LIMIT);
        double uc = Math.max(-LIMIT, Math.min(u, LIMIT));
        return gc / (1 + Math.exp(-gc)) * uc;
    }

    @Test
    void handComputedValues() {
        float[] g = {1f, 12f, -3f, 10f};
        float[] u = {2f, -15f, 0.5f, 11f};
        float[] out = new float[4];
        LimitedSwiglu.forward(g, u, LIMIT, out);
        assertEquals(2 / (1 + Math.exp(-1)), out[0], 1e-6, "silu(1)·2");
        assertEquals(10 / (1 + Math.exp(-10)) * -10, out[1], 1e-4, "gate 12 -> 10, up -15 -> -10");
        assertEquals(-3 / (1 + Math.exp(3)) * 0.5, out[2], 1e-6, "silu(-3)·0.5");
        assertEquals(10 / (1 + Math.exp(-10)) * 10, out[3], 1e-4, "gate at the limit, up 11 -> 10");
    }

    @Test
    void gradientIsTheFiniteDifferenceInsideAndZeroWhereClamped() {
        SplittableRandom rnd = new SplittableRandom(19);
        int n = 400;
        float[] g = new float[n];
        float[] u = new float[n];
        float[] dout = new float[n];
        for (int i = 0; i < n; i++) {
            g[i] = awayFromTheLimit(rnd);
            u[i] = awayFromTheLimit(rnd);
            dout[i] = (float) (rnd.nextDouble() * 2 - 1);
        }
        float[] dg = new float[n];
        float[] du = new float[n];
        LimitedSwiglu.backward(g, u, dout, LIMIT, dg, du);
        double h = 1e-4;
        int clampedGate = 0;
        int clampedUp = 0;
        for (int i = 0; i < n; i++) {
            double eg = dout[i] * (ref(g[i] + h, u[i]) - ref(g[i] - h, u[i])) / (2 * h);
            double eu = dout[i] * (ref(g[i], u[i] + h) - ref(g[i], u[i] - h)) / (2 * h);
            if (g[i] >= LIMIT) {
                clampedGate++;
                assertEquals(0f, dg[i], "dgate where gate " + g[i] + " is clamped");
            } else {
                assertEquals(eg, dg[i], 1e-4 + 1e-4 * Math.abs(eg), "dgate at gate " + g[i] + ", up " + u[i]);
            }
            if (Math.abs(u[i]) >= LIMIT) {
                clampedUp++;
                assertEquals(0f, du[i], "dup where up " + u[i] + " is clamped");
            } else {
                assertEquals(eu, du[i], 1e-4 + 1e-4 * Math.abs(eu), "dup at gate " + g[i] + ", up " + u[i]);
            }
        }
        assertTrue(clampedGate > 20 && clampedUp > 40, "clamped gates " + clampedGate + ", ups " + clampedUp);
    }

    @Test
    void theBackendDefaultIsTheReferenceAndShapesMustAgree() {
        SplittableRandom rnd = new SplittableRandom(23);
        float[] g = new float[6 * 7];
        float[] u = new float[g.length];
        for (int i = 0; i < g.length; i++) {
            g[i] = awayFromTheLimit(rnd);
            u[i] = awayFromTheLimit(rnd);
        }
        Tensor out = Tensor.of(new float[g.length], 6, 7);
        try (Backend b = Backends.named("scalar")) {
            b.limitedSwiglu(Tensor.of(g, 6, 7), Tensor.of(u, 6, 7), LIMIT, out);
            float[] want = new float[g.length];
            LimitedSwiglu.forward(g, u, LIMIT, want);
            for (int i = 0; i < want.length; i++) {
                assertEquals(ref(g[i], u[i]), out.toFloatArray()[i], 1e-5 + 1e-6 * Math.abs(want[i]), "element " + i);
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> b.limitedSwiglu(Tensor.of(g, 6, 7), Tensor.of(u, 7, 6), LIMIT, out));
            assertTrue(e.getMessage().contains("limitedSwiglu") && e.getMessage().contains("[7, 6]"), e.getMessage());
        }
    }

    /** Uniform in [-16, 16), at least 0.05 from ±limit (where the finite difference straddles the clamp). */
    static float awayFromTheLimit(SplittableRandom rnd) {
        float v;
        do {
            v = (float) (rnd.nextDouble() * 32 - 16);
        } while (Math.abs(Math.abs(v) - LIMIT) < 0.05f);
        return v;
    }
}
