package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;

/**
 * What the two INT4 group-32 formats of compressed-tensors' {@code pack-quantized} share: the
 * int32 code packing, bf16 scales per 32 values of a row, and dequantization
 * {@code w = float(u − z) · scale} where {@code u} is the stored nibble ({@code q + 8}) and
 * {@code z} the stored zero nibble (8 for the symmetric format, i.e. zero point 0).
 * See {@link Int4G32} for the layout and its source.
 */
abstract sealed class Int4PackQuantized implements QuantFormat, NibblePacked permits Int4G32, Int4G32Asym {

    static final int GROUP = 32;
    /** Values per int32 word. */
    static final int PER_WORD = 8;
    /** Stored nibble = signed value + OFFSET ({@code 1 << (num_bits − 1)} in {@code pack_to_int32}). */
    static final int OFFSET = 8;
    /** Scale used for an all-zero group: bf16's machine epsilon, as compressed-tensors' {@code calculate_qparams}. */
    static final float ZERO_GROUP_SCALE = 0x1p-7f;

    /** Signed value of each stored nibble: {@code u − 8}. */
    static float[] codeTable() {
        float[] t = new float[16];
        for (int u = 0; u < 16; u++) {
            t[u] = u - OFFSET;
        }
        return t;
    }

    @Override
    public final boolean e2m1() {
        return false;
    }

    /** The stored zero nibble of group {@code g} of row {@code row} (8 when symmetric). */
    abstract int zeroNibble(QuantizedTensor w, long row, int g);

    @Override
    public long storageBytes(long rows, long cols) {
        return rows * (cols / 2) + rows * (cols / GROUP) * 2;
    }

    /** Checks weight_packed [rows, cols/8] i32 and weight_scale [rows, cols/32] bf16. */
    void checkCodesAndScales(long rows, long cols, Tensor codes, Tensor scales) {
        QuantParts.requireGroups(name(), rows, cols, GROUP);
        QuantParts.expect(name(), "weight_packed (codes)", rows, cols, codes, DType.I32, new long[]{rows, cols / PER_WORD});
        QuantParts.expect(name(), "weight_scale (scales)", rows, cols, scales, DType.BF16, new long[]{rows, cols / GROUP});
    }

    static float scale(QuantizedTensor w, long row, int g) {
        long groups = w.cols() / GROUP;
        Tensor s = w.scales();
        return Numerics.bf16ToFloat(s.segment().get(QuantParts.I16, s.byteOffset() + 2 * (row * groups + g)));
    }

    @Override
    public void rowScales(QuantizedTensor w, long row, float[] scales, int[] zeros) {
        int groups = Math.toIntExact(w.cols() / GROUP);
        for (int g = 0; g < groups; g++) {
            scales[g] = scale(w, row, g);
            zeros[g] = zeroNibble(w, row, g);
        }
    }

    @Override
    public void dequantizeRow(QuantizedTensor w, long row, float[] out) {
        int cols = Math.toIntExact(w.cols());
        MemorySegment seg = w.codes().segment();
        long base = w.codes().byteOffset() + row * (cols / 2);
        for (int g = 0; g < cols / GROUP; g++) {
            float s = scale(w, row, g);
            int z = zeroNibble(w, row, g);
            for (int wd = 0; wd < GROUP / PER_WORD; wd++) {
                int c0 = g * GROUP + wd * PER_WORD;
                int word = seg.get(QuantParts.I32, base + c0 / 2);
                for (int i = 0; i < PER_WORD; i++) {
                    out[c0 + i] = (float) (((word >>> (4 * i)) & 15) - z) * s;
                }
            }
        }
    }

    /** Packs stored nibbles {@code u[0..cols)} of one row into {@code cols/8} words at {@code off}. */
    static void packRow(int[] u, int cols, MemorySegment dst, long off) {
        for (int c0 = 0; c0 < cols; c0 += PER_WORD) {
            int word = 0;
            for (int i = 0; i < PER_WORD; i++) {
                word |= u[c0 + i] << (4 * i);
            }
            dst.set(QuantParts.I32, off + c0 / 2, word);
        }
    }

    /** Reads an int32/int64 {@code weight_shape} [2] tensor as {rows, cols}. */
    static long[] weightShape(String format, Tensor weightShape) {
        if (weightShape.rank() != 1 || weightShape.dim(0) != 2
                || (weightShape.dtype() != DType.I32 && weightShape.dtype() != DType.I64)) {
            throw new IllegalArgumentException(format + ": weight_shape must be I32[2] (rows, cols), got " + weightShape);
        }
        return weightShape.toLongArray();
    }
}
