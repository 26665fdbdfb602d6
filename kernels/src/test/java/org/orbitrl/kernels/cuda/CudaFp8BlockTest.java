package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Fp8Block128;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * FP8 E4M3 weights with 128×128 block scales (DeepSeek's fp8 checkpoints: f32 scales as V3, E8M0 as V4) on the device,
 * made by the formats' own quantizers from seeded random weights, shapes with partial blocks, and a view of whole
 * block rows (how DeepSeek V4's wo_a hands each head group its rows):
 * <ul>
 *   <li>dequantize to f32 bit for bit the format's row decoder; to bf16 bit for bit that value rounded to nearest
 *       even;</li>
 *   <li>{@code matmulQuantized} and {@code matmulQuantizedTransposed} against double sums of the same roundings, |err| ≤
 *       1e-6 + 1e-5·Σ|x·w|: where {@code CudaMatmulOps.fp8Gemv} takes it (2 to 4 rows, or one row of 4096 output
 *       columns or more; K a multiple of 16) the FP8 GEMV (the exact weights, x as it is; 130 and 4098 output columns:
 *       a warp's last columns past the end), else the
 *       weight dequantized to bf16 and the rows of x rounded to bf16 above the bf16 GEMV's 16 rows; dy always
 *       rounded;</li>
 *   <li>{@code matmulF32} and {@code matmulTransposedF32} (x never rounded to bf16; at 16 to 256 rows carried as two
 *       bf16 parts, within 2^-18 of each value) against double sums of x's f32 values and the decoded weights, |err| ≤
 *       1e-6 + 1e-5·Σ|x·w| (bf16-rounded rows of 1024 values put some 1e-4 of that sum on a typical element and fail),
 *       at 1 to 300 rows of x (every form the products take); a bf16 weight through the same calls likewise;</li>
 *   <li>{@code matmulF32Grouped}, a block-diagonal weight's groups in one call, likewise (its own method's text).</li>
 * </ul>
 */
class CudaFp8BlockTest extends CudaTestBase {
    private static final QuantFormat[] FORMATS = {Fp8Block128.INSTANCE, Fp8Block128Ue8m0.INSTANCE};
    private static final int[][] NK = {{8, 32}, {200, 264}, {256, 1024}};

    @Test
    void dequantizeIsTheRowDecodersValues() {
        SplittableRandom r = rng(81);
        for (QuantFormat f : FORMATS) {
            for (int[] nk : NK) {
                QuantizedTensor w = f.quantize(randn(r, 0.1f, nk[0], nk[1]));
                float[] ref = CudaQuantTest.dequantizeRef(w);
                QuantizedTensor dw = gpu.toDevice(w);
                try {
                    Tensor out = poisoned(DType.F32, nk[0], nk[1]);
                    gpu.dequantize(dw, out);
                    assertBitsEqual(f.name() + " " + nk[0] + "x" + nk[1] + " to f32", ref, gpu.toHost(out).toFloatArray());
                    Tensor outB = dev(Tensor.of(new float[nk[0] * nk[1]], nk[0], nk[1]).to(DType.BF16));
                    gpu.dequantize(dw, outB);
                    assertBitsEqual(f.name() + " " + nk[0] + "x" + nk[1] + " to bf16", bf16Round(ref),
                            gpu.toHost(outB).toFloatArray());
                } finally {
                    gpu.free(dw);
                }
            }
        }
    }

    @Test
    void theQuantizedProductsMatchTheirRoundings() {
        SplittableRandom r = rng(82);
        for (QuantFormat f : FORMATS) {
            for (int[] nk : new int[][]{{200, 264}, {130, 272}, {256, 1024}, {4098, 256}}) {
                int n = nk[0];
                int k = nk[1];
                QuantizedTensor w = f.quantize(randn(r, 0.1f, n, k));
                float[] exact = CudaQuantTest.dequantizeRef(w);
                float[] wb = bf16Round(exact);
                QuantizedTensor dw = gpu.toDevice(w);
                try {
                    for (int m : new int[]{1, 2, 3, 8, 40}) {
                        boolean fp8Gemv = CudaMatmulOps.fp8Gemv(m, n, k);   // exact weights, x as it is
                        float[] x = randn(r, 1f, m, k).toFloatArray();
                        Tensor y = poisoned(DType.F32, m, n);
                        gpu.matmulQuantized(dev(Tensor.of(x, m, k)), dw, y);
                        check(f.name() + " matmulQuantized " + m + "x" + k + "->" + n + (fp8Gemv ? " (FP8 GEMV)" : ""),
                                m > 16 ? bf16Round(x) : x, fp8Gemv ? exact : wb, m, n, k, false, gpu.toHost(y).toFloatArray());
                        float[] dy = randn(r, 1f, m, n).toFloatArray();
                        Tensor dx = poisoned(DType.F32, m, k);
                        gpu.matmulQuantizedTransposed(dev(Tensor.of(dy, m, n)), dw, dx);
                        check(f.name() + " matmulQuantizedTransposed m=" + m, bf16Round(dy), wb, m, n, k, true,
                                gpu.toHost(dx).toFloatArray());
                    }
                } finally {
                    gpu.free(dw);
                }
            }
        }
    }

    @Test
    void theF32ProductsNeverRoundTheRows() {
        SplittableRandom r = rng(83);
        int k = 1024;
        int rows = 256;   // two block rows; the second is a view, as a head group of wo_a
        // 1 row (the f32 product), 3 (the FP8 GEMV; the bf16 GEMV), 16 and 64 (x in two bf16 parts on the tensor cores
        // for bf16 and E8M0-scaled weights; the f32 product for f32 scales), 300 (the f32 product)
        for (int m : new int[]{1, 3, 16, 64, 300}) {
            for (QuantFormat f : FORMATS) {
                QuantizedTensor whole = gpu.toDevice(f.quantize(randn(r, 0.1f, rows, k)));
                try {
                    QuantizedTensor w = new QuantizedTensor(whole.format(), 128, k, whole.codes().slice(0, 128, 256),
                            whole.scales().slice(0, 1, 2), null, 1f);
                    float[] wv = CudaQuantTest.dequantizeRef(new QuantizedTensor(w.format(), 128, k, gpu.toHost(w.codes()),
                            gpu.toHost(w.scales()), null, 1f));
                    products(f.name() + " rows 128..255, " + m + " rows of x", null, w, wv, r, m, 128, k);
                } finally {
                    gpu.free(whole);
                }
            }
            Tensor wb = randn(r, 0.1f, 96, k).to(DType.BF16);
            products("bf16, " + m + " rows of x", dev(wb), null, wb.toFloatArray(), r, m, 96, k);
        }
    }

    /**
     * {@code matmulF32Grouped} (DeepSeek V4's wo_a: 3 groups of 256 rows here, each against its own slice of x [m, 3,
     * 512]) in one call: at 1 to 4 rows the FP8 GEMV over the whole weight, against the double sums (the tolerance
     * above) and, at 3 and 4 rows, bit for bit the per-group {@code matmulF32} (the same kernel and warp shape: the
     * group's x slice and rows are all that differ); at 5 and 32 rows of an E8M0-scaled weight the strided-batched split
     * products, against the double sums; declined with y untouched (still NaN) for f32 scales above 4 rows and at 300.
     */
    @Test
    void theGroupedF32ProductTakesEveryGroupInOneCall() {
        SplittableRandom r = rng(84);
        int groups = 3;
        int rows = 256;
        int k = 512;
        int n = groups * rows;
        for (QuantFormat f : FORMATS) {
            QuantizedTensor w = f.quantize(randn(r, 0.1f, n, k));
            float[] wv = CudaQuantTest.dequantizeRef(w);
            QuantizedTensor dw = gpu.toDevice(w);
            try {
                for (int m : new int[]{1, 3, 4, 5, 32, 300}) {
                    String what = f.name() + " " + groups + " groups of " + rows + "x" + k + ", " + m + " rows";
                    float[] x = randn(r, 1f, m, groups, k).toFloatArray();
                    Tensor y = poisoned(DType.F32, m, groups, rows);
                    boolean took = gpu.matmulF32Grouped(dev(Tensor.of(x, m, groups, k)), dw, groups, y);
                    boolean expected = m <= 4 || (m <= 256 && f == Fp8Block128Ue8m0.INSTANCE);
                    assertEquals(expected, took, what + ": taken");
                    float[] got = gpu.toHost(y).toFloatArray();
                    if (!took) {
                        for (float v : got) {
                            assertTrue(Float.isNaN(v), what + ": declined, yet y was written");
                        }
                        continue;
                    }
                    for (int g = 0; g < groups; g++) {
                        float[] xg = new float[m * k];
                        float[] yg = new float[m * rows];
                        for (int t = 0; t < m; t++) {
                            System.arraycopy(x, (t * groups + g) * k, xg, t * k, k);
                            System.arraycopy(got, (t * groups + g) * rows, yg, t * rows, rows);
                        }
                        float[] wg = Arrays.copyOfRange(wv, g * rows * k, (g + 1) * rows * k);
                        check(what + ", group " + g, xg, wg, m, rows, k, false, yg);
                        if (m == 3 || m == 4) {
                            QuantizedTensor view = new QuantizedTensor(dw.format(), rows, k,
                                    dw.codes().slice(0, (long) g * rows, (long) (g + 1) * rows),
                                    dw.scales().slice(0, (long) g * rows / 128, (long) (g + 1) * rows / 128), null, 1f);
                            Tensor one = poisoned(DType.F32, m, rows);
                            gpu.matmulF32(dev(Tensor.of(xg, m, k)), null, view, one);
                            assertBitsEqual(what + ", group " + g + " against its own product", gpu.toHost(one).toFloatArray(), yg);
                        }
                    }
                }
            } finally {
                gpu.free(dw);
            }
        }
    }

    private void products(String what, Tensor w, QuantizedTensor q, float[] wv, SplittableRandom r, int m, int n, int k) {
        float[] x = randn(r, 1f, m, k).toFloatArray();
        Tensor y = poisoned(DType.F32, m, n);
        gpu.matmulF32(dev(Tensor.of(x, m, k)), w, q, y);
        check(what + " matmulF32", x, wv, m, n, k, false, gpu.toHost(y).toFloatArray());
        float[] dy = randn(r, 1f, m, n).toFloatArray();
        Tensor dx = poisoned(DType.F32, m, k);
        gpu.matmulTransposedF32(dev(Tensor.of(dy, m, n)), w, q, dx);
        check(what + " matmulTransposedF32", dy, wv, m, n, k, true, gpu.toHost(dx).toFloatArray());
    }

    /** y [m, n] = x [m, k] · wᵀ, or (transposed) dx [m, k] = dy [m, n] · w, for w [n, k]; in double. */
    private static void check(String what, float[] a, float[] w, int m, int n, int k, boolean transposed, float[] got) {
        int outCols = transposed ? k : n;
        int inner = transposed ? n : k;
        float[] ref = new float[m * outCols];
        double[] tol = new double[ref.length];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < outCols; j++) {
                double s = 0;
                double abs = 0;
                for (int t = 0; t < inner; t++) {
                    double p = (double) a[i * inner + t] * (transposed ? w[t * k + j] : w[j * k + t]);
                    s += p;
                    abs += Math.abs(p);
                }
                ref[i * outCols + j] = (float) s;
                tol[i * outCols + j] = 1e-6 + 1e-5 * abs;
            }
        }
        assertWithin(what, ref, got, tol);
    }
}
