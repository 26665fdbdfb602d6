package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.Tensor;

/**
 * A [rows, cols] weight matrix in a {@link QuantFormat}. Layout of the parts is the format's
 * (documented on each format class); {@code zeros} is null for symmetric formats and
 * {@code globalScale} is 1 unless the format has one (NVFP4).
 *
 * @param codes  packed values, u8/i32 as the format says
 * @param scales per-group scales
 * @param zeros  per-group zero points, or null
 */
public record QuantizedTensor(QuantFormat format, long rows, long cols, Tensor codes, Tensor scales, Tensor zeros,
                              float globalScale) {

    public QuantizedTensor {
        if (rows <= 0 || cols <= 0) {
            throw new IllegalArgumentException("quantized matrix must be non-empty, got [" + rows + ", " + cols + "]");
        }
    }

    /** Bytes this matrix occupies (codes, scales and zero points). */
    public long byteSize() {
        return codes.byteSize() + scales.byteSize() + (zeros == null ? 0 : zeros.byteSize());
    }

    @Override
    public String toString() {
        return "QuantizedTensor[" + format.name() + ", " + rows + "x" + cols + "]";
    }
}
