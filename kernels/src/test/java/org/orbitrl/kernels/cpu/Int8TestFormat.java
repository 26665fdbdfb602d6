package org.orbitrl.kernels.cpu;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;

/**
 * A minimal format for testing how the backend drives quantized kernels (not a product format):
 * symmetric int8 codes [rows, cols], one f32 scale per group of 32 along a row (the last group
 * may be short): value = code · scale.
 */
final class Int8TestFormat implements QuantFormat {
    static final Int8TestFormat INSTANCE = new Int8TestFormat();
    private static final int GROUP = 32;

    @Override
    public String name() {
        return "test-int8-g32";
    }

    @Override
    public int groupSize() {
        return GROUP;
    }

    @Override
    public int bitsPerValue() {
        return 8;
    }

    @Override
    public DType scaleType() {
        return DType.F32;
    }

    @Override
    public long packedBytesPerRow(long cols) {
        return cols;
    }

    @Override
    public long storageBytes(long rows, long cols) {
        return rows * cols + rows * groups(cols) * 4;
    }

    private static long groups(long cols) {
        return (cols + GROUP - 1) / GROUP;
    }

    @Override
    public void dequantizeRow(QuantizedTensor w, long row, float[] out) {
        int cols = Math.toIntExact(w.cols());
        long g = groups(cols);
        long codes = w.codes().byteOffset() + row * cols;
        long scales = w.scales().byteOffset() + row * g * 4;
        for (int c = 0; c < cols; c++) {
            byte q = w.codes().segment().get(ValueLayout.JAVA_BYTE, codes + c);
            float s = w.scales().segment().get(ValueLayout.JAVA_FLOAT_UNALIGNED, scales + (c / GROUP) * 4L);
            out[c] = q * s;
        }
    }

    @Override
    public QuantizedTensor quantize(Tensor weight) {
        int rows = weight.size(0);
        int cols = weight.size(1);
        int g = (int) groups(cols);
        Tensor codes = Tensor.allocate(Arena.ofAuto(), DType.I8, rows, cols);
        Tensor scales = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, g);
        float[] w = weight.toFloatArray();
        for (int r = 0; r < rows; r++) {
            for (int gi = 0; gi < g; gi++) {
                int end = Math.min(cols, (gi + 1) * GROUP);
                float amax = 0;
                for (int c = gi * GROUP; c < end; c++) {
                    amax = Math.max(amax, Math.abs(w[r * cols + c]));
                }
                float s = amax == 0 ? 1 : amax / 127;
                scales.setFloat(s, r, gi);
                for (int c = gi * GROUP; c < end; c++) {
                    codes.setLong(Math.round(w[r * cols + c] / s), r, c);
                }
            }
        }
        return new QuantizedTensor(this, rows, cols, codes, scales, null, 1f);
    }
}
