package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * What the two DeepSeek FP8 block formats share: E4M3 codes [rows, cols] as stored, one scale per
 * 128×128 block (edge blocks partial), {@code w = e4m3(code) · scale} in f32. The subclasses differ
 * in how the scale is stored and chosen. See {@link Fp8Block128}.
 */
abstract sealed class Fp8BlockFormat implements QuantFormat permits Fp8Block128, Fp8Block128Ue8m0 {

    static final int BLOCK = 128;
    static final float E4M3_MAX = 448f;
    /** Lower clamp on a block's amax when choosing its scale, as DeepSeek's {@code act_quant}. */
    static final float AMAX_FLOOR = 1e-4f;

    private static final float[] CODES = codeTable();

    /** Value of each E4M3 code (fn variant), the code table of both formats. */
    static float[] codeTable() {
        float[] t = new float[256];
        for (int b = 0; b < 256; b++) {
            t[b] = Numerics.e4m3ToFloat((byte) b);
        }
        return t;
    }

    static long blocks(long n) {
        return (n + BLOCK - 1) / BLOCK;
    }

    /** Name of the scale tensor in checkpoints, for messages. */
    abstract String scaleName();

    /** Scale of block [rb, cb]. */
    abstract float scale(QuantizedTensor w, long rb, long cb);

    /** Stores the scale for a block whose largest magnitude is {@code amax}; returns the scale used. */
    abstract float writeScale(Tensor scales, long index, float amax);

    @Override
    public long storageBytes(long rows, long cols) {
        return rows * cols + blocks(rows) * blocks(cols) * scaleType().bytes();
    }

    @Override
    public void checkParts(long rows, long cols, Tensor codes, Tensor scales, Tensor zeros, float globalScale) {
        QuantParts.expect(name(), "weight (codes)", rows, cols, codes, DType.F8E4M3, new long[]{rows, cols});
        QuantParts.expect(name(), scaleName() + " (scales)", rows, cols, scales, scaleType(),
                new long[]{blocks(rows), blocks(cols)});
        QuantParts.requireNull(name(), "zero points", zeros);
        QuantParts.requireGlobalScaleOne(name(), globalScale);
    }

    @Override
    public void dequantizeRow(QuantizedTensor w, long row, float[] out) {
        int cols = Math.toIntExact(w.cols());
        byte[] codes = new byte[cols]; // [cols] codes of the row, copied in one go
        MemorySegment.copy(w.codes().segment(), ValueLayout.JAVA_BYTE, w.codes().byteOffset() + row * cols, codes, 0, cols);
        for (int cb = 0; cb * BLOCK < cols; cb++) {
            float s = scale(w, row / BLOCK, cb);
            int end = Math.min(cols, (cb + 1) * BLOCK);
            for (int c = cb * BLOCK; c < end; c++) {
                out[c] = CODES[codes[c] & 0xFF] * s;
            }
        }
    }

    @Override
    public QuantizedTensor quantize(Tensor weight) {
        int[] shape = QuantParts.matrixShape(name(), weight);
        int rows = shape[0];
        int cols = shape[1];
        int colBlocks = (int) blocks(cols);
        Tensor codes = QuantParts.allocate(DType.F8E4M3, rows, cols);           // [rows, cols]
        Tensor scales = QuantParts.allocate(scaleType(), blocks(rows), colBlocks); // [ceil(rows/128), ceil(cols/128)]
        float[] x = new float[BLOCK * cols];                                    // [128, cols]: one row block
        float[] used = new float[colBlocks];
        for (int r0 = 0; r0 < rows; r0 += BLOCK) {
            int n = Math.min(BLOCK, rows - r0);
            float[] amax = new float[colBlocks];
            for (int i = 0; i < n; i++) {
                float[] row = new float[cols];
                QuantParts.readRow(weight, r0 + i, row);
                QuantParts.requireFinite(name(), row, r0 + i, cols);
                System.arraycopy(row, 0, x, i * cols, cols);
                for (int c = 0; c < cols; c++) {
                    amax[c / BLOCK] = Math.max(amax[c / BLOCK], Math.abs(row[c]));
                }
            }
            for (int cb = 0; cb < colBlocks; cb++) {
                used[cb] = writeScale(scales, (long) (r0 / BLOCK) * colBlocks + cb, Math.max(amax[cb], AMAX_FLOOR));
            }
            for (int i = 0; i < n; i++) {
                long co = codes.byteOffset() + (long) (r0 + i) * cols;
                for (int c = 0; c < cols; c++) {
                    codes.segment().set(ValueLayout.JAVA_BYTE, co + c, Numerics.floatToE4m3(x[i * cols + c] / used[c / BLOCK]));
                }
            }
        }
        return new QuantizedTensor(this, rows, cols, codes, scales);
    }

    @Override
    public String toString() {
        return name();
    }
}
