package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.Tensor;

import java.util.Objects;

/**
 * A [rows, cols] weight matrix in a {@link QuantFormat}. Layout of the parts is the format's
 * (documented on each format class); {@code zeros} is null for symmetric formats and
 * {@code globalScale} is 1 unless the format has one (NVFP4). The parts are checked against the
 * format when the record is built ({@link QuantFormat#checkParts}).
 *
 * @param codes       packed values, i32 / u8 / f8e4m3 as the format says
 * @param scales      per-block scales
 * @param zeros       per-block zero points, or null
 * @param globalScale the format's global scale (NVFP4), else 1
 */
public record QuantizedTensor(QuantFormat format, long rows, long cols, Tensor codes, Tensor scales, Tensor zeros,
                              float globalScale) {

    public QuantizedTensor {
        Objects.requireNonNull(format, "format");
        if (rows <= 0 || cols <= 0) {
            throw new IllegalArgumentException(format.name() + ": quantized matrix must be non-empty, got [" + rows + ", "
                    + cols + "]");
        }
        if (codes == null || scales == null) {
            throw new IllegalArgumentException(format.name() + ": codes and scales are required, got codes " + codes
                    + ", scales " + scales);
        }
        format.checkParts(rows, cols, codes, scales, zeros, globalScale);
    }

    /** A symmetric matrix without a global scale. */
    public QuantizedTensor(QuantFormat format, long rows, long cols, Tensor codes, Tensor scales) {
        this(format, rows, cols, codes, scales, null, 1f);
    }

    /**
     * Builds a matrix from checkpoint tensors; a mismatch is reported with {@code name} (the
     * checkpoint's key prefix, e.g. {@code model.layers.3.mlp.experts.7.down_proj}) in front.
     */
    public static QuantizedTensor named(String name, QuantFormat format, long rows, long cols, Tensor codes,
                                        Tensor scales, Tensor zeros, float globalScale) {
        try {
            return new QuantizedTensor(format, rows, cols, codes, scales, zeros, globalScale);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(name + ": " + e.getMessage(), e);
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
