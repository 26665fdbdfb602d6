package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Fp8Block128;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.Mxfp4;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightLoader;
import org.orbitrl.model.nn.WeightSource;

import java.util.Set;

/**
 * Reads one DeepSeek V4 linear weight [out, in] in whichever layout the checkpoint holds it,
 * without re-quantizing:
 * <ul>
 *   <li>bf16/f32 {@code <module>.weight}, or the other layouts {@link WeightLoader} reads;</li>
 *   <li>FP8 E4M3 {@code <module>.weight} [out, in] with one scale per 128×128 block
 *       [ceil(out/128), ceil(in/128)]: {@code <module>.weight_scale_inv} f32 (DeepSeek V3 style, a
 *       multiplier despite its name) or, with {@code scale_fmt: ue8m0}, E8M0 exponent bytes
 *       ({@code F8_E8M0}, read as u8) under {@code weight_scale_inv} or DeepSeek's own name
 *       {@code <module>.scale}: {@link Fp8Block128} / {@link Fp8Block128Ue8m0};</li>
 *   <li>FP4 routed experts ({@code expert_dtype: fp4}): {@code <module>.weight} i8/u8 [out, in/2],
 *       two E2M1 codes per byte, value 2k in the low nibble and 2k+1 in the high nibble, with
 *       {@code <module>.scale} E8M0 [out, in/32], one power-of-two scale per 32 values of a row:
 *       {@link Mxfp4}.</li>
 * </ul>
 * Sources for the FP4 layout: transformers' fine-grained quantization integration,
 * https://github.com/huggingface/transformers/blob/main/src/transformers/integrations/finegrained/core.py
 * ({@code weight_formats()["mxfp4"]}: int8 weights packing two E2M1 values per byte along the
 * input dim, {@code float8_e8m0fnu} scales at group (1, 32); {@code finegrained_linear}: weights
 * "(N, K // 2) int8 (FP4-packed)", scales "float8_e8m0fnu (DeepSeek-V4)") and
 * https://github.com/huggingface/transformers/blob/main/src/transformers/integrations/finegrained/conversions.py
 * ({@code FineGrainedViewPackedInt8}: the checkpoint's packed-FP4 bytes are bit-cast, never
 * converted; {@code FineGrainedPackedBlocks}: "two low-nibble-first E2M1 values per byte"). The
 * released checkpoints' tensor listing ({@code layers.N.ffn.experts.E.w1.weight} I8 [out, in/2],
 * {@code .w1.scale} F8_E8M0 [out, in/32]; FP8 linears {@code attn.wq_a.weight} F8_E4M3 with an
 * F8_E8M0 {@code .scale}) agrees. The FP8 block layout is DeepSeek's ({@link Fp8Block128Ue8m0}).
 */
final class DeepseekV4Weights {
    private final WeightSource src;
    private final Set<String> used;
    private final WeightLoader plain;

    DeepseekV4Weights(WeightSource src, Set<String> used, WeightLoader plain) {
        this.src = src;
        this.used = used;
        this.plain = plain;
    }

    private Tensor take(String name) {
        used.add(name);
        return src.tensor(name, -1, -1);
    }

    private static long cdiv(long a, long b) {
        return (a + b - 1) / b;
    }

    /** The weight of {@code module} as a {@link Weight} (dense or quantized as stored). */
    Weight weight(String module, int out, int in) {
        String w = module + ".weight";
        if (!src.has(w)) {
            return plain.weight(module, out, in);
        }
        Tensor info = src.tensor(w, -1, -1);
        DType dt = info.dtype();
        if (dt == DType.F8E4M3) {
            Tensor codes = take(w).expect(w, DType.F8E4M3, out, in);
            String scaleName = src.has(module + ".weight_scale_inv") ? module + ".weight_scale_inv" : module + ".scale";
            if (!src.has(scaleName)) {
                throw new IllegalArgumentException(w + " is FP8 E4M3 but the checkpoint has neither "
                        + module + ".weight_scale_inv nor " + module + ".scale");
            }
            Tensor scale = take(scaleName);
            long[] grid = {cdiv(out, 128), cdiv(in, 128)};
            if (scale.dtype() == DType.F32) {
                return Weight.of(QuantizedTensor.named(module, Fp8Block128.INSTANCE, out, in, codes,
                        scale.expect(scaleName, DType.F32, grid), null, 1f));
            }
            return Weight.of(QuantizedTensor.named(module, Fp8Block128Ue8m0.INSTANCE, out, in, codes,
                    asBytes(scale).expect(scaleName + " (E8M0)", DType.U8, grid), null, 1f));
        }
        if (dt == DType.I8 || dt == DType.U8) {
            if (in % 32 != 0) {
                throw new IllegalArgumentException(w + ": FP4 weights need an input dim divisible by 32, got " + in);
            }
            Tensor codes = asBytes(take(w)).expect(w + " (packed E2M1)", DType.U8, out, in / 2);
            String scaleName = src.has(module + ".scale") ? module + ".scale" : module + ".weight_scale_inv";
            if (!src.has(scaleName)) {
                throw new IllegalArgumentException(w + " is packed FP4 but the checkpoint has no " + module + ".scale");
            }
            Tensor scale = asBytes(take(scaleName)).expect(scaleName + " (E8M0)", DType.U8, out, in / 32);
            return Weight.of(QuantizedTensor.named(module, Mxfp4.INSTANCE, out, in, codes, scale, null, 1f));
        }
        return plain.weight(module, out, in);
    }

    /** The same bytes as u8 (E8M0 exponents, packed E2M1 codes). */
    private static Tensor asBytes(Tensor t) {
        if (t.dtype() == DType.U8) {
            return t;
        }
        if (t.dtype().bytes() != 1) {
            throw new IllegalArgumentException("expected a one-byte tensor, got " + t);
        }
        Tensor c = t.contiguous();
        return Tensor.wrap(c.segment().asSlice(c.byteOffset(), c.byteSize()), DType.U8, c.shape());
    }
}
