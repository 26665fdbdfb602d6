package org.orbitrl.model.arch;

import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;

/**
 * The shape of a Qwen3-family decoder (dense {@code qwen3} and {@code qwen3_moe}), as the model
 * code needs it.
 *
 * @param moeLayers which layers have a sparse MoE block (else a dense SwiGLU MLP)
 * @param windows   per layer, the sliding window of its attention in tokens (a query sees itself and the window - 1
 *                  positions before it), 0 for full attention
 */
public record DecoderConfig(String modelType, int vocab, int hidden, int layers, int heads, int kvHeads, int headDim,
                            int intermediate, int moeIntermediate, int experts, int topK, boolean normTopKProb,
                            boolean[] moeLayers, float rmsEps, boolean tieEmbeddings, boolean attentionBias,
                            RopeScaling rope, int maxPositions, int[] windows) {

    public DecoderConfig {
        require(vocab > 0 && hidden > 0 && layers > 0 && heads > 0 && kvHeads > 0 && headDim > 0,
                "sizes must be positive");
        require(heads % kvHeads == 0, "num_attention_heads " + heads + " is not a multiple of num_key_value_heads " + kvHeads);
        require(moeLayers.length == layers, "moe layer flags " + moeLayers.length + " for " + layers + " layers");
        require(windows.length == layers, "attention windows " + windows.length + " for " + layers + " layers");
        for (int w : windows) {
            require(w >= 0, "sliding_window must be positive, got " + w);
        }
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

    /** The Qwen3-family shape of a {@code qwen3} or {@code qwen3_moe} spec. */
    public static DecoderConfig from(ModelSpec spec) {
        if (spec.family() != ModelFamily.QWEN3 && spec.family() != ModelFamily.QWEN3_MOE) {
            throw new IllegalArgumentException(spec.source() + ": model_type " + spec.modelType()
                    + " is not a Qwen3-family model");
        }
        boolean[] moe = new boolean[spec.numLayers()];
        for (int i = 0; i < moe.length; i++) {
            moe[i] = spec.isMoeLayer(i);
        }
        int[] windows = new int[spec.numLayers()];   // use_sliding_window: the layers from max_window_layers on slide
        for (int i = 0; i < windows.length; i++) {
            windows[i] = spec.attentionKind(i) == AttentionKind.SLIDING ? spec.slidingWindow() : 0;
        }
        MoeSpec m = spec.moe();
        return new DecoderConfig(spec.modelType(), spec.vocabSize(), spec.hiddenSize(), spec.numLayers(), spec.numHeads(),
                spec.numKvHeads(), spec.headDim(), spec.intermediateSize(), m == null ? 0 : m.moeIntermediateSize(),
                m == null ? 0 : m.numExperts(), m == null ? 0 : m.topK(), m != null && m.normTopkProb(), moe,
                (float) spec.rmsNormEps(), spec.tieWordEmbeddings(), spec.attentionBias(), spec.ropeScaling(),
                spec.maxPositionEmbeddings(), windows);
    }

    /**
     * This rank's share under {@code tp}-way tensor parallelism: heads, key/value heads and (when
     * the model has dense MLP layers) the intermediate size divided by tp; everything else whole.
     */
    public DecoderConfig shard(int tp) {
        if (tp == 1) {
            return this;
        }
        boolean dense = false;
        for (boolean m : moeLayers) {
            dense |= !m;
        }
        if (heads % tp != 0 || kvHeads % tp != 0 || (dense && intermediate % tp != 0)) {
            throw new IllegalArgumentException("config: heads " + heads + ", kv heads " + kvHeads + ", intermediate "
                    + intermediate + " do not split " + tp + " ways");
        }
        return new DecoderConfig(modelType, vocab, hidden, layers, heads / tp, kvHeads / tp, headDim,
                dense ? intermediate / tp : intermediate, moeIntermediate, experts, topK, normTopKProb, moeLayers, rmsEps,
                tieEmbeddings, attentionBias, rope, maxPositions, windows);
    }

    /** True when at least one layer has a dense MLP. */
    public boolean hasDenseLayers() {
        for (boolean m : moeLayers) {
            if (!m) {
                return true;
            }
        }
        return false;
    }

    public boolean isMoe(int layer) {
        return moeLayers[layer];
    }
}
