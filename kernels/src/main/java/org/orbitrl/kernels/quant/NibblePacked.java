package org.orbitrl.kernels.quant;

/**
 * A 4-bit format whose codes for row {@code r} are {@code cols/2} contiguous bytes at
 * {@code codes.byteOffset() + r·cols/2}, read as little-endian int32 words with value {@code c}
 * in bits {@code 4·(c mod 8)} of word {@code c/8} (compressed-tensors' int32 packing and the
 * low-nibble-first byte packing of MXFP4/NVFP4 are the same bytes). The fused kernel decodes
 * such rows group by group; the format supplies one f32 scale (and, for integers, a zero code)
 * per group.
 */
interface NibblePacked {

    /** True if a code is an E2M1 value; false if it is an integer {@code code − zero}. */
    boolean e2m1();

    /**
     * Fills {@code scales[g]} for the groups of row {@code row}, such that value {@code c} of group
     * {@code g} is exactly {@code float(code − zeros[g]) · scales[g]} (integers) or
     * {@code E2M1[code] · scales[g]} (FP4), the same f32 operations as {@link QuantFormat#dequantizeRow}.
     * {@code zeros} is filled for integer formats only.
     */
    void rowScales(QuantizedTensor w, long row, float[] scales, int[] zeros);
}
