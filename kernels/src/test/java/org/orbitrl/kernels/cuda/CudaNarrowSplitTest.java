package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

/**
 * f32 products of a few rows of w over a long K in splits ({@link NarrowSplitK}: DeepSeek V4's hyper-connection mix,
 * y [M, 24] = x [M, 16384] · wᵀ, and a wider w of 40 rows): against a double reference, batch-invariant bit for bit,
 * the bits of the order the kernel states (which the single-pass sums do not give), and replayed from a CUDA graph.
 *
 * <p>Tolerance against the double reference: {@code |err| ≤ 1e-6 + 4e-6·S}, {@code S = Σ_k |x_k·w_k|}. A value's sum passes
 * through at most 16 multiply-adds of a lane, 5 levels of the warp's tree, 2 splits of a lane and 5 more levels: 28
 * roundings, 28·2⁻²⁴ ≈ 1.7e-6 of S at worst. A lost or doubled split (512 products, about 4 here) is hundreds of times the
 * tolerance. With the splits off ({@code narrow_rows}: 64 multiply-adds a lane a pass of 2048 values, up to 14 passes
 * added in order) the bound is about 83 roundings, and the tolerance {@link CudaMatmulTest}'s {@code 1e-6 + 1e-5·S}.
 */
class CudaNarrowSplitTest extends CudaTestBase {

    @Test
    void longKProductsMatchADoubleReference() {
        SplittableRandom r = rng(2201);
        int[][] mnk = {{1, 24, 16384}, {3, 24, 16384}, {32, 24, 16384}, {1, 40, 16384}, {3, 40, 16384}, {32, 40, 16384},
                {3, 24, 28672}, {9, 40, 16532}};   // DeepSeek V4-Pro's mix (4 · 7168); a last split of 37 pieces
        for (int[] s : mnk) {
            int m = s[0];
            int n = s[1];
            int k = s[2];
            float[] x = randn(r, 1f, m, k).toFloatArray();
            float[] w = randn(r, 0.5f, n, k).toFloatArray();
            double[] s1 = absDot(x, w, m, n, k);
            double[] tol = new double[s1.length];
            double[] tolSingle = new double[s1.length];
            for (int i = 0; i < tol.length; i++) {
                tol[i] = 1e-6 + 4e-6 * s1[i];
                tolSingle[i] = 1e-6 + 1e-5 * s1[i];
            }
            String what = "matmul m=" + m + " n=" + n + " k=" + k;
            Tensor dx = dev(Tensor.of(x, m, k));
            Tensor dw = dev(Tensor.of(w, n, k));
            Tensor y = poisoned(DType.F32, m, n);
            gpu.matmul(dx, dw, y);
            float[] ref = reference(x, w, m, n, k);
            assertWithin(what, ref, gpu.toHost(y).toFloatArray(), tol);
            Tensor single = poisoned(DType.F32, m, n);
            withProperty("orbit.cuda.narrowSplit", "off", () -> gpu.matmul(dx, dw, single));
            assertWithin(what + ", splits off", ref, gpu.toHost(single).toFloatArray(), tolSingle);
        }
    }

    /** A row of x gives the same bits alone and as any row of a 32-row call: the split count follows from K alone. */
    @Test
    void aRowHasTheSameBitsAloneAndInABatch() {
        SplittableRandom r = rng(2202);
        int m = 32;
        int k = 16384;
        for (int n : new int[]{24, 40}) {
            float[] x = randn(r, 1f, m, k).toFloatArray();
            Tensor w = dev(randn(r, 0.5f, n, k));
            Tensor y = poisoned(DType.F32, m, n);
            gpu.matmul(dev(Tensor.of(x, m, k)), w, y);
            float[] all = gpu.toHost(y).toFloatArray();
            for (int i : new int[]{0, 7, 8, 13, m - 1}) {
                float[] row = new float[k];
                System.arraycopy(x, i * k, row, 0, k);
                Tensor y1 = poisoned(DType.F32, 1, n);
                gpu.matmul(dev(Tensor.of(row, 1, k)), w, y1);
                float[] inBatch = new float[n];
                System.arraycopy(all, i * n, inBatch, 0, n);
                assertBitsEqual("n=" + n + " k=" + k + ": row " + i + " alone and among " + m, inBatch, gpu.toHost(y1).toFloatArray());
            }
        }
    }

