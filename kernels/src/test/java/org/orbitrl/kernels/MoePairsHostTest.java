package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The host reference of the per-pair MoE operations ({@link Backend#moeExpertMatmulPairs}, {@link Backend#moeCombinePairs})
 * against sums taken here in double: f32, bf16 and INT4 experts (the quantized ones through the format's own dequantize),
 * x a row a token or a row a pair, overwritten and scaled-accumulated outputs. Tolerance {@code 1e-6 + 2e-6·Σ|terms|}.
 */
class MoePairsHostTest {
    private final Backend b = new ScalarBackend();

    @Test
    void pairProductsMatchDoubleSums() {
        SplittableRandom r = new SplittableRandom(77);
        int experts = 5;
        int n = 6;
        int k = 64;
        for (String form : new String[]{"f32", "bf16", "int4-g32"}) {
            Tensor[] dense = new Tensor[experts];
            QuantizedTensor[] quant = new QuantizedTensor[experts];
            float[][] w = new float[experts][];
            for (int e = 0; e < experts; e++) {
                Tensor t = random(r, n, k, 0.2f);
                if (form.equals("int4-g32")) {
                    quant[e] = QuantFormats.byName(form).quantize(t);
                    Tensor d = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, n, k);
                    b.dequantize(quant[e], d);
                    w[e] = d.toFloatArray();
                } else {
                    dense[e] = form.equals("bf16") ? t.to(DType.BF16) : t;
                    w[e] = dense[e].to(DType.F32).toFloatArray();
                }
            }
            ExpertWeights ew = new ExpertWeights(n, k, dense, quant);
            for (int xDiv : new int[]{3, 1}) {
                int tokens = 2;
                int pairs = tokens * 3;
                int[] ids = {4, 0, 2, 1, 4, 3};
                Tensor x = random(r, pairs / xDiv, k, 1f);
                float[] xv = x.toFloatArray();
                float[] y0 = random(r, pairs, n, 1f).toFloatArray();
                for (boolean accumulate : new boolean[]{false, true}) {
                    float scale = accumulate ? 0.5f : 1f;
                    Tensor y = Tensor.of(y0.clone(), pairs, n);
                    b.moeExpertMatmulPairs(x, xDiv, ew, Tensor.ofInts(ids, tokens, 3), scale, y, accumulate);
                    float[] got = y.toFloatArray();
                    for (int p = 0; p < pairs; p++) {
                        for (int o = 0; o < n; o++) {
                            double s = 0;
                            double abs = 0;
                            for (int i = 0; i < k; i++) {
                                double v = (double) xv[(p / xDiv) * k + i] * w[ids[p]][o * k + i];
                                s += v;
                                abs += Math.abs(v);
                            }
                            double want = (accumulate ? y0[p * n + o] : 0) + scale * s;
                            double tol = 1e-6 + 2e-6 * (abs + Math.abs(y0[p * n + o]));
                            assertEquals(want, got[p * n + o], tol, form + " xDiv " + xDiv + (accumulate ? " accumulate" : "")
                                    + " pair " + p + " row " + o);
                        }
                    }
                }
            }
        }
    }

    @Test
    void combineWeightsEachTokensPairs() {
        SplittableRandom r = new SplittableRandom(78);
        int tokens = 3;
        int k = 2;
        int h = 7;
        float[] ys = random(r, tokens * k, h, 1f).toFloatArray();
        float[] w = random(r, tokens, k, 1f).toFloatArray();
        float[] base = random(r, tokens, h, 1f).toFloatArray();
        for (boolean accumulate : new boolean[]{false, true}) {
            Tensor out = Tensor.of(base.clone(), tokens, h);
            b.moeCombinePairs(Tensor.of(ys, tokens * k, h), Tensor.of(w, tokens, k), out, accumulate);
            float[] got = out.toFloatArray();
            for (int t = 0; t < tokens; t++) {
                for (int c = 0; c < h; c++) {
                    double s = accumulate ? base[t * h + c] : 0;
                    for (int j = 0; j < k; j++) {
                        s += (double) w[t * k + j] * ys[(t * k + j) * h + c];
                    }
                    assertEquals(s, got[t * h + c], 1e-5, "token " + t + " column " + c + (accumulate ? " (accumulated)" : ""));
                }
            }
        }
    }

    @Test
    void expertsOutsideTheLayerOrNotHeldAreErrorsNamingThePair() {
        SplittableRandom r = new SplittableRandom(79);
        ExpertWeights ew = new ExpertWeights(4, 8, new Tensor[]{random(r, 4, 8, 1f), null}, new QuantizedTensor[2]);
        Tensor x = random(r, 1, 8, 1f);
        IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class,
                () -> b.moeExpertMatmulPairs(x, 2, ew, Tensor.ofInts(new int[]{0, 2}, 1, 2), 1f, Tensor.of(new float[8], 2, 4), false));
        assertTrue(e.getMessage().contains("pair 1") && e.getMessage().contains("expert 2"), e.getMessage());
        e = assertThrows(IndexOutOfBoundsException.class,
                () -> b.moeExpertMatmulPairs(x, 2, ew, Tensor.ofInts(new int[]{0, 1}, 1, 2), 1f, Tensor.of(new float[8], 2, 4), false));
        assertTrue(e.getMessage().contains("not held"), e.getMessage());
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> b.moeExpertMatmulPairs(x, 2, ew, Tensor.ofInts(new int[]{0, 0}, 1, 2), 1f, Tensor.of(new float[6], 2, 3), false));
        assertTrue(bad.getMessage().contains("moeExpertMatmulPairs"), bad.getMessage());
    }

    private static Tensor random(SplittableRandom r, int rows, int cols, float scale) {
        float[] v = new float[rows * cols];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) ((r.nextDouble() * 2 - 1) * scale);
        }
        return Tensor.of(v, rows, cols);
    }
}
