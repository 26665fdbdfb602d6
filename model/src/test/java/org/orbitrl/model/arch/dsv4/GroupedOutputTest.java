package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * DeepSeek V4's block-diagonal output projection wo_a ({@code DeepseekV4Attention.grouped}, its tokens over the common
 * pool's threads) against the closed form in double: y[t, g, j] =
 * Σ_i o[t, g·in + i] · oA[g·r + j, i], and the backward's dx[t, g·in + i] = Σ_j dy[t, g, j] · oA[g·r + j, i], within
 * 1e-5 of each output's largest magnitude; seeded, 5 tokens, 3 groups of 16 channels, rank 8, then 300 tokens (spread
 * over the threads) whose result must equal the same call on one thread bit for bit.
 */
class GroupedOutputTest {
    @Test
    void projectionAndItsGradientMatchTheClosedForm() {
        int n = 5;
        int groups = 3;
        int in = 16;
        int r = 8;
        SplittableRandom rnd = new SplittableRandom(30);
        float[] oA = random(rnd, groups * r * in);
        float[] o = random(rnd, n * groups * in);
        float[] dy = random(rnd, n * groups * r);
        GradTape tape = new GradTape();
        Node on = new Node(o);
        Node y = DeepseekV4Attention.grouped(tape, oA, on, n, groups, in, r);
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
        close("y", wantY, y.v);
        close("dx", wantDx, on.grad());
    }

    @Test
    void manyTokensOverTheThreadsEqualOneThreadBitForBit() {
        int n = 300;
        int groups = 4;
        int in = 64;
        int r = 32;
        SplittableRandom rnd = new SplittableRandom(32);
        float[] oA = random(rnd, groups * r * in);
        float[] o = random(rnd, n * groups * in);
        float[] dy = random(rnd, n * groups * r);
        float[][] y = new float[2][];
        float[][] dx = new float[2][];
        try {
            for (int pass = 0; pass < 2; pass++) {
                Ops.parallel = pass == 0;
                GradTape tape = new GradTape();
                Node on = new Node(o);
                Node out = DeepseekV4Attention.grouped(tape, oA, on, n, groups, in, r);
                System.arraycopy(dy, 0, out.grad(), 0, dy.length);
                tape.backward();
                y[pass] = out.v;
                dx[pass] = on.grad();
            }
        } finally {
            Ops.parallel = true;
        }
        org.junit.jupiter.api.Assertions.assertArrayEquals(y[1], y[0], "y over the threads and on one");
        org.junit.jupiter.api.Assertions.assertArrayEquals(dx[1], dx[0], "dx over the threads and on one");
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

    /** Uniform in [-1, 1). */
    private static float[] random(SplittableRandom r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return v;
    }
}
