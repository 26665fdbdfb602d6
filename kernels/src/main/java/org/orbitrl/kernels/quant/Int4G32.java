package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

/**
 * {@code int4-g32}: compressed-tensors {@code pack-quantized}, symmetric INT4 with one bf16 scale
 * per 32 values of a row: the format Kimi-K2.x ships its routed experts in
 * ({@code quantization_config}: {@code num_bits 4, strategy group, group_size 32, symmetric true}).
 *
 * <p>Checkpoint tensors of a [rows, cols] linear (cols a multiple of 32):
 * <ul>
 *   <li>{@code weight_packed} int32 [rows, cols/8] (the {@link QuantizedTensor#codes()}, used as
 *       stored): value {@code c} of a row lives in word {@code c/8}, bits {@code 4·(c mod 8)}
 *       (first value in the least significant nibble), stored as the unsigned nibble
 *       {@code u = q + 8} of the signed value {@code q ∈ [−8, 7]}. The packed dimension is the
 *       last (columns).</li>
 *   <li>{@code weight_scale} bf16 [rows, cols/32] (the {@link QuantizedTensor#scales()}).</li>
 *   <li>{@code weight_shape} int32 [2] = {rows, cols} ({@link #fromCheckpoint}).</li>
 * </ul>
 * Dequantized value: {@code w = q · scale}, computed in f32 (exact: q has 4 bits and the scale 8
 * significant bits). compressed-tensors computes the product in the scale's dtype (bf16), so its
 * weight is {@code roundBf16} of this one.
 *
 * <p>Source: {@code vllm-project/compressed-tensors} at commit
 * {@code ac8e2ba82f4e0d5eaa40069f8fc642738f124cd4}:
 * {@code src/compressed_tensors/compressors/pack_quantized/helpers.py} ({@code pack_to_int32},
 * {@code unpack_from_int32}: offset {@code 1 << (num_bits−1)}, element {@code i} at bit
 * {@code i·num_bits}), {@code compressors/pack_quantized/base.py} (tensor names, packed dim 1),
 * {@code quantization/lifecycle/forward_helpers.py} ({@code _quantize}: {@code round(x/scale)}
 * clamped to [−8, 7]; {@code _dequantize}: {@code q·scale}).
 *
 * <p>Quantizer rounding: per group {@code scale = amax/7} rounded <em>up</em> to the next bf16
 * (an all-zero group gets scale 2^-7), then {@code q = clamp(rint(x/scale), −8, 7)} with
 * {@code rint} round-half-to-even (as {@code torch.round}) on the f32 quotient. So no value clips
 * and every error is at most half a step: {@code |w − x| ≤ scale/2}. (compressed-tensors' min-max
 * observer uses {@code amax/8} and clips the positive maximum to 7; the dequantization is the same.)
 */
public final class Int4G32 extends Int4PackQuantized {

    /** The format, registered as {@code int4-g32}. */
    public static final Int4G32 INSTANCE = new Int4G32();

    private static final QuantDescriptor DESCRIPTOR;

    static {
        DESCRIPTOR = new QuantDescriptor("int4-g32", 4, 1, GROUP, GROUP / 2, DType.I32,
                QuantDescriptor.ScaleEncoding.BF16, "weight_scale [rows, cols/32], one per 32 values of a row",
                QuantDescriptor.NibbleOrder.LOW_FIRST, codeTable(), false, false).check();
        float[] t = DESCRIPTOR.codeTable();
        if (t[0] != -8f || t[8] != 0f || t[15] != 7f) {
            throw new IllegalStateException("int4-g32 code table must map nibble u to u - 8");
        }
    }

    private Int4G32() {
    }

    @Override
    public QuantDescriptor descriptor() {
        return DESCRIPTOR;
    }

    @Override
    int zeroNibble(QuantizedTensor w, long row, int g) {
        return OFFSET;
    }

    @Override
    public void checkParts(long rows, long cols, Tensor codes, Tensor scales, Tensor zeros, float globalScale) {
        checkCodesAndScales(rows, cols, codes, scales);
        QuantParts.requireNull(name(), "zero points (it is symmetric; use int4-g32-asym)", zeros);
        QuantParts.requireGlobalScaleOne(name(), globalScale);
    }

    /** The matrix a checkpoint stores as {@code weight_packed}, {@code weight_scale}, {@code weight_shape}. */
    public static QuantizedTensor fromCheckpoint(Tensor weightPacked, Tensor weightScale, Tensor weightShape) {
        long[] shape = weightShape(INSTANCE.name(), weightShape);
        return new QuantizedTensor(INSTANCE, shape[0], shape[1], weightPacked, weightScale);
    }

    @Override
    public QuantizedTensor quantize(Tensor weight) {
        int[] shape = QuantParts.matrixShape(name(), weight);
        int rows = shape[0];
        int cols = shape[1];
        QuantParts.requireGroups(name(), rows, cols, GROUP);
        int groups = cols / GROUP;
        Tensor codes = QuantParts.allocate(DType.I32, rows, cols / PER_WORD); // [rows, cols/8]
        Tensor scales = QuantParts.allocate(DType.BF16, rows, groups);        // [rows, cols/32]
        float[] x = new float[cols];
        int[] u = new int[cols];
        for (int r = 0; r < rows; r++) {
            QuantParts.readRow(weight, r, x);
            QuantParts.requireFinite(name(), x, r, cols);
            for (int g = 0; g < groups; g++) {
                float amax = QuantParts.absMax(x, g * GROUP, (g + 1) * GROUP);
                float s = amax == 0 ? ZERO_GROUP_SCALE : QuantParts.bf16AtLeast(amax / 7f);
                scales.segment().set(QuantParts.I16, scales.byteOffset() + 2L * ((long) r * groups + g),
                        Numerics.floatToBf16(s));
                for (int c = g * GROUP; c < (g + 1) * GROUP; c++) {
                    int q = (int) Math.max(-8, Math.min(7, Math.rint(x[c] / s)));
                    u[c] = q + OFFSET;
                }
            }
            packRow(u, cols, codes.segment(), codes.byteOffset() + (long) r * (cols / 2));
        }
        return new QuantizedTensor(this, rows, cols, codes, scales);
    }

    @Override
    public String toString() {
        return name();
    }
}
