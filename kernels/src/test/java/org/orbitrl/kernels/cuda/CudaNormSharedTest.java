package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A decode step's q, k and v products in one GEMV launch: without the block's norm ({@link CudaBackend#matmulShared} at
 * up to 16 rows of bf16 weights, {@code bgemv_lr_m*} without terms) and with it folded in ({@link
 * CudaBackend#rmsNormMatmulShared}, {@code bgemv_norm_lr_m1}, one row).
 */
class CudaNormSharedTest extends CudaTestBase {

    /**
     * The shared launch's outputs are each weight's own GEMV ({@code bgemv_m*}, {@code -Dorbit.cuda.gemvShared=off}) bit
     * for bit: the same template and split, so the same sums in the same order. Qwen3-30B-A3B's q, k and v at 1, 3, 4,
     * 8 and 16 rows of x (each row chunk of the kernels), two weights of rows that are not a multiple of a block's.
     */
    @Test
    void sharedGemvIsEachWeightsGemvBitForBit() {
        SplittableRandom r = rng(811);
        int[][] shapes = {{2048, 4096, 512, 512}, {512, 100, 37}}; // K, then each weight's rows
        for (int[] shape : shapes) {
            int k = shape[0];
            int count = shape.length - 1;
            Tensor[] ws = new Tensor[count];
            for (int i = 0; i < count; i++) {
                ws[i] = dev(randn(r, 0.5f, shape[1 + i], k).to(DType.BF16));
            }
            for (int m : new int[]{1, 3, 4, 8, 16}) {
                Tensor x = dev(randn(r, 1f, m, k));
                Tensor[] one = outputs(m, shape);
                Tensor[] each = outputs(m, shape);
                gpu.matmulShared(x, ws, one);
                withProperty("orbit.cuda.gemvShared", "off", () -> gpu.matmulShared(x, ws, each));
                for (int i = 0; i < count; i++) {
                    float[] got = gpu.toHost(one[i]).toFloatArray();
                    assertNoNaN("K " + k + ", " + m + " rows, weight " + i, got);
                    assertBitsEqual("K " + k + ", " + m + " rows, weight " + i, gpu.toHost(each[i]).toFloatArray(), got);
                }
                // the one launch is the shared GEMV's: left out, every output keeps its poison
                Tensor[] omitted = outputs(m, shape);
                withProperty("orbit.cuda.omitKernels", "^bgemv_lr_m", () -> gpu.matmulShared(x, ws, omitted));
                for (int i = 0; i < count; i++) {
                    assertTrue(Float.isNaN(gpu.toHost(omitted[i]).toFloatArray()[0]), "weight " + i + " written by another launch");
                }
            }
        }
    }

    /**
     * The norm folded into the products against a double reference of {@code y = (g ⊙ x / sqrt(mean(x²) + eps)) · Wᵀ}:
     * Qwen3-30B-A3B's q, k and v at one row, a norm weight in f32 and in bf16, rows of x at 1/4, 1 and 4 times the
     * others' size (so the norm matters), in both folds ({@code -Dorbit.cuda.normFold=scale}: the totals scaled;
     * {@code stage}: the normed row staged). Tolerance per element {@code 1e-6 + 2e-6·Σ_k |xn_k·w_k|} (f32 sums, the norm's rounding
     * carried through the product). Two rows, a K not a multiple of 8, and an f32 weight decline, writing
     * nothing; a norm weight of the wrong length is refused naming it.
     */
    @Test
    void normFoldedIntoTheProductsMatchesADoubleReference() {
        SplittableRandom r = rng(812);
        int k = 2048;
        int[] shape = {k, 4096, 512, 512};
        float eps = 1e-6f;
        Tensor[] wsHost = new Tensor[3];
        Tensor[] ws = new Tensor[3];
        for (int i = 0; i < 3; i++) {
            wsHost[i] = randn(r, 0.5f, shape[1 + i], k).to(DType.BF16);
            ws[i] = dev(wsHost[i]);
        }
        for (DType normType : new DType[]{DType.F32, DType.BF16}) {
            Tensor gHost = randn(r, 0.3f, k);
            for (int i = 0; i < k; i++) {
                gHost.setFloat(1f + gHost.getFloat(i), i);
            }
            gHost = gHost.to(normType);
            Tensor g = dev(gHost);
            float[] gv = gHost.to(DType.F32).toFloatArray();
            for (int round = 0; round < 3; round++) {
                int m = 1;
                float[] xv = randn(r, 1f, m, k).toFloatArray();
                for (int row = 0; row < m; row++) {
                    float scale = (float) Math.pow(4, round - 1);   // a row of 1/4, 1 and 4 times the others' size
                    for (int c = 0; c < k; c++) {
                        xv[row * k + c] *= scale;
                    }
                }
                Tensor x = dev(Tensor.of(xv, m, k));
                float[][] want = new float[3][];   // the double reference and its bound per weight, for either fold
                double[][] tol = new double[3][];
                for (int i = 0; i < 3; i++) {
                    int n = shape[1 + i];
                    float[] wv = wsHost[i].to(DType.F32).toFloatArray();
                    want[i] = new float[m * n];
                    tol[i] = new double[m * n];
                    for (int row = 0; row < m; row++) {
                        double ss = 0;
                        for (int c = 0; c < k; c++) {
                            ss += (double) xv[row * k + c] * xv[row * k + c];
                        }
                        double inv = 1 / Math.sqrt(ss / k + eps);
                        for (int o = 0; o < n; o++) {
                            double v = 0;
                            double abs = 0;
                            for (int c = 0; c < k; c++) {
                                double t = gv[c] * (xv[row * k + c] * inv) * wv[o * k + c];
                                v += t;
                                abs += Math.abs(t);
                            }
                            want[i][row * n + o] = (float) v;
                            tol[i][row * n + o] = 1e-6 + 2e-6 * abs;
                        }
                    }
                }
                String scaleOfX = normType + " norm weight, x of scale 4^" + (round - 1);
                for (String mode : new String[]{"scale", "stage"}) {   // the scale applied to the totals; the row staged normed
                    withProperty("orbit.cuda.normFold", mode, () -> {
                        Tensor[] ys = new Tensor[3];
                        for (int i = 0; i < 3; i++) {
                            ys[i] = poisoned(DType.F32, m, shape[1 + i]);
                        }
                        String what = scaleOfX + ", " + mode;
                        assertTrue(gpu.rmsNormMatmulShared(x, g, eps, ws, ys), what + ": the fused launch takes the call");
                        for (int i = 0; i < 3; i++) {
                            assertWithin(what + ", weight " + i, want[i], gpu.toHost(ys[i]).toFloatArray(), tol[i]);
                        }
                        Tensor[] omitted = {poisoned(DType.F32, m, 4096), poisoned(DType.F32, m, 512), poisoned(DType.F32, m, 512)};
                        withProperty("orbit.cuda.omitKernels", "^bgemv_norm_(lr|scale)_",
                                () -> assertTrue(gpu.rmsNormMatmulShared(x, g, eps, ws, omitted)));
                        assertTrue(Float.isNaN(gpu.toHost(omitted[0]).toFloatArray()[0]), what + ": q written by another launch");
                    });
                }
            }
        }
        Tensor g = dev(randn(r, 1f, k));
        Tensor x2 = dev(randn(r, 1f, 2, k));
        Tensor[] y2 = {poisoned(DType.F32, 2, 4096), poisoned(DType.F32, 2, 512), poisoned(DType.F32, 2, 512)};
        assertFalse(gpu.rmsNormMatmulShared(x2, g, eps, ws, y2), "two rows decline");
        assertTrue(Float.isNaN(gpu.toHost(y2[0]).toFloatArray()[0]), "a declined call writes nothing");
        Tensor x1 = dev(randn(r, 1f, 1, k));
        Tensor[] y1 = {poisoned(DType.F32, 1, 4096), poisoned(DType.F32, 1, 512), poisoned(DType.F32, 1, 512)};
        withProperty("orbit.cuda.normShared", "off", () -> assertFalse(gpu.rmsNormMatmulShared(x1, g, eps, ws, y1), "switched off"));
        Tensor[] f32 = {dev(randn(r, 0.5f, 4096, k)), ws[1], ws[2]};
        assertFalse(gpu.rmsNormMatmulShared(x1, g, eps, f32, y1), "an f32 weight declines");
        Tensor x12 = dev(randn(r, 1f, 1, 12));
        Tensor[] w12 = {dev(randn(r, 0.5f, 16, 12).to(DType.BF16))};
        assertFalse(gpu.rmsNormMatmulShared(x12, dev(randn(r, 1f, 12)), eps, w12, new Tensor[]{poisoned(DType.F32, 1, 16)}),
                "K 12 declines");
        assertTrue(Float.isNaN(gpu.toHost(y1[0]).toFloatArray()[0]), "declined calls write nothing");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gpu.rmsNormMatmulShared(x1, dev(randn(r, 1f, k - 8)), eps, ws, y1));
        assertTrue(e.getMessage().contains("norm weight"), e.getMessage());
    }

    private static void assertNoNaN(String what, float[] v) {
        for (int i = 0; i < v.length; i++) {
            if (Float.isNaN(v[i])) {
                throw new AssertionError(what + ": NaN at " + i + " (an output left unwritten)");
            }
        }
    }

    private Tensor[] outputs(int m, int[] shape) {
        Tensor[] ys = new Tensor[shape.length - 1];
        for (int i = 0; i < ys.length; i++) {
            ys[i] = poisoned(DType.F32, m, shape[1 + i]);
        }
        return ys;
    }
}
