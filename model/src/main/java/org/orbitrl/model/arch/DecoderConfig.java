package org.orbitrl.model.arch;

import org.orbitrl.kernels.RopeScaling;

/**
 * The shape of a Qwen3-family decoder (dense {@code qwen3} and {@code qwen3_moe}), as the model
 * code needs it.
 *
 * @param moeLayers which layers have a sparse MoE block (else a dense SwiGLU MLP)
 */
public record DecoderConfig(String modelType, int vocab, int hidden, int layers, int heads, int kvHeads, int headDim,
                            int intermediate, int moeIntermediate, int experts, int topK, boolean normTopKProb,
                            boolean[] moeLayers, float rmsEps, boolean tieEmbeddings, boolean attentionBias,
                            RopeScaling rope, int maxPositions) {

    public DecoderConfig {
        require(vocab > 0 && hidden > 0 && layers > 0 && heads > 0 && kvHeads > 0 && headDim > 0,
                "sizes must be positive");
        require(heads % kvHeads == 0, "num_attention_heads " + heads + " is not a multiple of num_key_value_heads " + kvHeads);
        require(moeLayers.length == layers, "moe layer flags " + moeLayers.length + " for " + layers + " layers");
        for (boolean m : moeLayers) {
            if (m) {
                require(experts > 0 && topK > 0 && topK <= experts, "top-k " + topK + " of " + experts + " experts");
                require(moeIntermediate > 0, "moe_intermediate_size must be positive");
            }
        }
    }

    private static void require(boolean ok, String msg) {
        if (!ok) {
            throw new IllegalArgumentException("config: " + msg);
        }
    }

    public boolean isMoe(int layer) {
        return moeLayers[layer];
    }
}