    /**
     * The split form's bits are those of its stated order, computed here with the same f32 operations: each split a warp's
     * lanes' multiply-adds over their pieces in order then a butterfly across the warp, the splits a lane's sum in order
     * then the butterfly again. Shows the products were made in splits, and that the order is the one the kernel states.
     */
    @Test
    void splitSumsFollowTheirStatedOrder() {
        SplittableRandom r = rng(2203);
        for (int[] s : new int[][]{{3, 24, 16384}, {9, 40, 16532}}) {
            int m = s[0];
            int n = s[1];
            int k = s[2];
            float[] x = randn(r, 1f, m, k).toFloatArray();
            float[] w = randn(r, 0.5f, n, k).toFloatArray();
            Tensor y = poisoned(DType.F32, m, n);
            gpu.matmul(dev(Tensor.of(x, m, k)), dev(Tensor.of(w, n, k)), y);
            assertBitsEqual("m=" + m + " n=" + n + " k=" + k + " against the stated order", splitOrder(x, w, m, n, k),
                    gpu.toHost(y).toFloatArray());
        }
    }

    /**
     * Replays of a captured product read x afresh and find their tickets re-armed: x doubled between replays doubles y
     * exactly (every product and sum scales by 2).
     */
    @Test
    void graphReplaysGiveTheEagerBits() {
        SplittableRandom r = rng(2204);
        int m = 5;
        int n = 24;
        int k = 16384;
        Tensor x = dev(randn(r, 1f, m, k));
        Tensor w = dev(randn(r, 0.5f, n, k));
        Tensor y = poisoned(DType.F32, m, n);
        gpu.matmul(x, w, y);   // the scratch grows here, outside the capture
        float[] eager = gpu.toHost(y).toFloatArray();
        try (CudaGraph g = CudaGraph.capture(gpu.stream(), () -> gpu.matmul(x, w, y))) {
            for (int replay = 0; replay < 3; replay++) {
                g.launch(gpu.stream());
                float[] want = new float[eager.length];
                for (int i = 0; i < want.length; i++) {
                    want[i] = eager[i] * (1 << replay);
                }
                assertBitsEqual("replay " + replay + " after x doubled " + replay + " times", want, gpu.toHost(y).toFloatArray());
                gpu.scale(x, 2f, x);
            }
        }
    }

    /** y = x · wᵀ in double. */
    private static float[] reference(float[] x, float[] w, int m, int n, int k) {
        float[] y = new float[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double d = 0;
                for (int p = 0; p < k; p++) {
                    d += (double) x[i * k + p] * w[j * k + p];
                }
                y[i * n + j] = (float) d;
            }
        }
        return y;
    }

    /** narrow.cuh's narrow_split order in f32: splits of 128 16-byte pieces, lane l the pieces l, l + 32, l + 64, l + 96. */
    private static float[] splitOrder(float[] x, float[] w, int m, int n, int k) {
        int pieces = NarrowSplitK.SPLIT_VALUES / 4;
        int splits = NarrowSplitK.splits(k);
        float[] y = new float[m * n];
        float[] lanes = new float[32];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                float[] part = new float[splits];
                for (int s = 0; s < splits; s++) {
                    int p0 = s * pieces;
                    int kl = Math.min(pieces, k / 4 - p0);
                    for (int l = 0; l < 32; l++) {
                        float d = 0f;
                        for (int q = l; q < kl; q += 32) {
                            for (int c = 0; c < 4; c++) {
                                int at = 4 * (p0 + q) + c;
                                d = Math.fma(w[j * k + at], x[i * k + at], d);
                            }
                        }
                        lanes[l] = d;
                    }
                    part[s] = butterfly(lanes);
                }
                for (int l = 0; l < 32; l++) {
                    float d = 0f;
                    for (int s = l; s < splits; s += 32) {
                        d += part[s];
                    }
                    lanes[l] = d;
                }
                y[i * n + j] = butterfly(lanes);
            }
        }
        return y;
    }

    /** common.cuh's warp_sum: v += (v of lane ^ o) for o = 16, 8, 4, 2, 1; lane 0's value. */
    private static float butterfly(float[] lanes) {
        float[] v = lanes.clone();
        for (int o = 16; o > 0; o >>= 1) {
            float[] next = new float[32];
            for (int l = 0; l < 32; l++) {
                next[l] = v[l] + v[l ^ o];
            }
            v = next;
        }
        return v[0];
    }
}
