package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The training-side operations of the CUDA backend against the scalar backend (whose versions are
 * the host references in HostOps) on seeded random data, over several shapes including ragged ones.
 * Tolerances, |got - ref| ≤ tol:
 * <ul>
 *   <li>gatherRows, addBias: bitwise (copies and one addition per element).</li>
 *   <li>axpy: 1e-7 + 1e-6·|ref| (the device may fuse the multiply-add); scatterAddRows: 1e-6 + 1e-6·|ref|
 *       (rows sent to one destination are summed in another order, and sums of unit-scale terms cancel).</li>
 *   <li>matmulTransposed, matmulTN with f32 weights (cuBLAS f32, no TF32): 1e-6 + 1e-5·Σ|terms|,
 *       Σ|terms| the sum of the products' magnitudes; bf16 weights (dy rounded to bf16):
 *       1e-6 + 2⁻⁷·Σ|terms|; quantized weights (dy and the dequantized weight rounded to bf16):
 *       1e-6 + 2⁻⁶·Σ|terms|.</li>
 *   <li>rmsNormBackward, swigluBackward, ropeBackward: 2e-6 + 2e-5·|ref| (f32 in another order; expf).</li>
 * </ul>
 */
class CudaTrainOpsTest extends CudaTestBase {
    /** {rows M, N, K}: dx [M, K] = dy [M, N] · w [N, K]. */
    private static final int[][] MNK = {{1, 1, 1}, {3, 17, 33}, {8, 64, 96}, {37, 129, 65}, {130, 257, 96}};

    private static Tensor host(DType dtype, long... shape) {
        return Tensor.allocate(Arena.ofAuto(), dtype, shape);
    }

    private static Tensor toBf16(Tensor f) {
        Tensor b = host(DType.BF16, f.shape());
        b.copyFrom(f);
        return b;
    }

