package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

/**
 * RMSNorm (f32 and bf16 weight, in place; and after a residual add in one launch), softmax and log-softmax against the
 * scalar backend, over short, ragged and vocabulary-sized rows. The device reduces in a tree and the reference
 * sequentially in f32, so results differ by the rounding of the sums, which grows with the row:
 * RMSNorm |err| ≤ 1e-7 + 2e-5·|ref|; softmax |err| ≤ 1e-7 + 1e-5·|ref| up to 8192 columns and
 * 1e-7 + 1e-4·|ref| for the 151937-column row (the reference's own sequential f32 sum is off by
 * about √n·2⁻²⁴ ≈ 2e-5 there); log-softmax (double sum in the reference) |err| ≤ 2e-5 absolute,
 * its values being offsets of magnitude up to ~25.
 */
class CudaNormTest extends CudaTestBase {
    private static final int[][] ROWS_BY_WIDTH = {{1, 1}, {3, 7}, {5, 128}, {1001, 128}, {13, 512}, {9, 513}, {17, 1000}, {2, 4099}, {4, 8192}, {3, 20000},
            {64, 2048}, {2, 7168}, {3, 2052}};

    @Test
    void rmsNormF32AndBf16Weight() {
        SplittableRandom r = rng(21);
        for (int[] rh : ROWS_BY_WIDTH) {
            int rows = rh[0];
            int h = rh[1];
            Tensor x = randn(r, 4f, rows, h);
            for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                Tensor w = randn(r, 1.5f, h).to(wt);
                Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, h);
                cpu.rmsNorm(x, w, 1e-6f, ref);
                Tensor out = poisoned(DType.F32, rows, h);
                gpu.rmsNorm(dev(x), dev(w), 1e-6f, out);
                assertClose("rmsNorm " + wt + " [" + rows + ", " + h + "]", ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 1e-7, 2e-5);
            }
        }
        Tensor x = randn(r, 1f, 9, 513);
        Tensor w = randn(r, 1f, 513);
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, 9, 513);
        cpu.rmsNorm(x, w, 1e-5f, ref);
        Tensor dx = dev(x);
        gpu.rmsNorm(dx, dev(w), 1e-5f, dx);
        assertClose("rmsNorm in place", ref.toFloatArray(), gpu.toHost(dx).toFloatArray(), 1e-7, 2e-5);
    }

    /**
     * The residual add and the norm of its sum in one launch (rows of 513-8192 values, a multiple of 4: {@code
     * add_rmsnorm_v2_f32} where a row is at most 8 values a thread, else {@code add_rmsnorm_v4_f32}) give the bits of {@code add} then {@code rmsNorm}, for f32 and bf16 weights, from aligned buffers
     * and from views off 16-byte boundaries; other rows take the two launches. The sum against the host's exactly, the
     * norm against the host's as in the test above.
     */
    @Test
    void addRmsNormGivesTheBitsOfTheAddAndTheNorm() {
        SplittableRandom r = rng(24);
        for (int[] rh : ROWS_BY_WIDTH) {
            int rows = rh[0];
            int h = rh[1];
            for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                for (boolean shifted : new boolean[]{false, true}) {
                    String what = "addRmsNorm " + wt + " [" + rows + ", " + h + "]" + (shifted ? " off 16-byte boundaries" : "");
                    Tensor a = randn(r, 3f, rows, h);
                    Tensor b = randn(r, 1f, rows, h);
                    Tensor w = randn(r, 1.5f, h).to(wt);
                    Tensor dw = dev(w);
                    Tensor[] d = {view(a, shifted), view(b, shifted), view(randn(r, 1f, rows, h), shifted), view(randn(r, 1f, rows, h), shifted)};
                    gpu.addRmsNorm(d[0], d[1], d[2], dw, 1e-6f, d[3]);
                    Tensor sum = poisoned(DType.F32, rows, h);
                    Tensor out = poisoned(DType.F32, rows, h);
                    gpu.add(dev(a), dev(b), sum);
                    gpu.rmsNorm(sum, dw, 1e-6f, out);
                    float[] wantSum = gpu.toHost(sum).toFloatArray();
                    float[] want = gpu.toHost(out).toFloatArray();
                    float[] gotSum = gpu.toHost(d[2]).toFloatArray();
                    float[] got = gpu.toHost(d[3]).toFloatArray();
                    for (int i = 0; i < want.length; i++) {
                        org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(wantSum[i]), Float.floatToRawIntBits(gotSum[i]),
                                what + ": sum " + i + ", add " + wantSum[i] + ", fused " + gotSum[i]);
                        org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(want[i]), Float.floatToRawIntBits(got[i]),
                                what + ": norm " + i + ", add and rmsNorm " + want[i] + ", fused " + got[i]);
                    }
                    Tensor hostSum = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, h);
                    cpu.add(a, b, hostSum);
                    Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, h);
                    cpu.rmsNorm(hostSum, w, 1e-6f, ref);
                    assertClose(what + " sum against the host", hostSum.toFloatArray(), gotSum, 0, 0);
                    assertClose(what + " against the host", ref.toFloatArray(), got, 1e-7, 2e-5);
                }
            }
        }
    }

    /** t on the device: its own buffer, or (shifted) a view one value into a larger one, off 16-byte boundaries. */
    private Tensor view(Tensor t, boolean shifted) {
        if (!shifted) {
            return dev(t);
        }
        int rows = t.size(0);
        int h = t.size(1);
        float[] v = new float[rows * h + 1];
        System.arraycopy(t.toFloatArray(), 0, v, 1, rows * h);
        return dev(Tensor.of(v, 1, rows * h + 1)).slice(1, 1, rows * h + 1L).reshape(rows, h);
    }

    /**
     * Rows of a model's hidden size are summed in an order fixed by their length alone: a row gives the same bits alone
     * or in a batch, and from a 16-byte aligned buffer or from one that is not (exact mode's decode and training
     * forward normalize the same row from different tensors).
     */
    @Test
    void rmsNormOfAHiddenRowDependsOnTheRowAlone() {
        SplittableRandom r = rng(23);
        int rows = 5;
        int h = 2048;
        float[] xs = randn(r, 2f, rows, h).toFloatArray();
        Tensor w = dev(randn(r, 1f, h).to(DType.BF16));
        Tensor out = poisoned(DType.F32, rows, h);
        gpu.rmsNorm(dev(Tensor.of(xs, rows, h)), w, 1e-6f, out);
        float[] batch = gpu.toHost(out).toFloatArray();
        float[] shifted = new float[rows * h + 1];
        System.arraycopy(xs, 0, shifted, 1, rows * h);
        Tensor unaligned = dev(Tensor.of(shifted, 1, rows * h + 1)).slice(1, 1, rows * h + 1).reshape(rows, h);
        Tensor outShifted = dev(Tensor.of(new float[rows * h + 1], 1, rows * h + 1)).slice(1, 1, rows * h + 1).reshape(rows, h);
        gpu.rmsNorm(unaligned, w, 1e-6f, outShifted);
        float[] fromUnaligned = gpu.toHost(outShifted).toFloatArray();
        float[] row = new float[h];
        System.arraycopy(xs, 3 * h, row, 0, h);
        Tensor one = poisoned(DType.F32, 1, h);
        gpu.rmsNorm(dev(Tensor.of(row, 1, h)), w, 1e-6f, one);
        float[] alone = gpu.toHost(one).toFloatArray();
        for (int i = 0; i < rows * h; i++) {
            org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(batch[i]), Float.floatToRawIntBits(fromUnaligned[i]),
                    "value " + i + ": aligned " + batch[i] + ", unaligned " + fromUnaligned[i]);
        }
        for (int i = 0; i < h; i++) {
            org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(batch[3 * h + i]), Float.floatToRawIntBits(alone[i]),
                    "row 3 value " + i + ": in the batch " + batch[3 * h + i] + ", alone " + alone[i]);
        }
    }

    @Test
    void softmaxAndLogSoftmax() {
        SplittableRandom r = rng(22);
        int[][] shapes = {{1, 1}, {3, 5}, {7, 1000}, {4, 4097}, {2, 151_937}};
        for (int[] s : shapes) {
            Tensor x = randn(r, 12f, s[0], s[1]);
            Tensor ref = x.to(DType.F32);
            cpu.softmax(ref);
            Tensor dx = dev(x);
            gpu.softmax(dx);
            assertClose("softmax [" + s[0] + ", " + s[1] + "]", ref.toFloatArray(), gpu.toHost(dx).toFloatArray(), 1e-7,
                    s[1] <= 8192 ? 1e-5 : 1e-4);

            Tensor lref = x.to(DType.F32);
            cpu.logSoftmax(lref);
            Tensor dl = dev(x);
            gpu.logSoftmax(dl);
            assertClose("logSoftmax [" + s[0] + ", " + s[1] + "]", lref.toFloatArray(), gpu.toHost(dl).toFloatArray(), 2e-5, 0);
        }
    }
}
