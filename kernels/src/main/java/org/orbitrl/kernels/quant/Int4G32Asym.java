package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;

/**
 * {@code int4-g32-asym}: compressed-tensors {@code pack-quantized}, asymmetric INT4 group 32
 * ({@code symmetric false}): {@link Int4G32}'s {@code weight_packed} and {@code weight_scale},
 * plus a zero point per group.
 *
 * <p>{@code weight_zero_point} int32 [ceil(rows/8), cols/32] (the {@link QuantizedTensor#zeros()}):
 * the int8 zero points [rows, cols/32] packed with the same 4-bit packing but along dimension 0
 * ({@code pack_to_int32(zero_point, 4, packed_dim=0)}): the zero point of row {@code r}, group
 * {@code g} is the nibble at bits {@code 4·(r mod 8)} of word {@code [r/8, g]}, stored as
 * {@code zp + 8}. Sign convention: {@code q = round(x/scale + zp)}, {@code w = (q − zp)·scale};
 * the observer sets {@code zp = −8 − min/scale} so the group minimum maps to −8.
 *
 * <p>Source: {@code vllm-project/compressed-tensors} at commit
 * {@code ac8e2ba82f4e0d5eaa40069f8fc642738f124cd4}: {@code compressors/pack_quantized/base.py}
 * ({@code compress}/{@code decompress}: zero point packed with {@code packed_dim=0}, unpacked to
 * shape {@code (rows, cols/group)}; packing along dim 0 since commit {@code ed3ac7c}, 2025-04-17),
 * {@code pack_quantized/helpers.py}, {@code quantization/utils/helpers.py}
 * ({@code calculate_qparams}: {@code scale = (max−min)/15}, {@code zp = −8 − min/scale}, min and
 * max first widened to include 0), {@code lifecycle/forward_helpers.py}.
 *
 * <p>Dequantized value {@code w = float(q − zp) · scale} in f32, exact (compressed-tensors
 * computes it in bf16, i.e. {@code roundBf16} of this).
 *
 * <p>Quantizer rounding: per group {@code min = min(x, 0)}, {@code max = max(x, 0)},
 * {@code scale = (max−min)/15} rounded <em>up</em> to bf16 (all-zero group: 2^-7),
 * {@code zp = clamp(rint(−8 − min/scale), −8, 7)}, {@code q = clamp(rint(x/scale + zp), −8, 7)},
 * rint rounding half to even on f32 values. Rounding the scale up keeps every {@code x/scale + zp}
 * inside [−8.5, 7.5], so {@code |w − x| ≤ scale/2} (up to f32 rounding of the quotient).
 */
public final class Int4G32Asym extends Int4PackQuantized {

    /** The format, registered as {@code int4-g32-asym}. */
    public static final Int4G32Asym INSTANCE = new Int4G32Asym();

    private static final QuantDescriptor DESCRIPTOR;

    static {
        DESCRIPTOR = new QuantDescriptor("int4-g32-asym", 4, 1, GROUP, GROUP / 2, DType.I32,
                QuantDescriptor.ScaleEncoding.BF16,
                "weight_scale [rows, cols/32]; weight_zero_point int32 [ceil(rows/8), cols/32] packed along rows",
                QuantDescriptor.NibbleOrder.LOW_FIRST, codeTable(), true, false).check();
    }

    private Int4G32Asym() {
    }

    @Override
    public QuantDescriptor descriptor() {
        return DESCRIPTOR;
    }

    @Override
    public long storageBytes(long rows, long cols) {
        return super.storageBytes(rows, cols) + (rows + PER_WORD - 1) / PER_WORD * (cols / GROUP) * 4;
    }

    @Override
    int zeroNibble(QuantizedTensor w, long row, int g) {
        long groups = w.cols() / GROUP;
        Tensor z = w.zeros();
        int word = z.segment().get(QuantParts.I32, z.byteOffset() + 4 * ((row / PER_WORD) * groups + g));
        return (word >>> (4 * (int) (row % PER_WORD))) & 15;
    }

    @Override
    public void checkParts(long rows, long cols, Tensor codes, Tensor scales, Tensor zeros, float globalScale) {
        checkCodesAndScales(rows, cols, codes, scales);
        if (zeros == null) {
            throw new IllegalArgumentException(name() + ": weight_zero_point (zeros) is required");
        }
        QuantParts.expect(name(), "weight_zero_point (zeros)", rows, cols, zeros, DType.I32,
                new long[]{(rows + PER_WORD - 1) / PER_WORD, cols / GROUP});
        QuantParts.requireGlobalScaleOne(name(), globalScale);
    }

    /** The matrix a checkpoint stores as {@code weight_packed}, {@code weight_scale}, {@code weight_zero_point}, {@code weight_shape}. */
    public static QuantizedTensor fromCheckpoint(Tensor weightPacked, Tensor weightScale, Tensor weightZeroPoint,
                                                 Tensor weightShape) {
        long[] shape = weightShape(INSTANCE.name(), weightShape);
        return new QuantizedTensor(INSTANCE, shape[0], shape[1], weightPacked, weightScale, weightZeroPoint, 1f);
    }

    @Override
    public QuantizedTensor quantize(Tensor weight) {
        int[] shape = QuantParts.matrixShape(name(), weight);
        int rows = shape[0];
        int cols = shape[1];
        QuantParts.requireGroups(name(), rows, cols, GROUP);
        int groups = cols / GROUP;
        Tensor codes = QuantParts.allocate(DType.I32, rows, cols / PER_WORD);                  // [rows, cols/8]
        Tensor scales = QuantParts.allocate(DType.BF16, rows, groups);                         // [rows, cols/32]
        Tensor zeros = QuantParts.allocate(DType.I32, (rows + PER_WORD - 1) / PER_WORD, groups); // [ceil(rows/8), cols/32]
        MemorySegment zs = zeros.segment();
        float[] x = new float[cols];
        int[] u = new int[cols];
        for (int r = 0; r < rows; r++) {
            QuantParts.readRow(weight, r, x);
            QuantParts.requireFinite(name(), x, r, cols);
            for (int g = 0; g < groups; g++) {
                float min = 0;
                float max = 0;
                for (int c = g * GROUP; c < (g + 1) * GROUP; c++) {
                    min = Math.min(min, x[c]);
                    max = Math.max(max, x[c]);
                }
                float s = max == min ? ZERO_GROUP_SCALE : QuantParts.bf16AtLeast((max - min) / 15f);
                int zp = (int) Math.max(-8, Math.min(7, Math.rint(-8f - min / s)));
                scales.segment().set(QuantParts.I16, scales.byteOffset() + 2L * ((long) r * groups + g),
                        Numerics.floatToBf16(s));
                long zo = zeros.byteOffset() + 4L * ((long) (r / PER_WORD) * groups + g);
                zs.set(QuantParts.I32, zo, zs.get(QuantParts.I32, zo) | (zp + OFFSET) << (4 * (r % PER_WORD)));
                for (int c = g * GROUP; c < (g + 1) * GROUP; c++) {
                    int q = (int) Math.max(-8, Math.min(7, Math.rint(x[c] / s + zp)));
                    u[c] = q + OFFSET;
                }
            }
            packRow(u, cols, codes.segment(), codes.byteOffset() + (long) r * (cols / 2));
        }
        return new QuantizedTensor(this, rows, cols, codes, scales, zeros, 1f);
    }

    @Override
    public String toString() {
        return name();
    }
}
