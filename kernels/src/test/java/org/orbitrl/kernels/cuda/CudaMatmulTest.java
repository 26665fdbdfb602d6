package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

/**
 * Dense {@code y = x·wᵀ} against the scalar backend, over ragged shapes on both sides of the
 * GEMV/cuBLAS switch (8 rows). Tolerances are per output element, scaled by
 * {@code S = Σ|x·w|} (the size of the rounding error of a dot product):
 * <ul>
 *   <li>f32 weights, and bf16 weights with ≤ 8 rows (f32 arithmetic, different summation order):
 *       |err| ≤ 1e-6 + 1e-5·S.</li>
 *   <li>bf16 weights with > 8 rows (x rounded to bf16 by design): checked exactly that way, against
 *       the reference fed with x rounded to bf16, |err| ≤ 1e-6 + 1e-5·S.</li>
 * </ul>
 */
class CudaMatmulTest extends CudaTestBase {
    private static final int[][] MNK = {
            {1, 1, 8}, {1, 17, 40}, {3, 64, 128}, {8, 96, 256}, {9, 96, 256}, {33, 70, 136},
            {64, 256, 512}, {1, 512, 2048}, {130, 33, 1032}, {2, 3, 5}, {17, 5, 3},
            {64, 32, 2048}, {7, 64, 8196}, {256, 16, 3000}, {257, 32, 2048}};

    @Test
    void f32Weights() {
        SplittableRandom r = rng(31);
        for (int[] s : MNK) {
            check(r, s[0], s[1], s[2], DType.F32);
        }
    }

    @Test
    void bf16Weights() {
        SplittableRandom r = rng(32);
        for (int[] s : MNK) {
            check(r, s[0], s[1], s[2], DType.BF16);
        }
    }

    private void check(SplittableRandom r, int m, int n, int k, DType wt) {
        Tensor x = randn(r, 1f, m, k);
        Tensor w = randn(r, 0.5f, n, k).to(wt);
        boolean roundsX = wt == DType.BF16 && !(m <= CudaMatmulOps.gemvRows() && k % 8 == 0);
        Tensor xRef = roundsX ? Tensor.of(bf16Round(x.toFloatArray()), m, k) : x;
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
        cpu.matmul(xRef, w, ref);
        Tensor y = poisoned(DType.F32, m, n);
        gpu.matmul(dev(x), dev(w), y);
        double[] s = absDot(xRef.toFloatArray(), w.toFloatArray(), m, n, k);
        double[] tol = new double[s.length];
        for (int i = 0; i < s.length; i++) {
            tol[i] = 1e-6 + 1e-5 * s[i];
        }
        assertWithin("matmul " + wt + " m=" + m + " n=" + n + " k=" + k + (roundsX ? " (x as bf16)" : ""),
                ref.toFloatArray(), gpu.toHost(y).toFloatArray(), tol);
    }

