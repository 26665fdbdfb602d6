package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.arch.DeepseekV3Config;
import org.orbitrl.model.nn.WeightSource;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;

/**
 * The weights of a DeepSeek-V3 / Kimi-K2 model of any shape under their Hugging Face names, generated when the loader
 * asks for each tensor (seeded by name), as {@link RandomQwen3Moe} makes Qwen3-MoE's: the latent attention's
 * projections, the dense and shared MLPs, the router, embeddings and head bf16 uniform with standard deviation 0.02,
 * norms 1, the router's score-correction bias 0.02 uniform, and every routed expert directly as INT4 group-32 in the
 * compressed-tensors layout (Kimi-K2's as released), so nothing is quantized on the host. The config must say so
 * ({@code quantization_config} of compressed-tensors pack-quantized, as Kimi-K2's does).
 */
final class RandomDeepseekV3 implements WeightSource {
    private enum Kind { ONES, RANDOM, PACKED, SCALE, SHAPE, BIAS }

    private record Entry(Kind kind, long[] shape) {
    }

    private final Map<String, Entry> entries = new HashMap<>();
    private final long seed;

    RandomDeepseekV3(DeepseekV3Config c, long seed) {
        this.seed = seed;
        int h = c.hidden();
        int heads = c.heads();
        put("model.embed_tokens.weight", Kind.RANDOM, c.vocab(), h);
        for (int l = 0; l < c.layers(); l++) {
            String p = "model.layers." + l + ".";
            String a = p + "self_attn.";
            put(p + "input_layernorm.weight", Kind.ONES, h);
            put(p + "post_attention_layernorm.weight", Kind.ONES, h);
            if (c.qLoraRank() > 0) {
                put(a + "q_a_proj.weight", Kind.RANDOM, c.qLoraRank(), h);
                put(a + "q_a_layernorm.weight", Kind.ONES, c.qLoraRank());
                put(a + "q_b_proj.weight", Kind.RANDOM, (long) heads * c.qkHeadDim(), c.qLoraRank());
            } else {
                put(a + "q_proj.weight", Kind.RANDOM, (long) heads * c.qkHeadDim(), h);
            }
            put(a + "kv_a_proj_with_mqa.weight", Kind.RANDOM, c.cacheWidth(), h);
            put(a + "kv_a_layernorm.weight", Kind.ONES, c.kvLoraRank());
            put(a + "kv_b_proj.weight", Kind.RANDOM, (long) heads * (c.qkNope() + c.vHeadDim()), c.kvLoraRank());
            put(a + "o_proj.weight", Kind.RANDOM, h, (long) heads * c.vHeadDim());
            if (!c.isMoe(l)) {
                mlp(p + "mlp.", c.intermediate(), h);
                continue;
            }
            put(p + "mlp.gate.weight", Kind.RANDOM, c.experts(), h);
            if (c.scoreCorrectionBias()) {
                put(p + "mlp.gate.e_score_correction_bias", Kind.BIAS, c.experts());
            }
            for (int e = 0; e < c.experts(); e++) {
                String ep = p + "mlp.experts." + e + ".";
                expert(ep + "gate_proj", c.moeIntermediate(), h);
                expert(ep + "up_proj", c.moeIntermediate(), h);
                expert(ep + "down_proj", h, c.moeIntermediate());
            }
            if (c.sharedInter() > 0) {
                mlp(p + "mlp.shared_experts.", c.sharedInter(), h);
            }
        }
        put("model.norm.weight", Kind.ONES, h);
        put("lm_head.weight", Kind.RANDOM, c.vocab(), h);
    }

    private void mlp(String p, long inter, long h) {
        put(p + "gate_proj.weight", Kind.RANDOM, inter, h);
        put(p + "up_proj.weight", Kind.RANDOM, inter, h);
        put(p + "down_proj.weight", Kind.RANDOM, h, inter);
    }

    private void expert(String module, long out, long in) {
        if (in % 32 != 0) {
            throw new IllegalArgumentException(module + ": input width " + in + " is not a multiple of the INT4 group 32");
        }
        put(module + ".weight_packed", Kind.PACKED, out, in / 8);
        put(module + ".weight_scale", Kind.SCALE, out, in / 32);
        put(module + ".weight_shape", Kind.SHAPE, out, in);
    }

    private void put(String name, Kind kind, long... shape) {
        entries.put(name, new Entry(kind, shape));
    }

    @Override
    public boolean has(String name) {
        return entries.containsKey(name);
    }

    @Override
    public Set<String> names() {
        return entries.keySet();
    }

    @Override
    public Tensor tensor(String name, long... shape) {
        Entry e = entries.get(name);
        if (e == null) {
            throw new IllegalArgumentException("random DeepSeek-V3 weights: no tensor " + name);
        }
        if (e.kind != Kind.SHAPE && !Arrays.equals(e.shape, shape)) {
            throw new IllegalArgumentException("random DeepSeek-V3 weights: " + name + " is " + Arrays.toString(e.shape)
                    + ", asked for " + Arrays.toString(shape));
        }
        long s = seed * 0x9E3779B97F4A7C15L + name.hashCode();
        return switch (e.kind) {
            case ONES -> RandomQwen3Moe.constantBf16(1f, shape);
            case RANDOM -> RandomQwen3Moe.random(s, shape[0], shape[1]);
            case BIAS -> RandomQwen3Moe.random(s, 1, shape[0]).reshape(shape[0]).to(DType.F32);
            case PACKED -> RandomQwen3Moe.codes(s, shape[0], shape[1]);
            case SCALE -> RandomQwen3Moe.constantBf16(RandomQwen3Moe.CODE_SCALE, shape);
            case SHAPE -> Tensor.ofInts(new int[]{(int) e.shape[0], (int) e.shape[1]}, 2);
        };
    }
}
