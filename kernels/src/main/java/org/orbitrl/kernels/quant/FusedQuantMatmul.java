package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.internal.CanonicalDot;
import org.orbitrl.kernels.quant.internal.NibbleDot;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * {@code y = x · wᵀ} for a quantized w [N, K], without a full-precision copy of w. The CPU backend
 * splits the N output columns across threads and calls {@link #matmul} for each range.
 *
 * <p>INT4 and FP4 weights ({@code int4-g32}, {@code int4-g32-asym}, {@code mxfp4}, {@code nvfp4})
 * are decoded 16 values at a time straight into vector registers with the Vector API, and each
 * decoded vector is multiplied into a register tile of 8 rows of x (4 on 256-bit hardware) before
 * the next is decoded. A weight row is read from memory once per call; its K/2 bytes of codes stay
 * in L1 while each tile of x rows decodes it again (cheaper than keeping M partial sums in memory,
 * which would cost a load and a store per multiply-add). Other formats (FP8 blocks) decode one row
 * at a time into a K-float buffer. x is copied once per call into the order the decoder produces
 * ({@link CanonicalDot#permuteX}: M·K floats, per call, so per thread when N is split).
 *
 * <p>Exactness: every {@code y[i, j]} is the dot product of row i of x with the exact f32 values of
 * {@link QuantFormat#dequantizeRow}, summed in one fixed order that depends on K only
 * ({@link CanonicalDot}: 32 partial fused-multiply-add chains, then a fixed tree). The result is
 * the same bits whatever M is, wherever the row sits in x, however N is split, and on 256-bit,
 * 512-bit or no vector hardware.
 */
public final class FusedQuantMatmul {
    private FusedQuantMatmul() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /**
     * Computes output columns {@code [nStart, nEnd)} of y.
     *
     * @param x f32 [M, K] contiguous (leading dimensions flattened into M)
     * @param w quantized [N, K]
     * @param y f32 [M, N] contiguous (leading dimensions as x's)
     */
    public static void matmul(Tensor x, QuantizedTensor w, Tensor y, int nStart, int nEnd) {
        int k = Math.toIntExact(w.cols());
        int n = Math.toIntExact(w.rows());
        int m = check(x, w, y, nStart, nEnd);
        MemorySegment ys = y.segment();
        long yo = y.byteOffset();
        float[] xp = CanonicalDot.permuteX(x.segment(), x.byteOffset(), m, k); // [M, K] in decoded order
        float[] out = new float[m];                                            // [M]: column j of y
        float[] scratch = new float[8 * CanonicalDot.LANES]; // partial sums of up to 8 rows
        if (w.format() instanceof NibblePacked np && CanonicalDot.vectorsAvailable()) {
            int group = w.format().groupSize();
            float[] scales = new float[k / group];  // [K/group] of the current weight row
            int[] zeros = new int[k / group];
            float[] offsets = new float[k / group]; // -zero*scale, exact
            MemorySegment codes = w.codes().segment();
            long codeBase = w.codes().byteOffset();
            for (int j = nStart; j < nEnd; j++) {
                np.rowScales(w, j, scales, zeros);
                if (!np.e2m1()) {
                    for (int g = 0; g < offsets.length; g++) {
                        offsets[g] = -zeros[g] * scales[g];
                    }
                }
                NibbleDot.rowTimesX(np.e2m1(), codes, codeBase + (long) j * (k / 2), k, group, scales, offsets,
                        xp, m, out, scratch);
                store(ys, yo, n, j, out, m);
            }
        } else {
            float[] row = new float[k]; // [K]: one dequantized weight row, reused
            float[] rowPermuted = new float[k];
            for (int j = nStart; j < nEnd; j++) {
                w.format().dequantizeRow(w, j, row);
                CanonicalDot.permuteRow(row, rowPermuted, k);
                for (int i = 0; i < m; i++) {
                    out[i] = CanonicalDot.dot(rowPermuted, xp, i * k, k, scratch);
                }
                store(ys, yo, n, j, out, m);
            }
        }
    }

    /** Computes all of y on the calling thread. */
    public static void matmul(Tensor x, QuantizedTensor w, Tensor y) {
        matmul(x, w, y, 0, Math.toIntExact(w.rows()));
    }

    private static void store(MemorySegment ys, long yo, int n, int j, float[] out, int m) {
        for (int i = 0; i < m; i++) {
            ys.set(F32, yo + 4L * ((long) i * n + j), out[i]);
        }
    }

    /** Validates the arguments and returns M. */
    private static int check(Tensor x, QuantizedTensor w, Tensor y, int nStart, int nEnd) {
        long k = w.cols();
        long n = w.rows();
        if (x.dtype() != DType.F32 || y.dtype() != DType.F32) {
            throw new IllegalArgumentException("quantized matmul: x and y must be f32, got x " + x + ", y " + y);
        }
        x.requireContiguous("quantized matmul x");
        y.requireContiguous("quantized matmul y");
        if (x.rank() < 1 || x.dim(-1) != k) {
            throw new IllegalArgumentException("quantized matmul: x must be [M, " + k + "] to multiply " + w + ", got " + x);
        }
        long m = x.numel() / k;
        if (y.rank() < 1 || y.dim(-1) != n || y.numel() / n != m) {
            throw new IllegalArgumentException("quantized matmul: y must be [" + m + ", " + n + "] for x " + x + " · "
                    + w + "ᵀ, got " + y);
        }
        if (nStart < 0 || nEnd > n || nStart > nEnd) {
            throw new IllegalArgumentException("quantized matmul: output columns [" + nStart + ", " + nEnd
                    + ") out of [0, " + n + ")");
        }
        return Math.toIntExact(m);
    }
}
