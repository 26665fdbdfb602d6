package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * {@code y = x · wᵀ} for a quantized w [N, K], decoding w one row at a time into a small
 * per-call buffer: the full-precision weight never exists. The CPU backend splits the N output
 * columns across threads and calls {@link #matmul} for each range.
 */
public final class FusedQuantMatmul {
    private FusedQuantMatmul() {
    }

    /**
     * Computes output columns {@code [nStart, nEnd)} of y.
     *
     * @param x f32 [M, K] contiguous
     * @param w quantized [N, K]
     * @param y f32 [M, N] contiguous
     */
    public static void matmul(Tensor x, QuantizedTensor w, Tensor y, int nStart, int nEnd) {
        int k = Math.toIntExact(w.cols());
        int n = Math.toIntExact(w.rows());
        int m = Math.toIntExact(x.numel() / k);
        MemorySegment xs = x.segment();
        MemorySegment ys = y.segment();
        long xo = x.byteOffset();
        long yo = y.byteOffset();
        float[] row = new float[k];
        for (int j = nStart; j < nEnd; j++) {
            w.format().dequantizeRow(w, j, row); // [K] in L1, reused for every row of x
            for (int i = 0; i < m; i++) {
                float acc = 0;
                long base = xo + (long) i * k * 4;
                for (int p = 0; p < k; p++) {
                    acc += xs.get(ValueLayout.JAVA_FLOAT_UNALIGNED, base + p * 4L) * row[p];
                }
                ys.set(ValueLayout.JAVA_FLOAT_UNALIGNED, yo + ((long) i * n + j) * 4, acc);
            }
        }
    }
}
