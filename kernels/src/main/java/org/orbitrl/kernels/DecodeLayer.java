package org.orbitrl.kernels;

/**
 * The frozen weights of one pre-norm decoder layer of grouped-query self-attention and routed experts (Qwen3-MoE's), as
 * {@link Backend#decodeLayer} takes them: the layer with no adapter on any of its projections.
 *
 * @param inputNorm  [hidden]: the attention's RMSNorm weight (f32 or bf16)
 * @param q          [heads·headDim, hidden]
 * @param k          [kvHeads·headDim, hidden]
 * @param v          [kvHeads·headDim, hidden]
 * @param qNorm      [headDim] or null: the per-head RMSNorm of q (Qwen3's q_norm)
 * @param kNorm      [headDim] or null: that of k
 * @param o          [hidden, heads·headDim]
 * @param postNorm   [hidden]: the experts' RMSNorm weight
 * @param router     [experts, hidden]: the router's logits, softmax, top {@code topK}
 * @param normTopK   whether the chosen probabilities are divided by their sum
 * @param gate       the experts' gate projections, E × [I, hidden]
 * @param up         their up projections, E × [I, hidden]
 * @param down       their down projections, E × [hidden, I]
 * @param eps        the RMSNorms' epsilon (all four)
 * @param spec       the attention's scale (causal, no window, no sinks for a backend's fused form)
 */
public record DecodeLayer(Tensor inputNorm, Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, Tensor o, Tensor postNorm,
                          Tensor router, int topK, boolean normTopK, ExpertWeights gate, ExpertWeights up, ExpertWeights down,
                          int heads, int kvHeads, int headDim, float eps, AttentionSpec spec) {
    public DecodeLayer {
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || headDim <= 0 || topK <= 0) {
            throw new IllegalArgumentException("decode layer: " + heads + " q heads over " + kvHeads + " kv heads of " + headDim
                    + ", top " + topK + ": heads must be a positive multiple of kv heads");
        }
    }

    /** The hidden size (the input norm's length). */
    public int hidden() {
        return Math.toIntExact(inputNorm.numel());
    }
}
