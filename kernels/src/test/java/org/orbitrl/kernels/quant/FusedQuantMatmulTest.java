package org.orbitrl.kernels.quant;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.ScalarBackend;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The fused kernel against dequantize-then-multiply and against its documented summation order.
 * The JVM picks 16-lane, 8-lane or scalar code from the hardware; run with {@code
 * -Dorbit.test.heap="-Xmx2g -XX:UseAVX=2"} (or {@code =0}) to check the other paths give the same bits.
 */
class FusedQuantMatmulTest {

    private static final int[] MS = {1, 3, 4, 5, 8, 13};

    /** Column counts per format: multiples of the group size, several not multiples of 64. */
    private static int[] ks(QuantFormat f) {
        return switch (f.groupSize()) {
            case 16 -> new int[]{16, 48, 80, 256};
            case 32 -> new int[]{32, 96, 160, 256};
            default -> new int[]{1, 37, 100, 257}; // FP8 blocks: any K, partial blocks
        };
    }

    private static Tensor x(long seed, int m, int k) {
        SplittableRandom rnd = new SplittableRandom(seed);
        float[] v = new float[m * k];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) QuantTesting.nextGaussian(rnd);
        }
        return Tensor.of(v, m, k);
    }

    /**
     * The documented order, written independently: value p of 16-value unit u goes to partial sum
     * 16·(u mod 2) + 2·(p mod 8) + p/8; 32 FMA chains in increasing k, then a halving tree.
     */
    private static float canonicalDot(float[] x, int xOff, float[] w, int wOff, int k) {
        float[] acc = new float[32];
        for (int q = 0; q < k; q++) {
            int p = q % 16;
            int lane = 16 * ((q / 16) % 2) + 2 * (p % 8) + p / 8;
            acc[lane] = Math.fma(x[xOff + q], w[wOff + q], acc[lane]);
        }
        for (int h = 16; h >= 1; h /= 2) {
            for (int l = 0; l < h; l++) {
                acc[l] += acc[l + h];
            }
        }
        return acc[0];
    }

    private static float[] fused(Tensor x, QuantizedTensor w) {
        Tensor y = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, x.dim(0), w.rows());
        FusedQuantMatmul.matmul(x, w, y, 0, Math.toIntExact(w.rows()));
        return y.toFloatArray();
    }

    @Test
    void matchesDequantizeThenMultiplyForEveryFormatAndShape() {
        ScalarBackend scalar = new ScalarBackend();
        long seed = 100;
        for (QuantFormat f : QuantFormats.all()) {
            for (int k : ks(f)) {
                for (int n : new int[]{1, 5, 13}) {
                    QuantizedTensor w = f.quantize(QuantTesting.gaussian(seed++, n, k));
                    Tensor dense = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, n, k);
                    scalar.dequantize(w, dense);
                    float[] wd = dense.toFloatArray();
                    for (int m : MS) {
                        Tensor x = x(seed++, m, k);
                        Tensor yRef = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, m, n);
                        scalar.matmul(x, dense, yRef);
                        float[] ref = yRef.toFloatArray();
                        float[] got = fused(x, w);
                        float[] xs = x.toFloatArray();
                        // Two summation orders of the same products: each within (K+1)·2^-24·Σ|x·w| of the exact sum.
                        float[] bound = new float[m * n];
                        float[] canonical = new float[m * n];
                        for (int i = 0; i < m; i++) {
                            for (int j = 0; j < n; j++) {
                                double abs = 0;
                                for (int p = 0; p < k; p++) {
                                    abs += Math.abs((double) xs[i * k + p] * wd[j * k + p]);
                                }
                                bound[i * n + j] = (float) (2 * (k + 1) * 0x1p-24 * abs + Float.MIN_NORMAL);
                                canonical[i * n + j] = canonicalDot(xs, i * k, wd, j * k, k);
                            }
                        }
                        String what = f.name() + " M=" + m + " N=" + n + " K=" + k;
                        Mismatches.within(what + " fused vs dequantize+matmul", ref, got, bound);
                        Mismatches.bitwise(what + " fused vs the canonical order", canonical, got);
                    }
                }
            }
        }
    }

    @Test
    void resultBitsDoNotDependOnBatchPositionOrColumnSplit() {
        for (QuantFormat f : QuantFormats.all()) {
            int k = f.groupSize() == 128 ? 300 : 512;
            int n = 24;
            QuantizedTensor w = f.quantize(QuantTesting.gaussian(7, n, k));
            Tensor x = x(8, 64, k);
            float[] all = fused(x, w);                                   // [64, N] in one call
            float[] xs = x.toFloatArray();
            // Each row alone (M = 1), and inside a batch of 7 at position 3 (rows 3 tiles and tail).
            for (int i = 0; i < 64; i += 5) {
                float[] alone = fused(x.slice(0, i, i + 1).contiguous(), w);
                Mismatches.bitwise(f.name() + " row " + i + " alone vs in M=64", slice(all, i, n), alone);
                List<float[]> batch = new ArrayList<>();
                for (int b = 0; b < 7; b++) {
                    batch.add(b == 3 ? java.util.Arrays.copyOfRange(xs, i * k, (i + 1) * k) : slice(xs, (i + b + 1) % 64, k));
                }
                float[] packed = new float[7 * k];
                for (int b = 0; b < 7; b++) {
                    System.arraycopy(batch.get(b), 0, packed, b * k, k);
                }
                float[] inBatch = fused(Tensor.of(packed, 7, k), w);
                Mismatches.bitwise(f.name() + " row " + i + " at position 3 of M=7 vs in M=64", slice(all, i, n),
                        slice(inBatch, 3, n));
            }
            // Columns computed in three uneven ranges, as threads would.
            Tensor y = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, 64, n);
            FusedQuantMatmul.matmul(x, w, y, 0, 5);
            FusedQuantMatmul.matmul(x, w, y, 5, 6);
            FusedQuantMatmul.matmul(x, w, y, 6, n);
            Mismatches.bitwise(f.name() + " split over N", all, y.toFloatArray());
        }
    }

    private static float[] slice(float[] rowMajor, int row, int width) {
        return java.util.Arrays.copyOfRange(rowMajor, row * width, (row + 1) * width);
    }

    @Test
    void badArgumentsAreNamed() {
        QuantizedTensor w = Int4G32.INSTANCE.quantize(QuantTesting.gaussian(3, 8, 64));
        Tensor y = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, 2, 8);
        var k = assertThrows(IllegalArgumentException.class, () -> FusedQuantMatmul.matmul(x(1, 2, 96), w, y, 0, 8));
        assertTrue(k.getMessage().contains("x must be [M, 64]"), k.getMessage());
        var yShape = assertThrows(IllegalArgumentException.class, () -> FusedQuantMatmul.matmul(x(1, 2, 64), w,
                Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, 3, 8), 0, 8));
        assertTrue(yShape.getMessage().contains("y must be [2, 8]"), yShape.getMessage());
        var range = assertThrows(IllegalArgumentException.class, () -> FusedQuantMatmul.matmul(x(1, 2, 64), w, y, 4, 9));
        assertTrue(range.getMessage().contains("[4, 9)"), range.getMessage());
        var dtype = assertThrows(IllegalArgumentException.class,
                () -> FusedQuantMatmul.matmul(x(1, 2, 64).to(DType.BF16), w, y, 0, 8));
        assertTrue(dtype.getMessage().contains("must be f32"), dtype.getMessage());
        var groups = assertThrows(IllegalArgumentException.class, () -> Mxfp4.INSTANCE.quantize(QuantTesting.gaussian(1, 8, 80)));
        assertTrue(groups.getMessage().contains("multiple of its group size 32"), groups.getMessage());
    }
}
