package org.orbitrl.scheduler.bench;

import org.orbitrl.model.arch.DeepseekV3Config;

/**
 * The weights of a DeepSeek-V3 / Kimi-K2 model of any shape under their Hugging Face names, generated when the loader
 * asks for each tensor ({@link GeneratedWeights}): the latent attention's
 * projections, the dense and shared MLPs, the router, embeddings and head bf16 uniform with standard deviation 0.02,
 * norms 1, the router's score-correction bias 0.02 uniform, and every routed expert directly as INT4 group-32 in the
 * compressed-tensors layout (Kimi-K2's as released), so nothing is quantized on the host. The config must say so
 * ({@code quantization_config} of compressed-tensors pack-quantized, as Kimi-K2's does).
 */
final class RandomDeepseekV3 extends GeneratedWeights {
    RandomDeepseekV3(DeepseekV3Config c, long seed) {
        super("DeepSeek-V3", seed);
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
}
