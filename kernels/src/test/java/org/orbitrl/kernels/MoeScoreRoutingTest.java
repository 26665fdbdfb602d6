package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.ScalarBackend;

import java.util.Comparator;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's routing ({@link Backend#moeScoreTopk}) on the host against references written here in another way: the
 * scores as sqrt(log(1 + e^x)) or 1 / (1 + e^-x) in double (relative 1e-6), the choice by sorting the experts on their
 * biased scores (descending, ties to the lower index), the weights in double from the chosen scores (relative 1e-6, and
 * they sum to the scaling), a hash layer's fixed experts taken as given. Shapes of the fixture (8 experts, top 2),
 * V4-Flash (256, top 6) and V4-Pro (384, top 6); logits on a grid (ties) and past softplus's threshold of 20.
 */
class MoeScoreRoutingTest {
    private final Backend b = new ScalarBackend();

    @Test
    void scoresChoiceAndWeightsMatchASortingReference() {
        SplittableRandom r = new SplittableRandom(2201);
        int[][] shapes = {{9, 8, 2}, {13, 256, 6}, {7, 384, 6}};
        for (int[] sh : shapes) {
            int t = sh[0];
            int e = sh[1];
            int k = sh[2];
            for (int variant = 0; variant < 4; variant++) {
                boolean sqrtSoftplus = variant != 2;
                boolean grid = variant == 1;
                boolean hash = variant == 3;
                float[] logits = new float[t * e];
                for (int i = 0; i < logits.length; i++) {
                    double v = r.nextGaussian() * (grid ? 2 : 9);
                    logits[i] = grid ? Math.round(v * 4) / 4f : (float) v;
                }
                float[] bias = grid || hash ? null : new float[e];
                if (bias != null) {
                    for (int i = 0; i < e; i++) {
                        bias[i] = (float) (r.nextGaussian() * 0.3);
                    }
                }
                int[] fixed = null;
                if (hash) {
                    fixed = new int[t * k];
                    for (int i = 0; i < fixed.length; i++) {
                        fixed[i] = r.nextInt(e);
                    }
                }
                String what = t + "x" + e + " top " + k + " variant " + variant;
                float scaling = 1.5f;
                Tensor scores = f32(t, e);
                Tensor weights = f32(t, k);
                Tensor ids = i32(t, k);
                b.moeScoreTopk(Tensor.of(logits, t, e), sqrtSoftplus, bias == null ? null : Tensor.of(bias, e),
                        fixed == null ? null : Tensor.ofInts(fixed, t, k), k, scaling, scores, weights, ids);
                float[] s = scores.toFloatArray();
                float[] w = weights.toFloatArray();
                long[] id = ids.toLongArray();
                for (int i = 0; i < s.length; i++) {
                    double x = logits[i];
                    double want = sqrtSoftplus ? Math.sqrt(Math.log1p(Math.exp(x))) : 1 / (1 + Math.exp(-x));
                    assertEquals(want, s[i], 1e-6 * want + 1e-30, what + ": score " + i + " of logit " + x);
                }
                for (int row = 0; row < t; row++) {
                    int[] want;
                    if (hash) {
                        want = java.util.Arrays.copyOfRange(fixed, row * k, row * k + k);
                    } else {
                        int base = row * e;
                        float[] bs = bias;
                        want = IntStream.range(0, e).boxed()
                                .sorted(Comparator.comparingDouble((Integer x) -> -(s[base + x] + (bs == null ? 0f : bs[x])))
                                        .thenComparingInt(x -> x))
                                .limit(k).mapToInt(Integer::intValue).toArray();
                    }
                    int[] got = new int[k];
                    double sum = 0;
                    for (int j = 0; j < k; j++) {
                        got[j] = (int) id[row * k + j];
                        sum += s[row * e + got[j]];
                    }
                    assertArrayEquals(want, got, what + ": experts of token " + row);
                    double total = 0;
                    for (int j = 0; j < k; j++) {
                        double ref = s[row * e + got[j]] / sum * scaling;
                        assertEquals(ref, w[row * k + j], 1e-6 * ref, what + ": weight " + j + " of token " + row);
                        total += w[row * k + j];
                    }
                    assertEquals(scaling, total, 1e-5, what + ": the weights of token " + row + " sum to the scaling");
                }
            }
        }
    }

    private static Tensor f32(long... shape) {
        return Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, shape);
    }

    private static Tensor i32(long... shape) {
        return Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, shape);
    }

    @Test
    void aFixedExpertOutsideTheExpertsOrNaNScoresAreErrorsNamingTheToken() {
        Tensor logits = Tensor.of(new float[]{0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f}, 2, 4);
        IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, () -> b.moeScoreTopk(logits, true, null,
                Tensor.ofInts(new int[]{0, 1, 2, 4}, 2, 2), 2, 1f, f32(2, 4), f32(2, 2),
                i32(2, 2)));
        assertTrue(e.getMessage().contains("fixed expert 4 of token 1"), e.getMessage());
        IllegalArgumentException shape = assertThrows(IllegalArgumentException.class, () -> b.moeScoreTopk(logits, true, null,
                Tensor.ofInts(new int[]{0, 1, 2}, 1, 3), 2, 1f, f32(2, 4), f32(2, 2),
                i32(2, 2)));
        assertTrue(shape.getMessage().contains("fixed experts"), shape.getMessage());
        Tensor nan = Tensor.of(new float[]{0.1f, Float.NaN, Float.NaN, Float.NaN, 0.5f, 0.6f, 0.7f, 0.8f}, 2, 4);
        IllegalArgumentException none = assertThrows(IllegalArgumentException.class, () -> b.moeScoreTopk(nan, true, null, null,
                2, 1f, f32(2, 4), f32(2, 2), i32(2, 2)));
        assertTrue(none.getMessage().contains("token 0 has 1 experts"), none.getMessage());
    }
}
