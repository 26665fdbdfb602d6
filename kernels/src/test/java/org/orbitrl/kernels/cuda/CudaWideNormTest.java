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
     * The narrow residual add and norm (the default, {@code -Dorbit.cuda.narrowNorm=off} for the v4 kernel): rows of at
     * most 8 values a thread ({@code add_rmsnorm_v2_f32}, two float4s a thread) give the v4 kernel's sum and norm bit for
     * bit, at a model's hidden sizes (2048, 1536, 516: a row short of a full pass) from aligned and unaligned buffers, one
     * row and five; the launch is its own (left out: poison), and a longer row (2052) keeps the v4 kernel.
     */
    @Test
    void narrowAddNormGivesTheV4KernelsBits() {
        SplittableRandom r = rng(2105);
        for (int h : new int[]{2048, 1536, 516, 2052}) {
            for (int rows : new int[]{1, 5}) {
                for (int offset : new int[]{0, 1}) {
                    Tensor a = dev(randn(r, 3f, rows * h + offset)).slice(0, offset, offset + rows * h).reshape(rows, h);
                    Tensor b = dev(randn(r, 1f, rows, h));
                    Tensor w = dev(randn(r, 1.5f, h).to(DType.BF16));
                    String what = "addRmsNorm [" + rows + ", " + h + "]" + (offset > 0 ? ", unaligned" : "");
                    Tensor wantSum = poisoned(DType.F32, rows, h);
                    Tensor want = poisoned(DType.F32, rows, h);
                    withProperty(CudaRowOps.NARROW_NORM_PROPERTY, "off", () -> withProperty("orbit.cuda.omitKernels", "^add_rmsnorm_v2_f32$",
                            () -> gpu.addRmsNorm(a, b, wantSum, w, 1e-6f, want)));
                    Tensor sum = poisoned(DType.F32, rows, h);
                    Tensor out = poisoned(DType.F32, rows, h);
                    boolean narrow = h <= 8 * CudaRowOps.v4Block(h);
                    withProperty(CudaRowOps.NARROW_NORM_PROPERTY, "on", () -> withProperty("orbit.cuda.omitKernels",
                            narrow ? "^add_rmsnorm_v4_f32$" : "^add_rmsnorm_v2_f32$", () -> gpu.addRmsNorm(a, b, sum, w, 1e-6f, out)));
                    assertBitsEqual(what + ": sum", gpu.toHost(wantSum).toFloatArray(), gpu.toHost(sum).toFloatArray());
                    assertBitsEqual(what + ": norm", gpu.toHost(want).toFloatArray(), gpu.toHost(out).toFloatArray());
                    Tensor omitted = poisoned(DType.F32, rows, h);
                    withProperty(CudaRowOps.NARROW_NORM_PROPERTY, "on", () -> withProperty("orbit.cuda.omitKernels",
                            narrow ? "^add_rmsnorm_v2_f32$" : "^add_rmsnorm_v4_f32$", () -> gpu.addRmsNorm(a, b, sum, w, 1e-6f, omitted)));
                    assertTrue(Float.isNaN(gpu.toHost(omitted).toFloatArray()[0]), what + ": written by another launch");
                }
            }
        }
        assertTrue(2048 <= 8 * CudaRowOps.v4Block(2048) && 2052 > 8 * CudaRowOps.v4Block(2052), "the narrow form's rows");
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
