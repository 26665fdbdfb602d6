package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/**
 * {@code fp8-block128}: FP8 E4M3 weights with one f32 scale per 128×128 block, as DeepSeek V3
 * (and Kimi-K2-Instruct) ship their linears ({@code quantization_config}: {@code quant_method fp8,
 * fmt e4m3, weight_block_size [128, 128]}).
 *
 * <p>Checkpoint tensors of a [rows, cols] linear (any rows, cols; edge blocks are partial):
 * <ul>
 *   <li>{@code weight} f8e4m3 [rows, cols] (codes, as stored);</li>
 *   <li>{@code weight_scale_inv} f32 [ceil(rows/128), ceil(cols/128)] (scales): despite the
 *       name, the multiplier: {@code w[r, c] = e4m3(weight[r, c]) · weight_scale_inv[r/128, c/128]}.</li>
 * </ul>
 * DeepSeek V3.1 checkpoints ({@code scale_fmt: ue8m0}) use the same f32 tensor holding powers of
 * two, so they load as this format unchanged (or as {@link Fp8Block128Ue8m0} through
 * {@link Fp8Block128Ue8m0#scalesFromF32}).
 *
 * <p>Source: {@code deepseek-ai/DeepSeek-V3} at {@code 9b4e9788e4a3a731f7567338ed15d3ec549ce03b}:
 * {@code inference/kernel.py} ({@code weight_dequant_kernel}: {@code y = x · s}, block 128),
 * {@code inference/model.py} ({@code Linear}: f32 scale [ceil(out/128), ceil(in/128)]),
 * {@code inference/convert.py} ({@code weight_scale_inv} renamed to {@code scale}).
 *
 * <p>Quantizer rounding: per block {@code scale = max(amax, 1e-4)/448} in f32 (DeepSeek's
 * {@code act_quant} rule, amax clamped at 1e-4), codes {@code e4m3(x/scale)} rounded to nearest
 * even and saturating at ±448 ({@link org.orbitrl.kernels.Numerics#floatToE4m3}). The error of each
 * value is at most half an E4M3 step: {@code scale·max(|x/scale|·2^-4, 2^-10)}.
 */
public final class Fp8Block128 extends Fp8BlockFormat {

    /** The format, registered as {@code fp8-block128}. */
    public static final Fp8Block128 INSTANCE = new Fp8Block128();

    private static final QuantDescriptor DESCRIPTOR;

    static {
        DESCRIPTOR = new QuantDescriptor("fp8-block128", 8, BLOCK, BLOCK, BLOCK, DType.F8E4M3,
                QuantDescriptor.ScaleEncoding.F32, "weight_scale_inv f32 [ceil(rows/128), ceil(cols/128)]",
                QuantDescriptor.NibbleOrder.NONE, codeTable(), false, false).check();
        float[] t = DESCRIPTOR.codeTable();
        if (t[0x7E] != E4M3_MAX || !Float.isNaN(t[0x7F]) || t[0x08] != 0x1p-6f) {
            throw new IllegalStateException("fp8-block128: E4M3 table must have max 448 at 0x7E, NaN at 0x7F, 2^-6 at 0x08");
        }
    }

    private Fp8Block128() {
    }

    @Override
    public QuantDescriptor descriptor() {
        return DESCRIPTOR;
    }

    @Override
    String scaleName() {
        return "weight_scale_inv";
    }

    @Override
    float scale(QuantizedTensor w, long rb, long cb) {
        Tensor s = w.scales();
        return s.segment().get(QuantParts.F32, s.byteOffset() + 4 * (rb * s.dim(1) + cb));
    }

    @Override
    float writeScale(Tensor scales, long index, float amax) {
        float s = amax / E4M3_MAX;
        scales.segment().set(QuantParts.F32, scales.byteOffset() + 4 * index, s);
        return s;
    }
}
