package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/**
 * One low-precision weight format: how a [rows, cols] matrix is stored as packed codes plus
 * scales (and zero points). One implementation per format, each a small class whose
 * {@link QuantDescriptor} is checked when it loads. The CPU and CUDA paths read the same descriptor.
 * Look formats up by name in {@link QuantFormats}.
 */
public interface QuantFormat {

    /** The layout, as data. */
    QuantDescriptor descriptor();

    /** Stable name used in configs, job files and logs: {@code int4-g32}, {@code mxfp4}, ... */
    default String name() {
        return descriptor().name();
    }

    /** Values per scale group along a row (32 for INT4 g32 and MXFP4, 16 for NVFP4; 128 for FP8 blocks). */
    default int groupSize() {
        return descriptor().blockCols();
    }

    /** Bits per stored value (4 or 8). */
    default int bitsPerValue() {
        return descriptor().bitsPerValue();
    }

    /** Element type of the scale tensor (E8M0 scales are stored as {@link DType#U8}). */
    default DType scaleType() {
        return descriptor().scaleType();
    }

    /** Bytes of packed codes for one row of {@code cols} values. */
    default long packedBytesPerRow(long cols) {
        return cols * bitsPerValue() / 8;
    }

    /** Total bytes (codes + scales + zero points) for a [rows, cols] matrix. */
    long storageBytes(long rows, long cols);

    /**
     * Checks that the parts of a [rows, cols] matrix have the dtypes and shapes this format
     * stores, and that [rows, cols] is a shape it can hold. Throws {@link IllegalArgumentException}
     * naming the tensor (by its checkpoint name) and what was expected. Every
     * {@link QuantizedTensor} is checked this way when it is built.
     */
    void checkParts(long rows, long cols, Tensor codes, Tensor scales, Tensor zeros, float globalScale);

    /** Writes row {@code row} of {@code w}, dequantized to f32, into {@code out[0..cols)}. */
    void dequantizeRow(QuantizedTensor w, long row, float[] out);

    /**
     * Quantizes a [rows, cols] matrix (f32 or bf16; any float dtype is read through f32) into this
     * format, rounding to nearest as the format's class documents.
     */
    QuantizedTensor quantize(Tensor weight);
}
