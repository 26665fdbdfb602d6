package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * {@code nvfp4}: NVIDIA NVFP4: E2M1 values, one FP8 E4M3 scale per 16 values of a row, and one
 * f32 global scale per matrix, in compressed-tensors' {@code nvfp4-pack-quantized} layout.
 *
 * <p>Parts of a [rows, cols] matrix (cols a multiple of 16):
 * <ul>
 *   <li>{@code weight_packed} u8 [rows, cols/2] (codes): value {@code 2k} in the low nibble of
 *       byte {@code k}, {@code 2k+1} in the high nibble; E2M1 codes as in {@link Mxfp4}.</li>
 *   <li>{@code weight_scale} f8e4m3 [rows, cols/16] (scales).</li>
 *   <li>{@code weight_global_scale} f32 [1] ({@link QuantizedTensor#globalScale()}): a
 *       <em>divisor</em>. compressed-tensors computes it as {@code 448·6 / amax(W)} and
 *       dequantizes {@code w = E2M1[code] · (scale / globalScale)}.</li>
 * </ul>
 * Dequantized value here: {@code w = E2M1[code] · fl(e4m3(scale) / globalScale)}, the same f32
 * operations as compressed-tensors' {@code _dequantize}.
 *
 * <p>NVIDIA ModelOpt checkpoints store the same codes as {@code weight}, the same
 * {@code weight_scale}, and {@code weight_scale_2 = amax(W)/(448·6)}: the <em>inverse</em>, used
 * as a multiplier ({@code w = E2M1 · scale · weight_scale_2}). compressed-tensors' converter
 * takes {@code weight_global_scale = 1/weight_scale_2}; {@link #fromModelOpt} does the same, so
 * values agree with ModelOpt's product to within f32 rounding of the reciprocal (relative 2^-23).
 *
 * <p>Sources: {@code vllm-project/compressed-tensors} at {@code ac8e2ba82f4e0d5eaa40069f8fc642738f124cd4}:
 * {@code compressors/nvfp4/base.py} (tensor names, decompress), {@code compressors/nvfp4/helpers.py}
 * ({@code pack_fp4_to_uint8}, {@code unpack_fp4_from_uint8}), {@code quantization/utils/helpers.py}
 * ({@code generate_gparam}: {@code 448·6/amax}; {@code calculate_qparams}: group scale
 * {@code globalScale · amax_g/6} rounded to E4M3), {@code lifecycle/forward_helpers.py}
 * ({@code scale / global_scale}), {@code entrypoints/convert/converters/modelopt_nvfp4.py}
 * ({@code weight_scale_2 → 1/x}).
 *
 * <p>Quantizer rounding (compressed-tensors' observer): {@code globalScale = 2688/amax(W)} in f32
 * (1 for an all-zero matrix); per group {@code scale = e4m3(globalScale · (amax_g/6))} rounded to
 * nearest even and saturating at 448 (a zero scale becomes 0.125, E4M3's epsilon, as upstream);
 * values {@code x / fl(scale/globalScale)} rounded to the nearest E2M1 value, ties to even,
 * saturating at ±6. The error of each value is at most {@code eff·max(h, |x|/eff − 6)} with
 * {@code eff = scale/globalScale} and {@code h} half the E2M1 spacing (0.25, 0.5, 1).
 */
public final class Nvfp4 implements QuantFormat, NibblePacked {

    /** The format, registered as {@code nvfp4}. */
    public static final Nvfp4 INSTANCE = new Nvfp4();

    static final int GROUP = 16;
    /** E4M3 max times E2M1 max: the numerator of compressed-tensors' global scale. */
    static final float GLOBAL_NUMERATOR = 448f * 6f;
    private static final byte E4M3_EPS = Numerics.floatToE4m3(0.125f);

    private static final QuantDescriptor DESCRIPTOR;

    static {
        DESCRIPTOR = new QuantDescriptor("nvfp4", 4, 1, GROUP, GROUP / 2, DType.U8,
                QuantDescriptor.ScaleEncoding.E4M3,
                "weight_scale f8e4m3 [rows, cols/16], one per 16 values of a row; weight_global_scale f32 divisor",
                QuantDescriptor.NibbleOrder.LOW_FIRST, E2m1.VALUES.clone(), false, true).check();
        if (Numerics.e4m3ToFloat(E4M3_EPS) != 0.125f) {
            throw new IllegalStateException("nvfp4: E4M3 epsilon must be 0.125");
        }
    }

    private Nvfp4() {
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
        return rows * (cols / 2) + rows * (cols / GROUP) + 4;
    }

    @Override
    public void checkParts(long rows, long cols, Tensor codes, Tensor scales, Tensor zeros, float globalScale) {
        QuantParts.requireGroups(name(), rows, cols, GROUP);
        QuantParts.expect(name(), "weight_packed (codes)", rows, cols, codes, DType.U8, new long[]{rows, cols / 2});
        QuantParts.expect(name(), "weight_scale (scales)", rows, cols, scales, DType.F8E4M3, new long[]{rows, cols / GROUP});
        QuantParts.requireNull(name(), "zero points", zeros);
        if (!(globalScale > 0) || !Float.isFinite(globalScale)) {
            throw new IllegalArgumentException(name() + ": weight_global_scale must be finite and > 0, got " + globalScale);
        }
    }

    /** The matrix compressed-tensors stores as {@code weight_packed}, {@code weight_scale}, {@code weight_global_scale} (f32 [1] or []). */
    public static QuantizedTensor fromCompressedTensors(Tensor weightPacked, Tensor weightScale, Tensor weightGlobalScale) {
        float gs = scalar("weight_global_scale", weightGlobalScale);
        return new QuantizedTensor(INSTANCE, weightPacked.dim(0), weightPacked.dim(-1) * 2, weightPacked, weightScale,
                null, gs);
    }

    /** The matrix ModelOpt stores as {@code weight}, {@code weight_scale}, {@code weight_scale_2} (global scale {@code 1/weight_scale_2}). */
    public static QuantizedTensor fromModelOpt(Tensor weight, Tensor weightScale, Tensor weightScale2) {
        float s2 = scalar("weight_scale_2", weightScale2);
        return new QuantizedTensor(INSTANCE, weight.dim(0), weight.dim(-1) * 2, weight, weightScale, null, 1f / s2);
    }

    private static float scalar(String what, Tensor t) {
        if (t.dtype() != DType.F32 || t.numel() != 1) {
            throw new IllegalArgumentException("nvfp4: " + what + " must be one f32 value, got " + t);
        }
        return t.reshape(1).getFloat(0);
    }

    @Override
    public void rowScales(QuantizedTensor w, long row, float[] scales, int[] zeros) {
        int groups = Math.toIntExact(w.cols() / GROUP);
        Tensor s = w.scales();
        long o = s.byteOffset() + row * groups;
        float gs = w.globalScale();
        for (int g = 0; g < groups; g++) {
            scales[g] = Numerics.e4m3ToFloat(s.segment().get(ValueLayout.JAVA_BYTE, o + g)) / gs;
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
        float gs = w.globalScale();
        for (int g = 0; g < groups; g++) {
            float scale = Numerics.e4m3ToFloat(s.segment().get(ValueLayout.JAVA_BYTE, so + g)) / gs;
            for (int k = 0; k < GROUP / 2; k++) {
                int b = codes.get(ValueLayout.JAVA_BYTE, co + g * (GROUP / 2) + k);
                out[g * GROUP + 2 * k] = E2m1.VALUES[b & 15] * scale;
                out[g * GROUP + 2 * k + 1] = E2m1.VALUES[(b >>> 4) & 15] * scale;
            }
        }
    }

    @Override
    public QuantizedTensor quantize(Tensor weight) {
        int[] shape = QuantParts.matrixShape(name(), weight);
        int rows = shape[0];
        int cols = shape[1];
        QuantParts.requireGroups(name(), rows, cols, GROUP);
        int groups = cols / GROUP;
        float[] x = new float[cols];
        float amax = 0;
        for (int r = 0; r < rows; r++) {
            QuantParts.readRow(weight, r, x);
            QuantParts.requireFinite(name(), x, r, cols);
            amax = Math.max(amax, QuantParts.absMax(x, 0, cols));
        }
        float gs = GLOBAL_NUMERATOR / Math.max(amax, Float.MIN_NORMAL);
        if (!Float.isFinite(gs)) {
            gs = 1f;
        }
        Tensor codes = QuantParts.allocate(DType.U8, rows, cols / 2);          // [rows, cols/2]
        Tensor scales = QuantParts.allocate(DType.F8E4M3, rows, groups);       // [rows, cols/16]
        MemorySegment cs = codes.segment();
        for (int r = 0; r < rows; r++) {
            QuantParts.readRow(weight, r, x);
            for (int g = 0; g < groups; g++) {
                float ideal = gs * (QuantParts.absMax(x, g * GROUP, (g + 1) * GROUP) / 6f);
                byte sb = Numerics.floatToE4m3(ideal);
                if (Numerics.e4m3ToFloat(sb) == 0) {
                    sb = E4M3_EPS;
                }
                scales.segment().set(ValueLayout.JAVA_BYTE, scales.byteOffset() + (long) r * groups + g, sb);
                float eff = Numerics.e4m3ToFloat(sb) / gs;
                long co = codes.byteOffset() + (long) r * (cols / 2) + (long) g * (GROUP / 2);
                for (int k = 0; k < GROUP / 2; k++) {
                    int lo = E2m1.encode(x[g * GROUP + 2 * k] / eff);
                    int hi = E2m1.encode(x[g * GROUP + 2 * k + 1] / eff);
                    cs.set(ValueLayout.JAVA_BYTE, co + k, (byte) (lo | hi << 4));
                }
            }
        }
        return new QuantizedTensor(this, rows, cols, codes, scales, null, gs);
    }

    @Override
    public String toString() {
        return name();
    }
}
