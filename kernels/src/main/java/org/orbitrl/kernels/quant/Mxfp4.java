package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * {@code mxfp4}: OCP Microscaling MXFP4: E2M1 values with one E8M0 scale per 32 values of a row,
 * the format gpt-oss ships its experts in and DeepSeek V4 its routed experts.
 *
 * <p>Parts of a [rows, cols] matrix (cols a multiple of 32), as gpt-oss stores
 * {@code *_blocks} / {@code *_scales} per expert:
 * <ul>
 *   <li>codes u8 [rows, cols/32, 16] (gpt-oss {@code blocks}) or the same bytes as [rows, cols/2]
 *       (DeepSeek V4 / PyTorch {@code float4_e2m1fn_x2}): byte {@code k} of a 32-value block holds
 *       value {@code 2k} in its low nibble and {@code 2k+1} in its high nibble; a nibble is an E2M1
 *       code (bit 3 sign, values ±{0, .5, 1, 1.5, 2, 3, 4, 6}).</li>
 *   <li>scales u8 [rows, cols/32]: E8M0 exponent {@code e}, scale {@code 2^(e−127)}; {@code 0xFF} is NaN.</li>
 * </ul>
 * Dequantized value {@code w = E2M1[code] · 2^(e−127)}, exact in f32. Matches
 * {@code transformers.integrations.mxfp4.convert_moe_packed_tensors} bit for bit (which returns
 * the matrix transposed, [cols, rows] per expert).
 *
 * <p>Sources: OCP Microscaling Formats (MX) v1.0 spec (E2M1, E8M0, block 32);
 * {@code vllm-project/compressed-tensors} at {@code ac8e2ba82f4e0d5eaa40069f8fc642738f124cd4}:
 * {@code compressors/nvfp4/helpers.py} ({@code pack_fp4_to_uint8}: low nibble first),
 * {@code quantization/utils/mxfp_utils.py} ({@code generate_mx_scales}, {@code round_to_power_2}),
 * {@code quantization/utils/fp4_utils.py} ({@code cast_to_fp4}).
 *
 * <p>Quantizer rounding (compressed-tensors' MX observer): per block, {@code amax} is rounded to a
 * power of two {@code 2^E} ({@code E = floor(log2 amax)}, plus one when the mantissa of amax is
 * at least 1.75); the scale is {@code 2^(E−2)} (2 = floor(log2 6)), exponent byte clamped to
 * [0, 254]; an all-zero block gets byte 0. Values are {@code x / scale} (exact) rounded to the
 * nearest E2M1 value, ties to even, saturating at ±6. Then {@code |x/scale| < 7} and the error of
 * each value is at most half the E2M1 spacing around it (0.25, 0.5 or 1, times the scale).
 */
public final class Mxfp4 implements QuantFormat, NibblePacked {

    /** The format, registered as {@code mxfp4}. */
    public static final Mxfp4 INSTANCE = new Mxfp4();

    static final int GROUP = 32;
    /** Scale of each E8M0 byte. */
    static final float[] E8M0 = new float[256];

    private static final QuantDescriptor DESCRIPTOR;

    static {
        for (int e = 0; e < 255; e++) {
            E8M0[e] = Math.scalb(1f, e - 127);
        }
        E8M0[255] = Float.NaN;
        if (E8M0[127] != 1f || E8M0[0] != 0x1p-127f || E8M0[254] != 0x1p127f) {
            throw new IllegalStateException("E8M0 table is wrong");
        }
        DESCRIPTOR = new QuantDescriptor("mxfp4", 4, 1, GROUP, GROUP / 2, DType.U8,
                QuantDescriptor.ScaleEncoding.E8M0, "scales u8 [rows, cols/32], one E8M0 per 32 values of a row",
                QuantDescriptor.NibbleOrder.LOW_FIRST, E2m1.VALUES.clone(), false, false).check();
    }

    private Mxfp4() {
    }

    @Override
    public QuantDescriptor descriptor() {
        return DESCRIPTOR;
    }

    @Override
    public boolean e2m1() {
        return true;
    }

    @Override
    public long storageBytes(long rows, long cols) {
        return rows * (cols / 2) + rows * (cols / GROUP);
    }

    @Override
    public void checkParts(long rows, long cols, Tensor codes, Tensor scales, Tensor zeros, float globalScale) {
        QuantParts.requireGroups(name(), rows, cols, GROUP);
        QuantParts.expect(name(), "blocks (codes)", rows, cols, codes, DType.U8,
                new long[]{rows, cols / GROUP, GROUP / 2}, new long[]{rows, cols / 2});
        QuantParts.expect(name(), "scales", rows, cols, scales, DType.U8, new long[]{rows, cols / GROUP});
        QuantParts.requireNull(name(), "zero points", zeros);
        QuantParts.requireGlobalScaleOne(name(), globalScale);
    }

    /** The matrix gpt-oss stores as {@code blocks} u8 [rows, groups, 16] and {@code scales} u8 [rows, groups]. */
    public static QuantizedTensor fromBlocks(Tensor blocks, Tensor scales) {
        if (blocks.rank() != 3) {
            throw new IllegalArgumentException("mxfp4: blocks must be u8 [rows, groups, 16], got " + blocks);
        }
        return new QuantizedTensor(INSTANCE, blocks.dim(0), blocks.dim(1) * GROUP, blocks, scales);
    }

    @Override
    public void rowScales(QuantizedTensor w, long row, float[] scales, int[] zeros) {
        int groups = Math.toIntExact(w.cols() / GROUP);
        Tensor s = w.scales();
        long o = s.byteOffset() + row * groups;
        for (int g = 0; g < groups; g++) {
            scales[g] = E8M0[s.segment().get(ValueLayout.JAVA_BYTE, o + g) & 0xFF];
        }
    }

    @Override
    public void dequantizeRow(QuantizedTensor w, long row, float[] out) {
        int cols = Math.toIntExact(w.cols());
        int groups = cols / GROUP;
        MemorySegment codes = w.codes().segment();
        long co = w.codes().byteOffset() + row * (cols / 2);
        Tensor s = w.scales();
        long so = s.byteOffset() + row * groups;
        for (int g = 0; g < groups; g++) {
            float scale = E8M0[s.segment().get(ValueLayout.JAVA_BYTE, so + g) & 0xFF];
            for (int k = 0; k < GROUP / 2; k++) {
                int b = codes.get(ValueLayout.JAVA_BYTE, co + g * (GROUP / 2) + k);
                out[g * GROUP + 2 * k] = E2m1.VALUES[b & 15] * scale;
                out[g * GROUP + 2 * k + 1] = E2m1.VALUES[(b >>> 4) & 15] * scale;
            }
        }
    }

    /** The E8M0 byte for a block whose largest magnitude is {@code amax} (see the class comment). */
    static int scaleByte(float amax) {
        if (amax == 0) {
            return 0;
        }
        int e = Math.getExponent((double) amax);
        double mantissa = Math.scalb((double) amax, -e); // in [1, 2)
        if (mantissa >= 1.75) {
            e++;
        }
        return Math.max(0, Math.min(254, e - 2 + 127));
    }

    @Override
    public QuantizedTensor quantize(Tensor weight) {
        int[] shape = QuantParts.matrixShape(name(), weight);
        int rows = shape[0];
        int cols = shape[1];
        QuantParts.requireGroups(name(), rows, cols, GROUP);
        int groups = cols / GROUP;
        Tensor codes = QuantParts.allocate(DType.U8, rows, groups, GROUP / 2); // [rows, cols/32, 16]
        Tensor scales = QuantParts.allocate(DType.U8, rows, groups);           // [rows, cols/32]
        float[] x = new float[cols];
        for (int r = 0; r < rows; r++) {
            QuantParts.readRow(weight, r, x);
            QuantParts.requireFinite(name(), x, r, cols);
            for (int g = 0; g < groups; g++) {
                int e = scaleByte(QuantParts.absMax(x, g * GROUP, (g + 1) * GROUP));
                scales.segment().set(ValueLayout.JAVA_BYTE, scales.byteOffset() + (long) r * groups + g, (byte) e);
                float s = E8M0[e];
                long co = codes.byteOffset() + (long) r * (cols / 2) + (long) g * (GROUP / 2);
                for (int k = 0; k < GROUP / 2; k++) {
                    int lo = E2m1.encode(x[g * GROUP + 2 * k] / s);
                    int hi = E2m1.encode(x[g * GROUP + 2 * k + 1] / s);
                    codes.segment().set(ValueLayout.JAVA_BYTE, co + k, (byte) (lo | hi << 4));
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
