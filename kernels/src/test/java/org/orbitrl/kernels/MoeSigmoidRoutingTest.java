package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.ScalarBackend;

import java.util.Arrays;
import java.util.Comparator;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek-V3's routing ({@link Backend#moeSigmoidTopk}) and its gradient ({@link Backend#moeSigmoidRouterBackward}) on
 * the host, against references written here in another way: the choice by sorting in double (transformers'
 * {@code get_topk_indices}: the groups ranked by the sum of their two best biased scores, the others' scores masked to 0,
 * then the experts ranked; ties to the lower index), the weights in double (relative 1e-6), and the gradient against
 * central differences of the weights in double with the choice held (1e-5 relative to the row's largest, + 1e-9).
 * Shapes of the fixture (8 experts, 2 groups, 1 kept, top 2), DeepSeek-V3 (256, 8 groups, 4 kept, top 8) and Kimi-K2
 * (384, 1 group, top 8), with and without bias and renormalisation, logits on a grid (ties), and a bias so negative that
 * the masked groups' zeros win.
 */
class MoeSigmoidRoutingTest {
    private final Backend b = new ScalarBackend();

    private record Shape(int tokens, int experts, int groups, int keep, int k, float scaling) {
    }

    private static final Shape[] SHAPES = {
            new Shape(9, 8, 2, 1, 2, 2.5f),
            new Shape(13, 256, 8, 4, 8, 2.5f),
            new Shape(7, 384, 1, 1, 8, 2.827f),
            new Shape(5, 64, 4, 2, 6, 1f),
    };

    @Test
    void choiceAndWeightsMatchASortingReference() {
        SplittableRandom r = new SplittableRandom(2101);
        for (Shape sh : SHAPES) {
            for (int variant = 0; variant < 4; variant++) {
                boolean withBias = variant == 0 || variant == 2;   // the grid's ties need equal biases
                boolean normalize = variant != 2;
                boolean grid = variant == 3;
                float[] logits = new float[sh.tokens * sh.experts];
                for (int i = 0; i < logits.length; i++) {
                    double v = r.nextGaussian() * 2;
                    logits[i] = grid ? Math.round(v * 4) / 4f : (float) v;
                }
                float[] bias = withBias ? randomBias(r, sh.experts, 0.3) : null;
                check(sh, logits, bias, normalize, sh + " variant " + variant);
            }
        }
    }

    @Test
    void aVeryNegativeBiasLetsMaskedGroupsWinAsTransformersDoes() {
        SplittableRandom r = new SplittableRandom(2102);
        Shape sh = new Shape(6, 32, 4, 1, 6, 1f);   // 8 experts a kept group, 6 chosen: all from it unless masked zeros win
        float[] logits = new float[sh.tokens * sh.experts];
        for (int i = 0; i < logits.length; i++) {
            logits[i] = (float) r.nextGaussian();
        }
        float[] bias = new float[sh.experts];
        Arrays.fill(bias, -2f);                     // every biased score < 0: the masked groups' 0s are the largest
        int[] ids = check(sh, logits, bias, true, "bias -2");
        int per = sh.experts / sh.groups;
        for (int t = 0; t < sh.tokens; t++) {
            int kept = 0;                           // the group whose two best scores sum highest
            double best = Double.NEGATIVE_INFINITY;
            for (int g = 0; g < sh.groups; g++) {
                double[] v = new double[per];
                for (int e = 0; e < per; e++) {
                    v[e] = 1 / (1 + Math.exp(-logits[t * sh.experts + g * per + e]));
                }
                Arrays.sort(v);
                if (v[per - 1] + v[per - 2] > best) {
                    best = v[per - 1] + v[per - 2];
                    kept = g;
                }
            }
            for (int j = 0; j < sh.k; j++) {
                assertTrue(ids[t * sh.k + j] / per != kept, "token " + t + ": choice " + j + " (expert " + ids[t * sh.k + j]
                        + ") lies outside the kept group " + kept + ": a masked expert's 0 beats every biased score");
            }
        }
    }

    @Test
    void logitGradientMatchesCentralDifferencesOfTheWeights() {
        SplittableRandom r = new SplittableRandom(2103);
        for (Shape sh : SHAPES) {
            for (boolean normalize : new boolean[]{true, false}) {
                float[] logits = new float[sh.tokens * sh.experts];
                for (int i = 0; i < logits.length; i++) {
                    logits[i] = (float) (r.nextGaussian() * 2);
                }
                Tensor scores = Tensor.of(new float[logits.length], sh.tokens, sh.experts);
                Tensor weights = Tensor.of(new float[sh.tokens * sh.k], sh.tokens, sh.k);
                Tensor ids = Tensor.ofInts(new int[sh.tokens * sh.k], sh.tokens, sh.k);
                b.moeSigmoidTopk(Tensor.of(logits, sh.tokens, sh.experts), Tensor.of(randomBias(r, sh.experts, 0.3), sh.experts),
                        sh.groups, sh.keep, sh.k, normalize, sh.scaling, scores, weights, ids);
                float[] dw = new float[sh.tokens * sh.k];
                for (int i = 0; i < dw.length; i++) {
                    dw[i] = (float) r.nextGaussian();
                }
                Tensor dl = Tensor.of(new float[logits.length], sh.tokens, sh.experts);
                b.moeSigmoidRouterBackward(scores, ids, Tensor.of(dw, sh.tokens, sh.k), normalize, sh.scaling, dl);
                float[] got = dl.toFloatArray();
                long[] id = ids.toLongArray();
                for (int t = 0; t < sh.tokens; t++) {
                    double[] ref = new double[sh.experts];
                    double h = 1e-5;
                    for (int j = 0; j < sh.k; j++) {
                        int e = (int) id[t * sh.k + j];
                        double[] plus = weightsHeld(logits, t, sh, id, e, h, normalize);
                        double[] minus = weightsHeld(logits, t, sh, id, e, -h, normalize);
                        for (int i = 0; i < sh.k; i++) {
                            ref[e] += dw[t * sh.k + i] * (plus[i] - minus[i]) / (2 * h);
                        }
                    }
                    double max = Arrays.stream(ref).map(Math::abs).max().orElse(0);
                    for (int e = 0; e < sh.experts; e++) {
                        double err = Math.abs(got[t * sh.experts + e] - ref[e]);
                        assertTrue(err <= 1e-5 * max + 1e-9, sh + " normalize " + normalize + ", token " + t + ", expert " + e
                                + ": " + got[t * sh.experts + e] + " against " + ref[e]);
                    }
                }
            }
        }
    }

    @Test
    void scoresMayOverwriteTheLogits() {
        SplittableRandom r = new SplittableRandom(2104);
        Shape sh = SHAPES[1];
        float[] logits = new float[sh.tokens * sh.experts];
        for (int i = 0; i < logits.length; i++) {
            logits[i] = (float) r.nextGaussian();
        }
        Tensor bias = Tensor.of(randomBias(r, sh.experts, 0.3), sh.experts);
        Tensor s1 = Tensor.of(new float[logits.length], sh.tokens, sh.experts);
        Tensor w1 = Tensor.of(new float[sh.tokens * sh.k], sh.tokens, sh.k);
        Tensor i1 = Tensor.ofInts(new int[sh.tokens * sh.k], sh.tokens, sh.k);
        b.moeSigmoidTopk(Tensor.of(logits.clone(), sh.tokens, sh.experts), bias, sh.groups, sh.keep, sh.k, true, sh.scaling, s1, w1, i1);
        Tensor inPlace = Tensor.of(logits.clone(), sh.tokens, sh.experts);
        Tensor w2 = Tensor.of(new float[sh.tokens * sh.k], sh.tokens, sh.k);
        Tensor i2 = Tensor.ofInts(new int[sh.tokens * sh.k], sh.tokens, sh.k);
        b.moeSigmoidTopk(inPlace, bias, sh.groups, sh.keep, sh.k, true, sh.scaling, inPlace, w2, i2);
        assertArrayEquals(s1.toFloatArray(), inPlace.toFloatArray());
        assertArrayEquals(w1.toFloatArray(), w2.toFloatArray());
        assertArrayEquals(i1.toLongArray(), i2.toLongArray());
    }

    @Test
    void groupsThatDoNotDivideTheExpertsAreRefusedByName() {
        Tensor logits = Tensor.of(new float[2 * 12], 2, 12);
        Tensor w = Tensor.of(new float[4], 2, 2);
        Tensor ids = Tensor.ofInts(new int[4], 2, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> b.moeSigmoidTopk(logits, null, 5, 1, 2, true, 1f, logits, w, ids));
        assertTrue(e.getMessage().contains("n_group"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> b.moeSigmoidTopk(logits, Tensor.of(new float[11], 11), 4, 1, 2, true, 1f, logits, w, ids));
        assertTrue(e.getMessage().contains("e_score_correction_bias"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> b.moeSigmoidTopk(logits, null, 4, 5, 2, true, 1f, logits, w, ids));
        assertTrue(e.getMessage().contains("topk_group"), e.getMessage());
    }

    /** Runs the backend's routing and holds it to the sorting reference; returns the ids. */
    private int[] check(Shape sh, float[] logits, float[] bias, boolean normalize, String what) {
        Tensor scores = Tensor.of(new float[logits.length], sh.tokens, sh.experts);
        Tensor weights = Tensor.of(new float[sh.tokens * sh.k], sh.tokens, sh.k);
        Tensor ids = Tensor.ofInts(new int[sh.tokens * sh.k], sh.tokens, sh.k);
        b.moeSigmoidTopk(Tensor.of(logits, sh.tokens, sh.experts), bias == null ? null : Tensor.of(bias, sh.experts), sh.groups,
                sh.keep, sh.k, normalize, sh.scaling, scores, weights, ids);
        float[] s = scores.toFloatArray();
        float[] w = weights.toFloatArray();
        long[] id = ids.toLongArray();
        int[] out = new int[id.length];
        int per = sh.experts / sh.groups;
        for (int t = 0; t < sh.tokens; t++) {
            double[] sig = new double[sh.experts];
            double[] choice = new double[sh.experts];
            for (int e = 0; e < sh.experts; e++) {
                sig[e] = 1 / (1 + Math.exp(-logits[t * sh.experts + e]));
                assertEquals(sig[e], s[t * sh.experts + e], 1e-7, what + ": score of token " + t + ", expert " + e);
                // the choice as the f32 forward rounds it: f32 score plus f32 bias
                choice[e] = (float) sig[e] + (bias == null ? 0f : bias[e]);
                choice[e] = (float) choice[e];
            }
            Integer[] groups = new Integer[sh.groups];
            double[] groupScore = new double[sh.groups];
            for (int g = 0; g < sh.groups; g++) {
                groups[g] = g;
                double[] v = Arrays.copyOfRange(choice, g * per, (g + 1) * per);
                Arrays.sort(v);
                groupScore[g] = (float) (v[v.length - 1] + (v.length > 1 ? v[v.length - 2] : Double.NEGATIVE_INFINITY));
            }
            Arrays.sort(groups, Comparator.<Integer>comparingDouble(g -> -groupScore[g]).thenComparingInt(g -> g));
            boolean[] kept = new boolean[sh.groups];
            for (int j = 0; j < sh.keep; j++) {
                kept[groups[j]] = true;
            }
            Integer[] experts = new Integer[sh.experts];
            double[] masked = new double[sh.experts];
            for (int e = 0; e < sh.experts; e++) {
                experts[e] = e;
                masked[e] = kept[e / per] ? choice[e] : 0;
            }
            Arrays.sort(experts, Comparator.<Integer>comparingDouble(e -> -masked[e]).thenComparingInt(e -> e));
            double sum = 0;
            for (int j = 0; j < sh.k; j++) {
                sum += sig[experts[j]];
            }
            for (int j = 0; j < sh.k; j++) {
                out[t * sh.k + j] = (int) id[t * sh.k + j];
                assertEquals((long) experts[j], id[t * sh.k + j], what + ": token " + t + ", choice " + j);
                double ref = sig[experts[j]] / (normalize ? sum + 1e-20 : 1) * sh.scaling;
                assertEquals(ref, w[t * sh.k + j], 1e-6 * Math.abs(ref), what + ": weight of token " + t + ", choice " + j);
            }
        }
        return out;
    }

    /** Token t's k weights in double with logit e moved by dx, the chosen ids held. */
    private static double[] weightsHeld(float[] logits, int t, Shape sh, long[] id, int e, double dx, boolean normalize) {
        double[] s = new double[sh.k];
        double sum = 0;
        for (int j = 0; j < sh.k; j++) {
            int x = (int) id[t * sh.k + j];
            double l = logits[t * sh.experts + x] + (x == e ? dx : 0);
            s[j] = 1 / (1 + Math.exp(-l));
            sum += s[j];
        }
        for (int j = 0; j < sh.k; j++) {
            s[j] = s[j] / (normalize ? sum + 1e-20 : 1) * sh.scaling;
        }
        return s;
    }

    private static float[] randomBias(SplittableRandom r, int n, double scale) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextGaussian() * scale);
        }
        return v;
    }
}
