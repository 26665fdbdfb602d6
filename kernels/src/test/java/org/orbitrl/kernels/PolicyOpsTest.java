package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The host per-token log-probs against the closed form in double: logp = z_tok − log Σ exp(z),
 * z = x/T, within 1e-6 + 1e-6·|ref|; the probabilities of a row sum to 1 within 1e-5; the
 * gradient of Σ g·logp is g·(1[k = tok] − p_k)/T, accumulated onto what dLogits held, within
 * 1e-7 + 1e-6·|ref|; rows without a target, and targets with g = 0, are left untouched.
 */
class PolicyOpsTest {

    @Test
    void logProbsAndGradientMatchTheClosedForm() {
        SplittableRandom r = new SplittableRandom(5);
        int rowsN = 6;
        int v = 300;
        float[] x = new float[rowsN * v];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) ((r.nextDouble() * 2 - 1) * 6);
        }
        Tensor logits = Tensor.of(x, rowsN, v);
        int[] rows = {4, 0, 2, 5};
        int[] toks = {7, 299, 0, 123};
        float[] g = {0.5f, -1.25f, 0f, 2f};
        for (float temp : new float[]{0f, 0.6f}) {
            double t = temp == 0 ? 1 : temp;
            Tensor out = Tensor.of(new float[rows.length], rows.length);
            PolicyOps.tokenLogProbs(logits, Tensor.ofInts(rows, rows.length), Tensor.ofInts(toks, toks.length), temp, out);
            float[] init = new float[rowsN * v];
            for (int i = 0; i < init.length; i++) {
                init[i] = (float) (r.nextDouble() * 1e-3);
            }
            Tensor d = Tensor.of(init.clone(), rowsN, v);
            PolicyOps.tokenLogProbsBackward(logits, Tensor.ofInts(rows, rows.length), Tensor.ofInts(toks, toks.length),
                    Tensor.of(g, g.length), temp, d);
            float[] got = d.toFloatArray();
            double[] expect = new double[init.length];
            for (int i = 0; i < init.length; i++) {
                expect[i] = init[i];
            }
            for (int i = 0; i < rows.length; i++) {
                int o = rows[i] * v;
                double max = Double.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, x[o + k] / t);
                }
                double sum = 0;
                for (int k = 0; k < v; k++) {
                    sum += Math.exp(x[o + k] / t - max);
                }
                double ref = x[o + toks[i]] / t - max - Math.log(sum);
                assertEquals(ref, out.getFloat(i), 1e-6 + 1e-6 * Math.abs(ref), "logp of token " + toks[i] + " row " + rows[i] + " T=" + temp);
                double total = 0;
                for (int k = 0; k < v; k++) {
                    double p = Math.exp(x[o + k] / t - max) / sum;
                    total += p;
                    expect[o + k] += g[i] * ((k == toks[i] ? 1 : 0) - p) / t;
                }
                assertEquals(1.0, total, 1e-5, "probabilities of row " + rows[i]);
            }
            for (int i = 0; i < got.length; i++) {
                assertTrue(Math.abs(got[i] - expect[i]) <= 1e-7 + 1e-6 * Math.abs(expect[i]),
                        "dLogits[" + i / v + ", " + i % v + "] T=" + temp + ": got " + got[i] + " expected " + expect[i]);
            }
            for (int k = 0; k < v; k++) { // rows 1 and 3 have no target; row 2's g is 0
                assertEquals(init[v + k], got[v + k], 0f);
                assertEquals(init[3 * v + k], got[3 * v + k], 0f);
                assertEquals(init[2 * v + k], got[2 * v + k], 0f);
            }
        }
    }
}
