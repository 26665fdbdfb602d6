package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * {@code fp8-block128-ue8m0}: {@link Fp8Block128} with power-of-two block scales stored as one
 * E8M0 byte each, as DeepSeek V4 ships its FP8 linears ({@code quantization_config}:
 * {@code scale_fmt ue8m0}, {@code weight_block_size [128, 128]}).
 *
 * <p>Parts of a [rows, cols] matrix: codes f8e4m3 [rows, cols]; scales u8 [ceil(rows/128),
 * ceil(cols/128)], byte {@code e} meaning {@code 2^(e−127)} ({@code float8_e8m0fnu}, safetensors
 * dtype {@code F8_E8M0}, read as raw bytes; {@code 0xFF} is NaN). {@code w = e4m3(code) · 2^(e−127)}.
 *
 * <p>Sources: DeepSeek V4's reference inference code ({@code inference/model.py} shipped with the
 * DeepSeek-V4 checkpoints): {@code Transformer.__init__} sets {@code scale_fmt = "ue8m0"} and
 * {@code scale_dtype = torch.float8_e8m0fnu} when {@code args.scale_dtype == "fp8"}, and
 * {@code Linear.__init__} allocates the FP8 weight's scale as [ceil(out/128), ceil(in/128)] of
 * {@code scale_dtype}. DeepSeek V3.1 ({@code deepseek-ai/DeepSeek-V3} at
 * {@code 9b4e9788e4a3a731f7567338ed15d3ec549ce03b}, {@code inference/configs/config_v3.1.json}
 * {@code scale_fmt: ue8m0}, {@code inference/model.py} {@code Linear}: scale dtype
 * {@code torch.float32}) keeps ue8m0 scales as f32 powers of two: convert them with
 * {@link #scalesFromF32}. The scale rule is {@code inference/kernel.py}'s {@code act_quant} with
 * {@code scale_fmt == "ue8m0"}: {@code s = 2^ceil(log2(amax/448))}.
 *
 * <p>Quantizer rounding: per block {@code s = 2^ceil(log2(max(amax, 1e-4)/448))} (the smallest power
 * of two not below the f32 quotient, exponent byte clamped to [0, 254]), codes {@code e4m3(x/s)}
 * rounded to nearest even ({@code x/s} is exact). {@code |x/s| ≤ 448}, and the error of each value
 * is at most {@code s·max(|x/s|·2^-4, 2^-10)}.
 */
public final class Fp8Block128Ue8m0 extends Fp8BlockFormat {

    /** The format, registered as {@code fp8-block128-ue8m0}. */
    public static final Fp8Block128Ue8m0 INSTANCE = new Fp8Block128Ue8m0();

    private static final QuantDescriptor DESCRIPTOR;

    static {
        DESCRIPTOR = new QuantDescriptor("fp8-block128-ue8m0", 8, BLOCK, BLOCK, BLOCK, DType.F8E4M3,
                QuantDescriptor.ScaleEncoding.E8M0, "scale u8 E8M0 [ceil(rows/128), ceil(cols/128)]",
                QuantDescriptor.NibbleOrder.NONE, codeTable(), false, false).check();
        if (!Arrays.equals(DESCRIPTOR.codeTable(), Fp8Block128.INSTANCE.descriptor().codeTable())) {
            throw new IllegalStateException("fp8-block128-ue8m0 must share fp8-block128's E4M3 code table");
        }
    }

    private Fp8Block128Ue8m0() {
    }

    @Override
    public QuantDescriptor descriptor() {
        return DESCRIPTOR;
    }

    @Override
    String scaleName() {
        return "scale";
    }

    @Override
    float scale(QuantizedTensor w, long rb, long cb) {
        Tensor s = w.scales();
        return Mxfp4.E8M0[s.segment().get(ValueLayout.JAVA_BYTE, s.byteOffset() + rb * s.dim(1) + cb) & 0xFF];
    }

    /** The E8M0 byte of the smallest power of two {@code >= s} (s positive, finite). */
    static int ceilPowerOfTwoByte(float s) {
        int e = Math.getExponent((double) s);
        if (Math.scalb((double) s, -e) > 1.0) {
            e++;
        }
        return Math.max(0, Math.min(254, e + 127));
    }

    @Override
    float writeScale(Tensor scales, long index, float amax) {
        int e = ceilPowerOfTwoByte(amax / E4M3_MAX);
        scales.segment().set(ValueLayout.JAVA_BYTE, scales.byteOffset() + index, (byte) e);
        return Mxfp4.E8M0[e];
    }

    /**
     * E8M0 bytes for an f32 scale tensor whose values are powers of two (DeepSeek V3.1's
     * {@code weight_scale_inv}); throws naming the first element that is not.
     */
    public static Tensor scalesFromF32(Tensor weightScaleInv) {
        if (weightScaleInv.dtype() != DType.F32 || weightScaleInv.rank() != 2) {
            throw new IllegalArgumentException("fp8-block128-ue8m0: weight_scale_inv must be f32 [row blocks, col blocks], got "
                    + weightScaleInv);
        }
        Tensor out = QuantParts.allocate(DType.U8, weightScaleInv.shape());
        for (long i = 0; i < weightScaleInv.dim(0); i++) {
            for (long j = 0; j < weightScaleInv.dim(1); j++) {
                float s = weightScaleInv.getFloat(i, j);
                int e = s > 0 && Float.isFinite(s) ? ceilPowerOfTwoByte(s) : -1;
                if (e < 0 || Mxfp4.E8M0[e] != s) {
                    throw new IllegalArgumentException("fp8-block128-ue8m0: weight_scale_inv[" + i + ", " + j + "] = " + s
                            + " is not a power of two in E8M0's range");
                }
                out.setLong(e, i, j);
            }
        }
        return out;
    }
}
