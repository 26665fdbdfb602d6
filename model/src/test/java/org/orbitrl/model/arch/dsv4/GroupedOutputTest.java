package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * DeepSeek V4's block-diagonal output projection wo_a on the backend ({@code DeepseekV4Attention.grouped}: o regrouped
 * group-major, one product a group, the result regrouped back) against the closed form in double: y[t, g, j] =
 * Σ_i o[t, g·in + i] · oA[g·r + j, i], and the backward's dx[t, g·in + i] = Σ_j dy[t, g, j] · oA[g·r + j, i], within
 * 1e-5 of each output's largest magnitude; seeded, 5 tokens, 3 groups of 16 channels, rank 8; once with f32 weights and
 * once with weights that are all bf16 values (placed as bf16: the same numbers).
 */
class GroupedOutputTest {
    @Test
    void projectionAndItsGradientMatchTheClosedForm() {
        int n = 5;
        int groups = 3;
        int in = 16;
        int r = 8;
        try (Backend b = Backends.cpu()) {
            for (boolean bf16 : new boolean[]{false, true}) {
                SplittableRandom rnd = new SplittableRandom(bf16 ? 31 : 30);
                float[] oA = random(rnd, groups * r * in, bf16);
                float[] o = random(rnd, n * groups * in, false);
                float[] dy = random(rnd, n * groups * r, false);
                GradTape tape = new GradTape();
                Node on = new Node(o);
                Node y = DeepseekV4Attention.grouped(tape, b, new DeepseekV4Attention.PlacedMatrix(), oA, on, n, groups, in, r);
                System.arraycopy(dy, 0, y.grad(), 0, dy.length);
                tape.backward();
                double[] wantY = new double[n * groups * r];
                double[] wantDx = new double[o.length];
                for (int t = 0; t < n; t++) {
                    for (int g = 0; g < groups; g++) {
                        for (int j = 0; j < r; j++) {
                            double s = 0;
                            for (int i = 0; i < in; i++) {
                                s += (double) o[t * groups * in + g * in + i] * oA[(g * r + j) * in + i];
                                wantDx[t * groups * in + g * in + i] += (double) dy[(t * groups + g) * r + j] * oA[(g * r + j) * in + i];
                            }
                            wantY[(t * groups + g) * r + j] = s;
                        }
                    }
                }
                close("y" + (bf16 ? " (bf16 weights)" : ""), wantY, y.v);
                close("dx" + (bf16 ? " (bf16 weights)" : ""), wantDx, on.grad());
            }
        }
    }

    private static void close(String what, double[] want, float[] got) {
        double scale = 0;
        for (double w : want) {
            scale = Math.max(scale, Math.abs(w));
        }
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) {
            assertEquals(want[i], got[i], 1e-5 * scale, what + "[" + i + "]");
        }
    }

    /** Uniform in [-1, 1); with {@code bf16}, each value rounded to a bf16 one. */
    private static float[] random(SplittableRandom r, int n, boolean bf16) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            float f = (float) (r.nextDouble() * 2 - 1);
            v[i] = bf16 ? Float.intBitsToFloat(Float.floatToRawIntBits(f) & 0xFFFF0000) : f;
        }
        return v;
    }
}