    /** Σ_j |dy[i, j] · w[j, p]| for dx [m, k] = dy [m, n] · w [n, k]. */
    private static double[] absTransposed(float[] dy, float[] w, int m, int n, int k, double rel, double abs) {
        double[] out = new double[m * k];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double g = Math.abs(dy[i * n + j]);
                for (int p = 0; p < k; p++) {
                    out[i * k + p] += g * Math.abs(w[j * k + p]);
                }
            }
        }
        for (int i = 0; i < out.length; i++) {
            out[i] = abs + rel * out[i];
        }
        return out;
    }

    @Test
    void matmulTransposedF32AndBf16() {
        SplittableRandom r = rng(71);
        for (int[] s : MNK) {
            int m = s[0];
            int n = s[1];
            int k = s[2];
            Tensor dy = randn(r, 1f, m, n);
            Tensor w = randn(r, 0.5f, n, k);
            for (DType dt : new DType[]{DType.F32, DType.BF16}) {
                Tensor wt = dt == DType.F32 ? w : toBf16(w);
                Tensor ref = host(DType.F32, m, k);
                cpu.matmulTransposed(dy, wt, ref);
                Tensor out = poisoned(DType.F32, m, k);
                gpu.matmulTransposed(dev(dy), dev(wt), out);
                double[] tol = absTransposed(dy.toFloatArray(), wt.toFloatArray(), m, n, k,
                        dt == DType.F32 ? 1e-5 : 1.0 / 128, 1e-6);
                assertWithin("matmulTransposed " + dt + " " + Arrays.toString(s), ref.toFloatArray(),
                        gpu.toHost(out).toFloatArray(), tol);
            }
        }
    }

    @Test
    void matmulQuantizedTransposed() {
        SplittableRandom r = rng(72);
        int[][] shapes = {{1, 7, 64}, {5, 33, 160}, {40, 96, 128}};
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            for (int[] s : shapes) {
                int m = s[0];
                int n = s[1];
                int k = s[2];
                QuantizedTensor w = CudaQuantTest.random(format, r, n, k);
                Tensor dy = randn(r, 1f, m, n);
                Tensor ref = host(DType.F32, m, k);
                cpu.matmulQuantizedTransposed(dy, w, ref);
                QuantizedTensor dw = gpu.toDevice(w);
                try {
                    Tensor out = poisoned(DType.F32, m, k);
                    gpu.matmulQuantizedTransposed(dev(dy), dw, out);
                    double[] tol = absTransposed(dy.toFloatArray(), CudaQuantTest.dequantizeRef(w), m, n, k, 1.0 / 64, 1e-6);
                    assertWithin("matmulQuantizedTransposed " + format + " " + Arrays.toString(s), ref.toFloatArray(),
                            gpu.toHost(out).toFloatArray(), tol);
                } finally {
                    gpu.synchronize();
                    gpu.free(dw);
                }
            }
        }
    }

    @Test
    void matmulTNAccumulates() {
        SplittableRandom r = rng(73);
        int[][] shapes = {{1, 1, 1}, {5, 3, 7}, {64, 16, 33}, {300, 32, 129}};
        for (int[] s : shapes) {
            int m = s[0];
            int p = s[1];
            int q = s[2];
            Tensor a = randn(r, 1f, m, p);
            Tensor b = randn(r, 1f, m, q);
            Tensor c = randn(r, 1f, p, q);
            Tensor ref = host(DType.F32, p, q);
            ref.copyFrom(c);
            cpu.matmulTN(a, b, -0.75f, ref);
            Tensor dc = dev(c);
            gpu.matmulTN(dev(a), dev(b), -0.75f, dc);
            float[] as = a.toFloatArray();
            float[] bs = b.toFloatArray();
            double[] tol = new double[p * q];
            for (int i = 0; i < p; i++) {
                for (int j = 0; j < q; j++) {
                    double sum = 0;
                    for (int t = 0; t < m; t++) {
                        sum += Math.abs((double) as[t * p + i] * bs[t * q + j]);
                    }
                    tol[i * q + j] = 1e-6 + 1e-5 * (0.75 * sum + Math.abs(c.toFloatArray()[i * q + j]));
                }
            }
            assertWithin("matmulTN " + Arrays.toString(s), ref.toFloatArray(), gpu.toHost(dc).toFloatArray(), tol);
        }
    }

    @Test
    void matmulTNTakesRowStridedViews() {
        SplittableRandom r = rng(74);
        Tensor big = randn(r, 1f, 20, 48);
        Tensor a = big.slice(1, 0, 16);   // [20, 16], row stride 48
        Tensor b = big.slice(1, 16, 41);  // [20, 25], row stride 48
        Tensor ref = host(DType.F32, 16, 25);
        cpu.matmulTN(a, b, 1f, ref);
        Tensor dbig = dev(big);
        Tensor c = dev(host(DType.F32, 16, 25));
        gpu.matmulTN(dbig.slice(1, 0, 16), dbig.slice(1, 16, 41), 1f, c);
        assertClose("matmulTN of strided views", ref.toFloatArray(), gpu.toHost(c).toFloatArray(), 1e-5, 1e-5);
    }

    /**
     * blockGradTN (one strided-batched product) against the scalar backend's per-block products, on
     * random starting gradients (it accumulates), contiguous inputs and row-strided views;
     * tolerance 1e-6 + 1e-5·(Σ|terms| + |start|).
     */
    @Test
    void blockGradTNAccumulatesEveryBlock() {
        SplittableRandom r = rng(77);
        int[][] shapes = {{1, 1, 4}, {37, 5, 16}, {300, 3, 32}, {64, 80, 32}};   // M, blocks, bs
        for (int[] s : shapes) {
            int m = s[0];
            int blocks = s[1];
            int bs = s[2];
            int in = blocks * bs;
            for (boolean strided : new boolean[]{false, true}) {
                Tensor bigX = randn(r, 1f, m, in + (strided ? 8 : 0));
                Tensor bigG = randn(r, 1f, m, in + (strided ? 3 : 0));
                Tensor x = bigX.slice(1, 0, in);
                Tensor g = bigG.slice(1, 0, in);
                Tensor start = randn(r, 1f, blocks, bs, bs);
                Tensor ref = host(DType.F32, blocks, bs, bs);
                ref.copyFrom(start);
                cpu.blockGradTN(x, g, bs, ref);
                Tensor out = dev(start);
                gpu.blockGradTN(dev(bigX).slice(1, 0, in), dev(bigG).slice(1, 0, in), bs, out);
                float[] xs = x.contiguous().toFloatArray();
                float[] gs = g.contiguous().toFloatArray();
                float[] st = start.toFloatArray();
                double[] tol = new double[blocks * bs * bs];
                for (int blk = 0; blk < blocks; blk++) {
                    for (int i = 0; i < bs; i++) {
                        for (int j = 0; j < bs; j++) {
                            double sum = 0;
                            for (int t = 0; t < m; t++) {
                                sum += Math.abs((double) xs[t * in + blk * bs + i] * gs[t * in + blk * bs + j]);
                            }
                            int at = (blk * bs + i) * bs + j;
                            tol[at] = 1e-6 + 1e-5 * (sum + Math.abs(st[at]));
                        }
                    }
                }
                assertWithin("blockGradTN " + Arrays.toString(s) + (strided ? " strided" : ""), ref.toFloatArray(),
                        gpu.toHost(out).toFloatArray(), tol);
            }
        }
    }

    @Test
    void axpyAndAddBias() {
        SplittableRandom r = rng(75);
        for (long[] shape : new long[][]{{1, 1}, {7, 13}, {129, 257}, {3, 100_003}}) {
            Tensor x = randn(r, 2f, shape);
            Tensor y = randn(r, 2f, shape);
            Tensor ref = host(DType.F32, shape);
            ref.copyFrom(y);
            cpu.axpy(0.3f, x, ref);
            Tensor dy = dev(y);
            gpu.axpy(0.3f, dev(x), dy);
            assertClose("axpy " + Arrays.toString(shape), ref.toFloatArray(), gpu.toHost(dy).toFloatArray(), 1e-7, 1e-6);

            Tensor bias = randn(r, 1f, shape[1]);
            ref.copyFrom(y);
            cpu.addBias(ref, bias);
            Tensor dy2 = dev(y);
            gpu.addBias(dy2, dev(bias));
            assertClose("addBias " + Arrays.toString(shape), ref.toFloatArray(), gpu.toHost(dy2).toFloatArray(), 0, 0);
        }
    }

    @Test
    void gatherAndScatterAddRows() {
        SplittableRandom r = rng(76);
        int[][] shapes = {{1, 1, 1}, {10, 17, 7}, {64, 33, 200}, {5, 300, 1000}}; // {N source rows, n picked, H}
        for (int[] s : shapes) {
            int rowsN = s[0];
            int n = s[1];
            int h = s[2];
            int[] ids = new int[n];
            float[] wts = new float[n];
            for (int i = 0; i < n; i++) {
                ids[i] = r.nextInt(rowsN); // repeats included
                wts[i] = (float) (r.nextDouble() * 2 - 1);
            }
            Tensor rowIds = Tensor.ofInts(ids, n);
            Tensor weights = Tensor.of(wts, n);
            Tensor src = randn(r, 1f, rowsN, h);
            Tensor gathered = host(DType.F32, n, h);
            cpu.gatherRows(src, rowIds, gathered);
            Tensor dg = poisoned(DType.F32, n, h);
            Tensor dIds = dev(rowIds);
            gpu.gatherRows(dev(src), dIds, dg);
            assertClose("gatherRows " + Arrays.toString(s), gathered.toFloatArray(), gpu.toHost(dg).toFloatArray(), 0, 0);

            Tensor rows = randn(r, 1f, n, h);
            Tensor dst = randn(r, 1f, rowsN, h);
            for (boolean weighted : new boolean[]{false, true}) {
                Tensor ref = host(DType.F32, rowsN, h);
                ref.copyFrom(dst);
                cpu.scatterAddRows(rows, rowIds, weighted ? weights : null, ref);
                Tensor dd = dev(dst);
                gpu.scatterAddRows(dev(rows), dIds, weighted ? dev(weights) : null, dd);
                assertClose("scatterAddRows " + (weighted ? "weighted " : "") + Arrays.toString(s), ref.toFloatArray(),
                        gpu.toHost(dd).toFloatArray(), 1e-6, 1e-6); // duplicate rows summed in another order: cancellation
            }
        }
    }

    @Test
    void rowOutOfRangeIsReported() {
        Tensor src = dev(randn(rng(77), 1f, 4, 8));
        Tensor ids = dev(Tensor.ofInts(new int[]{0, 4}, 2));
        gpu.gatherRows(src, ids, poisoned(DType.F32, 2, 8));
        IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        assertTrue(e.getMessage().contains("row 4"), e.getMessage());
        gpu.scatterAddRows(poisoned(DType.F32, 2, 8), dev(Tensor.ofInts(new int[]{-1, 0}, 2)), null, src);
        e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        assertTrue(e.getMessage().contains("row -1"), e.getMessage());
    }

    @Test
    void rmsNormBackward() {
        SplittableRandom r = rng(78);
        for (int[] s : new int[][]{{1, 1}, {3, 17}, {64, 128}, {1001, 128}, {13, 512}, {9, 513}, {5, 2049}, {2, 5120}}) {
            Tensor x = randn(r, 2f, s[0], s[1]);
            Tensor dy = randn(r, 1f, s[0], s[1]);
            Tensor w = randn(r, 1.5f, s[1]);
            for (DType dt : new DType[]{DType.F32, DType.BF16}) {
                Tensor wt = dt == DType.F32 ? w : toBf16(w);
                Tensor ref = host(DType.F32, s[0], s[1]);
                cpu.rmsNormBackward(x, wt, 1e-6f, dy, ref);
                Tensor out = poisoned(DType.F32, s[0], s[1]);
                gpu.rmsNormBackward(dev(x), dev(wt), 1e-6f, dev(dy), out);
                assertClose("rmsNormBackward " + dt + " " + Arrays.toString(s), ref.toFloatArray(),
                        gpu.toHost(out).toFloatArray(), 2e-6, 2e-5);
                Tensor inPlace = dev(dy); // dx aliases dy
                gpu.rmsNormBackward(dev(x), dev(wt), 1e-6f, inPlace, inPlace);
                assertClose("rmsNormBackward in place " + dt + " " + Arrays.toString(s), ref.toFloatArray(),
                        gpu.toHost(inPlace).toFloatArray(), 2e-6, 2e-5);
            }
        }
    }

    @Test
    void swigluBackward() {
        SplittableRandom r = rng(79);
        for (long[] shape : new long[][]{{1}, {7, 33}, {129, 257}, {1_000_003}}) {
            Tensor g = randn(r, 6f, shape);
            Tensor u = randn(r, 2f, shape);
            Tensor d = randn(r, 1f, shape);
            Tensor rg = host(DType.F32, shape);
            Tensor ru = host(DType.F32, shape);
            cpu.swigluBackward(g, u, d, rg, ru);
            Tensor og = poisoned(DType.F32, shape);
            Tensor ou = poisoned(DType.F32, shape);
            gpu.swigluBackward(dev(g), dev(u), dev(d), og, ou);
            assertClose("swigluBackward dgate " + Arrays.toString(shape), rg.toFloatArray(), gpu.toHost(og).toFloatArray(), 2e-6, 2e-5);
            assertClose("swigluBackward dup " + Arrays.toString(shape), ru.toFloatArray(), gpu.toHost(ou).toFloatArray(), 2e-6, 2e-5);
        }
    }
}