    /**
     * {@code y += alpha · x · wᵀ} (a LoRA's B into its projection's output) against a double reference: f32 w in one
     * cuBLAS product with β = 1, bf16 w in two steps (x rounded to bf16 where the product rounds it);
     * |err| ≤ 1e-6 + 1e-6·|y0| + 1e-5·|alpha|·S.
     */
    @Test
    void matmulAxpyAddsTheScaledProduct() {
        SplittableRandom r = rng(34);
        for (int[] s : new int[][]{{1, 4096, 32}, {64, 2048, 32}, {64, 32, 2048}, {37, 100, 16}, {300, 33, 40}}) {
            for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                int m = s[0];
                int n = s[1];
                int k = s[2];
                float alpha = 0.75f;
                float[] x = randn(r, 1f, m, k).toFloatArray();
                Tensor w = randn(r, 0.5f, n, k).to(wt);
                float[] y0 = randn(r, 1f, m, n).toFloatArray();
                boolean roundsX = wt == DType.BF16 && !(m <= CudaMatmulOps.gemvRows() && k % 8 == 0);
                float[] xr = roundsX ? bf16Round(x) : x;
                float[] wf = w.toFloatArray();
                float[] want = new float[m * n];
                double[] tol = new double[m * n];
                for (int i = 0; i < m; i++) {
                    for (int o = 0; o < n; o++) {
                        double d = 0;
                        double abs = 0;
                        for (int j = 0; j < k; j++) {
                            double v = (double) xr[i * k + j] * wf[o * k + j];
                            d += v;
                            abs += Math.abs(v);
                        }
                        want[i * n + o] = (float) (y0[i * n + o] + alpha * d);
                        tol[i * n + o] = 1e-6 + 1e-6 * Math.abs(y0[i * n + o]) + 1e-5 * alpha * abs;
                    }
                }
                Tensor y = dev(Tensor.of(y0, m, n));
                gpu.matmulAxpy(dev(Tensor.of(x, m, k)), dev(w), alpha, y);
                assertWithin("matmulAxpy " + wt + " m=" + m + " n=" + n + " k=" + k, want, gpu.toHost(y).toFloatArray(), tol);
            }
        }
    }

    /**
     * {@code dx += alpha · dy · w} (a LoRA's {@code (dy·B)·A} into the input gradient) against a double reference: f32 w in
     * one cuBLAS product with β = 1 (training's shapes: 2048 rows, rank 32 into 2048 and 4096 columns, and ragged ones),
     * bf16 w in two steps; |err| ≤ 1e-6 + 1e-6·|dx0| + 1e-5·|alpha|·S.
     */
    @Test
    void matmulTransposedAxpyAddsTheScaledProduct() {
        SplittableRandom r = rng(36);
        for (int[] s : new int[][]{{2048, 32, 2048}, {300, 32, 4096}, {37, 16, 100}, {5, 33, 40}}) {   // rows, N, K
            for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                int m = s[0];
                int n = s[1];
                int k = s[2];
                float alpha = -0.625f;
                float[] dy = randn(r, 1f, m, n).toFloatArray();
                Tensor w = randn(r, 0.5f, n, k).to(wt);
                float[] dx0 = randn(r, 1f, m, k).toFloatArray();
                boolean roundsDy = wt == DType.BF16;   // the bf16 transposed product rounds dy to bf16
                float[] dyr = roundsDy ? bf16Round(dy) : dy;
                float[] wf = w.toFloatArray();
                float[] want = new float[m * k];
                double[] tol = new double[m * k];
                for (int i = 0; i < m; i++) {
                    for (int c = 0; c < k; c++) {
                        double d = 0;
                        double abs = 0;
                        for (int j = 0; j < n; j++) {
                            double v = (double) dyr[i * n + j] * wf[j * k + c];
                            d += v;
                            abs += Math.abs(v);
                        }
                        want[i * k + c] = (float) (dx0[i * k + c] + alpha * d);
                        tol[i * k + c] = 1e-6 + 1e-6 * Math.abs(dx0[i * k + c]) + 1e-5 * Math.abs(alpha) * abs;
                    }
                }
                Tensor dx = dev(Tensor.of(dx0, m, k));
                gpu.matmulTransposedAxpy(dev(Tensor.of(dy, m, n)), dev(w), alpha, dx);
                assertWithin("matmulTransposedAxpy " + wt + " m=" + m + " n=" + n + " k=" + k, want, gpu.toHost(dx).toFloatArray(), tol);
            }
        }
    }

    /**
     * f32 products of a decode batch against a few rows of w ({@code narrow_matmul_f32}, up to
     * {@link CudaMatmulOps#NARROW_MAX_ROWS} rows): a row's result does not depend on the batch around it, bit for bit
     * (each row of a 64-row product against the same row alone), with K over one and over several passes of registers.
     */
    @Test
    void narrowF32ProductsAreBatchInvariant() {
        SplittableRandom r = rng(35);
        for (int[] s : new int[][]{{64, 32, 2048}, {33, 64, 4100}, {9, 8, 768}}) {
            int m = s[0];
            int n = s[1];
            int k = s[2];
            float[] x = randn(r, 1f, m, k).toFloatArray();
            Tensor w = dev(randn(r, 0.5f, n, k));
            Tensor y = poisoned(DType.F32, m, n);
            gpu.matmul(dev(Tensor.of(x, m, k)), w, y);
            float[] all = gpu.toHost(y).toFloatArray();
            for (int i : new int[]{0, m / 2, m - 1}) {
                float[] row = new float[k];
                System.arraycopy(x, i * k, row, 0, k);
                Tensor y1 = poisoned(DType.F32, 1, n);
                gpu.matmul(dev(Tensor.of(row, 1, k)), w, y1);
                float[] one = gpu.toHost(y1).toFloatArray();
                for (int o = 0; o < n; o++) {
                    org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(all[i * n + o]), Float.floatToRawIntBits(one[o]),
                            "m=" + m + " n=" + n + " k=" + k + ": row " + i + " column " + o + " alone " + one[o] + ", in the batch "
                                    + all[i * n + o]);
                }
            }
        }
    }

    /**
     * Products that read the same x ({@link CudaBackend#matmulShared}: q, k and v, or their LoRAs' A) give the bits of a
     * {@code matmul} each, on every path: f32 LoRA A shapes in one {@code narrow_matmul3_f32} launch (one to three
     * weights, ragged rows, K over one and several register passes), bf16 projections above the GEMV's rows with x
     * rounded once (Qwen3's q/k/v shapes, scaled down), and what falls back to a product each (over 256 rows; mixed
     * dtypes); the first weight's result also against the scalar reference (1e-6 + 1e-5·S).
     */
    @Test
    void sharedInputProductsEqualAProductEach() {
        SplittableRandom r = rng(36);
        int[][][] cases = {
                {{64, 2048}, {32, 32, 32}}, {{1, 2048}, {32, 32, 32}}, {{9, 4100}, {64, 8, 17}}, {{256, 768}, {16}},
                {{5, 512}, {24, 40}}, {{300, 256}, {32, 32, 32}}};
        for (int[][] c : cases) {
            sharedCase(r, c[0][0], c[0][1], c[1], DType.F32, null);
        }
        for (int[] mk : new int[][]{{64, 512}, {17, 256}, {8, 256}, {1, 256}}) {
            sharedCase(r, mk[0], mk[1], new int[]{1024, 128, 128}, DType.BF16, null);
        }
        sharedCase(r, 64, 256, new int[]{32, 48}, DType.F32, DType.BF16);
    }

    private void sharedCase(SplittableRandom r, int m, int k, int[] ns, DType wt, DType secondWt) {
        Tensor x = randn(r, 1f, m, k);
        Tensor dx = dev(x);
        Tensor[] hw = new Tensor[ns.length];
        Tensor[] ws = new Tensor[ns.length];
        Tensor[] ys = new Tensor[ns.length];
        for (int i = 0; i < ns.length; i++) {
            hw[i] = randn(r, 0.5f, ns[i], k).to(i == 1 && secondWt != null ? secondWt : wt);
            ws[i] = dev(hw[i]);
            ys[i] = poisoned(DType.F32, m, ns[i]);
        }
        gpu.matmulShared(dx, ws, ys);
        String what = "matmulShared " + wt + (secondWt != null ? "+" + secondWt : "") + " m=" + m + " k=" + k + " n="
                + java.util.Arrays.toString(ns);
        for (int i = 0; i < ns.length; i++) {
            Tensor one = poisoned(DType.F32, m, ns[i]);
            gpu.matmul(dx, ws[i], one);
            float[] want = gpu.toHost(one).toFloatArray();
            float[] got = gpu.toHost(ys[i]).toFloatArray();
            for (int j = 0; j < want.length; j++) {
                org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(want[j]), Float.floatToRawIntBits(got[j]),
                        what + ": weight " + i + " element " + j + " alone " + want[j] + ", shared " + got[j]);
            }
        }
        boolean roundsX = hw[0].dtype() == DType.BF16 && !(m <= CudaMatmulOps.gemvRows() && k % 8 == 0);
        Tensor xRef = roundsX ? Tensor.of(bf16Round(x.toFloatArray()), m, k) : x;
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, ns[0]);
        cpu.matmul(xRef, hw[0], ref);
        double[] s = absDot(xRef.toFloatArray(), hw[0].toFloatArray(), m, ns[0], k);
        double[] tol = new double[s.length];
        for (int i = 0; i < s.length; i++) {
            tol[i] = 1e-6 + 1e-5 * s[i];
        }
        assertWithin(what + " against the reference", ref.toFloatArray(), gpu.toHost(ys[0]).toFloatArray(), tol);
    }

    @Test
    void leadingDimensionsAreRows() {
        SplittableRandom r = rng(33);
        Tensor x = randn(r, 1f, 2, 3, 64); // 6 rows
        Tensor w = randn(r, 1f, 40, 64).to(DType.BF16);
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, 2, 3, 40);
        cpu.matmul(x, w, ref);
        Tensor y = poisoned(DType.F32, 2, 3, 40);
        gpu.matmul(dev(x), dev(w), y);
        double[] s = absDot(x.toFloatArray(), w.toFloatArray(), 6, 40, 64);
        double[] tol = new double[s.length];
        for (int i = 0; i < s.length; i++) {
            tol[i] = 1e-6 + 1e-5 * s[i];
        }
        assertWithin("matmul [2, 3, 64] x [40, 64]", ref.toFloatArray(), gpu.toHost(y).toFloatArray(), tol);
    }
}
