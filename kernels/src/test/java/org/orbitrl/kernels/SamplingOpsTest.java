package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The host sampling op against references written independently of it: the kept set of each
 * filter from a full sort of the probabilities (the textbook definition), the draw as an inverse
 * CDF over many seeds (frequencies against the renormalised probabilities), greedy as argmax.
 */
class SamplingOpsTest {
    private static final int V = 50;

    private static float[] logits(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] x = new float[V];
        for (int i = 0; i < V; i++) {
            x[i] = (float) (r.nextGaussian() * 2.0);
        }
        return x;
    }

    /** One draw per key over the same row; returns tokens and sampled log-probs. */
    private static Object[] sample(float[] row, float t, int topK, float topP, float minP, long[] keys) {
        int n = keys.length;
        Tensor logits = Tensor.of(row, 1, V);
        Tensor req = Tensor.allocate(Arena.ofAuto(), DType.I32, SamplingOps.FIELDS, n);
        for (int i = 0; i < n; i++) {
            SamplingOps.setRequest(req, i, 0, t, topK, topP, minP, keys[i]);
        }
        Tensor tokens = Tensor.allocate(Arena.ofAuto(), DType.I32, n);
        Tensor lp = Tensor.allocate(Arena.ofAuto(), DType.F32, n);
        SamplingOps.sampleTokens(logits, req, tokens, lp);
        int[] tok = new int[n];
        for (int i = 0; i < n; i++) {
            tok[i] = (int) tokens.getLong(i);
        }
        return new Object[]{tok, lp.toFloatArray()};
    }

    /** Reference: probabilities of softmax(x / T), the kept ids by sorting (descending, ties to the lower id). */
    private static double[] keptProbabilities(float[] x, float t, int topK, float topP, float minP) {
        double max = Double.NEGATIVE_INFINITY;
        for (float f : x) {
            max = Math.max(max, f);
        }
        double[] p = new double[V];
        double sum = 0;
        for (int i = 0; i < V; i++) {
            p[i] = Math.exp((x[i] - max) / t);
            sum += p[i];
        }
        for (int i = 0; i < V; i++) {
            p[i] /= sum;
        }
        Integer[] order = new Integer[V];
        for (int i = 0; i < V; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> p[a] != p[b] ? Double.compare(p[b], p[a]) : Integer.compare(a, b));
        int keep = topK > 0 ? Math.min(topK, V) : V;
        double cum = 0;
        for (int i = 0; i < keep && topP < 1; i++) {
            cum += p[order[i]];
            if (cum >= topP) {
                keep = i + 1;
                break;
            }
        }
        double[] q = new double[V];
        double kept = 0;
        for (int i = 0; i < keep; i++) {
            int id = order[i];
            if (minP > 0 && p[id] < minP * p[order[0]]) {
                continue;
            }
            q[id] = p[id];
            kept += p[id];
        }
        for (int i = 0; i < V; i++) {
            q[i] /= kept;
        }
        return q;
    }

    @Test
    void greedyIsTheArgmaxWithZeroSampledLogprob() {
        float[] x = logits(1);
        x[17] = 9f;
        x[23] = 9f; // a tie: the lower id wins
        Object[] r = sample(x, 0f, 0, 1f, 0f, new long[]{5, 6});
        assertEquals(17, ((int[]) r[0])[0]);
        assertEquals(17, ((int[]) r[0])[1]);
        assertEquals(0f, ((float[]) r[1])[0]);
    }

    @Test
    void filtersKeepExactlyTheSortedReferenceSetAndLogprobsMatchIt() {
        record Case(float t, int topK, float topP, float minP) {
        }
        Case[] cases = {new Case(1f, 0, 1f, 0f), new Case(0.7f, 5, 1f, 0f), new Case(1.3f, 0, 0.6f, 0f),
                new Case(1f, 0, 1f, 0.2f), new Case(0.9f, 8, 0.8f, 0.05f)};
        int draws = 4000;
        long[] keys = new long[draws];
        for (int i = 0; i < draws; i++) {
            keys[i] = SamplingOps.streamKey(42, i % 8, i / 8);
        }
        for (int ci = 0; ci < cases.length; ci++) {
            Case c = cases[ci];
            float[] x = logits(100 + ci);
            double[] q = keptProbabilities(x, c.t, c.topK, c.topP, c.minP);
            Object[] r = sample(x, c.t, c.topK, c.topP, c.minP, keys);
            int[] tok = (int[]) r[0];
            float[] lp = (float[]) r[1];
            int[] counts = new int[V];
            for (int i = 0; i < draws; i++) {
                int k = tok[i];
                if (q[k] == 0) {
                    fail(c + ": draw " + i + " gave token " + k + ", outside the reference kept set");
                }
                // sampled log-prob = log of the renormalised probability; atol 1e-5 + rtol 1e-5
                double want = Math.log(q[k]);
                assertTrue(Math.abs(lp[i] - want) <= 1e-5 + 1e-5 * Math.abs(want),
                        c + ": draw " + i + " token " + k + " sampled logp " + lp[i] + " vs reference " + want);
                counts[k]++;
            }
            // frequencies: every kept token with q >= 0.05 within 5 standard deviations of draws*q
            for (int k = 0; k < V; k++) {
                if (q[k] >= 0.05) {
                    double mean = draws * q[k];
                    double sd = Math.sqrt(draws * q[k] * (1 - q[k]));
                    assertTrue(Math.abs(counts[k] - mean) <= 5 * sd,
                            c + ": token " + k + " drawn " + counts[k] + " times, expected " + mean + " +- " + 5 * sd);
                }
            }
        }
    }

    @Test
    void aDrawDependsOnlyOnItsKeyAndRow() {
        float[] x = logits(7);
        long[] keys = {SamplingOps.streamKey(3, 0, 0), SamplingOps.streamKey(3, 1, 0), SamplingOps.streamKey(3, 0, 1)};
        int[] alone = (int[]) sample(x, 1f, 0, 1f, 0f, new long[]{keys[2]})[0];
        int[] together = (int[]) sample(x, 1f, 0, 1f, 0f, keys)[0];
        assertEquals(alone[0], together[2]);
        // different streams differ somewhere over many positions
        int same = 0;
        for (int pos = 0; pos < 200; pos++) {
            int[] a = (int[]) sample(x, 1f, 0, 1f, 0f, new long[]{SamplingOps.streamKey(3, 0, pos), SamplingOps.streamKey(4, 0, pos)})[0];
            same += a[0] == a[1] ? 1 : 0;
        }
        assertTrue(same < 150, "seeds 3 and 4 drew the same token at " + same + " of 200 positions");
    }

    @Test
    void aRowOutsideTheLogitsIsNamed() {
        Tensor req = Tensor.allocate(Arena.ofAuto(), DType.I32, SamplingOps.FIELDS, 1);
        SamplingOps.setRequest(req, 0, 3, 1f, 0, 1f, 0f, 1);
        IndexOutOfBoundsException e = org.junit.jupiter.api.Assertions.assertThrows(IndexOutOfBoundsException.class,
                () -> SamplingOps.sampleTokens(Tensor.of(logits(1), 1, V), req, Tensor.allocate(Arena.ofAuto(), DType.I32, 1),
                        Tensor.allocate(Arena.ofAuto(), DType.F32, 1)));
        assertTrue(e.getMessage().contains("row 3"), e.getMessage());
    }
}
