package org.orbitrl.scheduler.bench;

import org.orbitrl.model.arch.DecoderConfig;

/**
 * The weights of a Qwen3-MoE model of any shape, generated when the loader asks for each tensor
 * ({@link GeneratedWeights}): attention, router, embeddings and head bf16, norms 1, and every routed expert
 * projection directly as INT4 group-32 in the compressed-tensors layout.
 */
final class RandomQwen3Moe extends GeneratedWeights {
    RandomQwen3Moe(DecoderConfig c, long seed) {
        super("Qwen3-MoE", seed);
        int h = c.hidden();
        int q = c.heads() * c.headDim();
        int kv = c.kvHeads() * c.headDim();
        put("model.embed_tokens.weight", Kind.RANDOM, c.vocab(), h);
        for (int l = 0; l < c.layers(); l++) {
            String p = "model.layers." + l + ".";
            put(p + "input_layernorm.weight", Kind.ONES, h);
            put(p + "post_attention_layernorm.weight", Kind.ONES, h);
            put(p + "self_attn.q_proj.weight", Kind.RANDOM, q, h);
            put(p + "self_attn.k_proj.weight", Kind.RANDOM, kv, h);
            put(p + "self_attn.v_proj.weight", Kind.RANDOM, kv, h);
            put(p + "self_attn.o_proj.weight", Kind.RANDOM, h, q);
            put(p + "self_attn.q_norm.weight", Kind.ONES, c.headDim());
            put(p + "self_attn.k_norm.weight", Kind.ONES, c.headDim());
            if (!c.isMoe(l)) {
                throw new IllegalArgumentException("layer " + l + " is dense; this generator builds Qwen3-MoE layers only");
            }
            put(p + "mlp.gate.weight", Kind.RANDOM, c.experts(), h);
            for (int e = 0; e < c.experts(); e++) {
                String ep = p + "mlp.experts." + e + ".";
                expert(ep + "gate_proj", c.moeIntermediate(), h);
                expert(ep + "up_proj", c.moeIntermediate(), h);
                expert(ep + "down_proj", h, c.moeIntermediate());
            }
        }
        put("model.norm.weight", Kind.ONES, h);
        put("lm_head.weight", Kind.RANDOM, c.vocab(), h);
    }
}
