package org.orbitrl.model.nn;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Fp8Block128;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.Int4G32Asym;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;
import java.util.Set;

/**
 * Reads one linear layer's base weight as the checkpoint stores it, without re-quantizing:
 * <ul>
 *   <li>{@code <module>.weight} f32/bf16: a dense weight (a zero-copy view of the mapped file);</li>
 *   <li>{@code <module>.weight} FP8 E4M3 with {@code weight_scale_inv} per 128×128 block (fine-grained fp8, as Qwen's
 *       and DeepSeek's fp8 releases ship it);</li>
 *   <li>compressed-tensors {@code pack-quantized} INT4 group-32 (Kimi-K2.x):
 *       {@code weight_packed} i32 [out, in/8], {@code weight_scale} bf16 [out, in/32],
 *       {@code weight_shape} [2], and {@code weight_zero_point} for the asymmetric variant.</li>
 * </ul>
 * Every name read is recorded in {@code used}, so a loader can report tensors nobody read.
 */
public final class WeightLoader {
    private final WeightSource source;
    private final Set<String> used;

    public WeightLoader(WeightSource source, Set<String> used) {
        this.source = source;
        this.used = used;
    }

    /** A tensor that must exist with exactly this shape. */
    public Tensor tensor(String name, long... shape) {
        used.add(name);
        return source.tensor(name, shape);
    }

    public boolean has(String name) {
        return source.has(name);
    }

    /** The base weight [out, in] of {@code module}, in whichever supported layout the checkpoint has. */
    public Weight weight(String module, long out, long in) {
        if (source.has(module + ".weight")) {
            Tensor w = tensor(module + ".weight", out, in);
            if (w.dtype() != DType.F8E4M3 && w.dtype() != DType.BF16 && w.dtype() != DType.F32) {
                throw new IllegalArgumentException(module + ".weight is " + w.dtype().name().toLowerCase(java.util.Locale.ROOT)
                        + " [" + out + ", " + in + "]: expected bf16, f32, or fp8 e4m3 with its weight_scale_inv");
            }
            return w.dtype() == DType.F8E4M3 ? fp8(module, w, out, in) : Weight.of(w);
        }
        if (source.has(module + ".weight_packed")) {
            Tensor shape = tensor(module + ".weight_shape", 2);
            long[] s = shape.toLongArray();
            if (s[0] != out || s[1] != in) {
                throw new IllegalArgumentException(module + ".weight_shape is " + Arrays.toString(s) + ", expected ["
                        + out + ", " + in + "]");
            }
            Tensor packed = tensor(module + ".weight_packed", out, in / 8);
            Tensor scale = source.tensor(module + ".weight_scale", out, in / 32);
            used.add(module + ".weight_scale");
            QuantizedTensor q;
            if (source.has(module + ".weight_zero_point")) {
                Tensor zero = tensor(module + ".weight_zero_point", (out + 7) / 8, in / 32);
                q = Int4G32Asym.fromCheckpoint(packed, scale, zero, shape);
            } else {
                q = Int4G32.fromCheckpoint(packed, scale, shape);
            }
            return Weight.of(q);
        }
        throw new IllegalArgumentException("the model's safetensors have no weight for " + module + " (looked for " + module
                + ".weight and " + module + ".weight_packed)");
    }

    /**
     * A fine-grained FP8 weight (Qwen's and DeepSeek's fp8 releases): E4M3 codes with one inverse scale a 128×128 block,
     * {@code weight_scale_inv} f32 or bf16 [⌈out/128⌉, ⌈in/128⌉] (bf16 widened, exactly).
     */
    private Weight fp8(String module, Tensor codes, long out, long in) {
        String name = module + ".weight_scale_inv";
        if (!source.has(name)) {
            throw new IllegalArgumentException(module + ".weight is FP8 E4M3 but the checkpoint has no " + name
                    + " (one scale a 128x128 block expected)");
        }
        Tensor scales = tensor(name, (out + 127) / 128, (in + 127) / 128);
        if (scales.dtype() != DType.F32 && scales.dtype() != DType.BF16) {
            throw new IllegalArgumentException(name + " must be f32 or bf16, got " + scales.dtype());
        }
        return Weight.of(QuantizedTensor.named(module, Fp8Block128.INSTANCE, out, in, codes,
                scales.dtype() == DType.F32 ? scales : scales.to(DType.F32), null, 1f));
    }

    /** The bias [out] of {@code module}. */
    public Tensor bias(String module, long out) {
        return tensor(module + ".bias", out);
    }

    static boolean floating(Tensor t) {
        return t.dtype() == DType.F32 || t.dtype() == DType.BF16;
    }
}
