package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * RMSNorm of rows longer than a model's hidden size (DeepSeek V4's hyper-connection norm over 4 streams of 4096, and
 * twice that): {@code rmsnorm_v4_f32} at 512 and 1024 threads a row ({@link CudaRowOps#v4Block}), against a double
 * reference, batch-invariant bit for bit, and the launch that writes them.
 *
 * <p>Tolerance against the double reference: {@code |err| ≤ 1e-7 + 5e-6·|ref|}. A thread adds its 32 squares in order
 * and the block sums the threads' in a tree of 10 levels, so the sum of squares (all terms positive) carries at most
 * 42·2⁻²⁴ ≈ 2.5e-6 of relative error; the scale 1/sqrt(mean + eps) half of that plus two roundings, and the two
 * products two more: about 1.5e-6 at worst. A lost or doubled piece of the row moves every value by far more.
 */
class CudaWideNormTest extends CudaTestBase {
    /** Rows by width: 512 threads (16384), 1024 (16388: a last piece short of a full pass; 32768: the longest), and one past. */
    private static final int[][] ROWS_BY_WIDTH = {{1, 16384}, {5, 16384}, {3, 16388}, {1, 32768}, {4, 32768}, {2, 32772}};

    @Test
    void wideRowsMatchADoubleReference() {
        SplittableRandom r = rng(2101);
        float eps = 1e-6f;
        for (int[] rh : ROWS_BY_WIDTH) {
            int rows = rh[0];
            int h = rh[1];
            float[] x = randn(r, 3f, rows, h).toFloatArray();
            for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                Tensor w = randn(r, 1.5f, h).to(wt);
                float[] wv = w.to(DType.F32).toFloatArray();
                Tensor dx = dev(Tensor.of(x, rows, h));
                Tensor dw = dev(w);
                Tensor out = poisoned(DType.F32, rows, h);
                gpu.rmsNorm(dx, dw, eps, out);
                String what = "rmsNorm " + wt + " [" + rows + ", " + h + "]";
                assertClose(what, reference(x, wv, rows, h, eps), gpu.toHost(out).toFloatArray(), 1e-7, 5e-6);
                // the one launch is the v4 kernel's where it takes the row: left out, the output keeps its poison
                Tensor omitted = poisoned(DType.F32, rows, h);
                withProperty("orbit.cuda.omitKernels", "^rmsnorm_v4_f32$", () -> gpu.rmsNorm(dx, dw, eps, omitted));
                boolean v4 = CudaRowOps.v4Block(h) > 0;
                assertEquals(v4, Float.isNaN(gpu.toHost(omitted).toFloatArray()[rows * h - 1]),
                        what + (v4 ? ": written by another launch than rmsnorm_v4_f32" : ": rmsnorm_f32's row left unwritten"));
            }
        }
        assertEquals(512, CudaRowOps.v4Block(16384), "the hyper-connection norm's row");
        assertEquals(1024, CudaRowOps.v4Block(32768), "the longest row");
        assertEquals(0, CudaRowOps.v4Block(32772), "past the longest");
    }

    /**
     * A row's bits are the same alone and in a call of 7 rows, and from a 16-byte aligned buffer and one that is not
     * (the kernel's one-value loads): the block and the order of the sums follow from h alone.
     */
    @Test
    void aWideRowHasTheSameBitsAloneAndInABatch() {
        SplittableRandom r = rng(2102);
        int rows = 7;
        for (int h : new int[]{16384, 32768}) {
            for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                float[] xs = randn(r, 2f, rows, h).toFloatArray();
                Tensor w = dev(randn(r, 1f, h).to(wt));
                Tensor out = poisoned(DType.F32, rows, h);
                gpu.rmsNorm(dev(Tensor.of(xs, rows, h)), w, 1e-6f, out);
                float[] batch = gpu.toHost(out).toFloatArray();
                for (int i : new int[]{0, 4, rows - 1}) {
                    float[] row = new float[h];
                    System.arraycopy(xs, i * h, row, 0, h);
                    Tensor one = poisoned(DType.F32, 1, h);
                    gpu.rmsNorm(dev(Tensor.of(row, 1, h)), w, 1e-6f, one);
                    float[] inBatch = new float[h];
                    System.arraycopy(batch, i * h, inBatch, 0, h);
                    assertBitsEqual("h " + h + " " + wt + ": row " + i + " alone and among " + rows, inBatch,
                            gpu.toHost(one).toFloatArray());
                }
                float[] shifted = new float[rows * h + 1];
                System.arraycopy(xs, 0, shifted, 1, rows * h);
                Tensor unaligned = dev(Tensor.of(shifted, 1, rows * h + 1)).slice(1, 1, rows * h + 1).reshape(rows, h);
                Tensor outShifted = dev(Tensor.of(new float[rows * h + 1], 1, rows * h + 1)).slice(1, 1, rows * h + 1).reshape(rows, h);
                gpu.rmsNorm(unaligned, w, 1e-6f, outShifted);
                assertBitsEqual("h " + h + " " + wt + ": aligned and unaligned", batch, gpu.toHost(outShifted).toFloatArray());
            }
        }
    }

    /** The residual add and the norm of a wide row in one launch give the bits of {@code add} then {@code rmsNorm}. */
    @Test
    void addRmsNormOfAWideRowGivesTheBitsOfTheAddAndTheNorm() {
        SplittableRandom r = rng(2103);
        for (int[] rh : new int[][]{{3, 16384}, {2, 32768}}) {
            int rows = rh[0];
            int h = rh[1];
            Tensor a = dev(randn(r, 3f, rows, h));
            Tensor b = dev(randn(r, 1f, rows, h));
            Tensor w = dev(randn(r, 1.5f, h).to(DType.BF16));
            Tensor sum = poisoned(DType.F32, rows, h);
            Tensor out = poisoned(DType.F32, rows, h);
            gpu.addRmsNorm(a, b, sum, w, 1e-6f, out);
            Tensor wantSum = poisoned(DType.F32, rows, h);
            Tensor want = poisoned(DType.F32, rows, h);
            gpu.add(a, b, wantSum);
            gpu.rmsNorm(wantSum, w, 1e-6f, want);
            String what = "addRmsNorm [" + rows + ", " + h + "]";
            assertBitsEqual(what + ": sum", gpu.toHost(wantSum).toFloatArray(), gpu.toHost(sum).toFloatArray());
            assertBitsEqual(what + ": norm", gpu.toHost(want).toFloatArray(), gpu.toHost(out).toFloatArray());
            Tensor omitted = poisoned(DType.F32, rows, h);
            withProperty("orbit.cuda.omitKernels", "^add_rmsnorm_v4_f32$", () -> gpu.addRmsNorm(a, b, sum, w, 1e-6f, omitted));
            assertTrue(Float.isNaN(gpu.toHost(omitted).toFloatArray()[0]), what + ": written by another launch than the fused one");
        }
    }

    /**
     * {@code -Dorbit.cuda.l2Ahead=norm}: frozen tensors handed to {@link CudaBackend#prefetchFrozen} go with the next
     * residual add and norm ({@code add_rmsnorm_v4_ask_f32}, one block an SM past the rows asking the L2 for their lines):
     * the sum and the norm are the plain kernel's bit for bit (one row and three, a model's hidden size), the asked tensors
     * keep their values, the asks are carried by one launch (the next is the plain kernel's: with it left out the output
     * keeps its poison), and the launch that carried them is the asking kernel's (left out: poison).
     */
    @Test
    void addNormThatAsksTheL2AheadGivesThePlainKernelsBits() {
        SplittableRandom r = rng(2103);
        for (int rows : new int[]{1, 3}) {
            int h = 2048;
            Tensor a = dev(randn(r, 3f, rows, h));
            Tensor b = dev(randn(r, 1f, rows, h));
            Tensor w = dev(randn(r, 1.5f, h).to(DType.BF16));
            Tensor wantSum = poisoned(DType.F32, rows, h);
            Tensor want = poisoned(DType.F32, rows, h);
            gpu.addRmsNorm(a, b, wantSum, w, 1e-6f, want);
            float[] bigHost = randn(r, 1f, 5L << 18).toFloatArray();   // 5 MiB of frozen weights, and two smaller ones
            Tensor big = dev(Tensor.of(bigHost, bigHost.length));
            Tensor small = dev(randn(r, 1f, 1000));
            Tensor odd = dev(randn(r, 1f, 37));
            String what = "addRmsNorm with asks [" + rows + ", " + h + "]";
            Tensor sum = poisoned(DType.F32, rows, h);
            Tensor out = poisoned(DType.F32, rows, h);
            Tensor omitted = poisoned(DType.F32, rows, h);
            Tensor omittedNext = poisoned(DType.F32, rows, h);
            withProperty(CudaBackend.L2_AHEAD_PROPERTY, "norm", () -> {
                gpu.prefetchFrozen(big, small, odd);
                gpu.addRmsNorm(a, b, sum, w, 1e-6f, out);
                gpu.prefetchFrozen(big);
                withProperty("orbit.cuda.omitKernels", "^add_rmsnorm_v4_ask_f32$", () -> gpu.addRmsNorm(a, b, sum, w, 1e-6f, omitted));
                gpu.prefetchFrozen(big);
                gpu.addRmsNorm(a, b, sum, w, 1e-6f, out);   // carries the asks
                withProperty("orbit.cuda.omitKernels", "^add_rmsnorm_v4_f32$", () -> gpu.addRmsNorm(a, b, sum, w, 1e-6f, omittedNext));
            });
            assertBitsEqual(what + ": sum", gpu.toHost(wantSum).toFloatArray(), gpu.toHost(sum).toFloatArray());
            assertBitsEqual(what + ": norm", gpu.toHost(want).toFloatArray(), gpu.toHost(out).toFloatArray());
            assertTrue(Float.isNaN(gpu.toHost(omitted).toFloatArray()[0]), what + ": the asks carried by another launch");
            assertTrue(Float.isNaN(gpu.toHost(omittedNext).toFloatArray()[0]), what + ": the asks carried twice");
            assertBitsEqual(what + ": the asked tensor", bigHost, gpu.toHost(big).toFloatArray());
        }
    }

    /** w ⊙ x / sqrt(mean(x²) + eps) per row, in double. */
    private static float[] reference(float[] x, float[] w, int rows, int h, float eps) {
        float[] out = new float[rows * h];
        for (int i = 0; i < rows; i++) {
            double ss = 0;
            for (int j = 0; j < h; j++) {
                ss += (double) x[i * h + j] * x[i * h + j];
            }
            double inv = 1 / Math.sqrt(ss / h + eps);
            for (int j = 0; j < h; j++) {
                out[i * h + j] = (float) (w[j] * (x[i * h + j] * inv));
            }
        }
        return out;
    }
}
