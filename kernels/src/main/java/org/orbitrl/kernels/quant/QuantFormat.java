package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;

/**
 * One low-precision weight format: how a [rows, cols] matrix is stored as packed codes plus
 * scales (and zero points). One implementation per format, each a small class whose descriptor
 * fields are checked when it loads. The CPU and CUDA paths read the same descriptor.
 */
public interface QuantFormat {

    /** Stable name used in configs, job files and logs: {@code int4-g32}, {@code mxfp4}, ... */
    String name();

    /** Values per scale group along a row (32 for INT4 g32 and MXFP4, 16 for NVFP4; 128 for FP8 blocks). */
    int groupSize();

    /** Bits per stored value (4 or 8). */
    int bitsPerValue();

    /** Element type of the scale tensor. */
    DType scaleType();

    /** Bytes of packed codes for one row of {@code cols} values. */
    long packedBytesPerRow(long cols);

    /** Total bytes (codes + scales + zero points) for a [rows, cols] matrix. */
    long storageBytes(long rows, long cols);

    /** Writes row {@code row} of {@code w}, dequantized, into {@code out[0..cols)}. */
    void dequantizeRow(QuantizedTensor w, long row, float[] out);

    /** Quantizes a [rows, cols] f32/bf16 matrix into this format. */
    QuantizedTensor quantize(org.orbitrl.kernels.Tensor weight);
}
