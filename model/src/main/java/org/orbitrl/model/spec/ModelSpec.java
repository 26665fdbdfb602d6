package org.orbitrl.model.spec;

import java.nio.file.Path;
import java.util.List;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeScaling;

/**
 * The architecture of one model, typed from its {@code config.json} by {@link ConfigLoader}: the
 * sizes every weight shape derives from, the per-layer schedule (attention kind and MLP kind of
 * each decoder layer), rotary embedding, routing, and the family-specific parts ({@link #mla()}
 * for DeepSeek-V3/Kimi-K2, {@link #gptOss()}, {@link #deepseekV4()}), each null for other
 * families. Keys a config omits hold the defaults of the transformers 5.17 config class.
 *
 * @param source                the file this was read from (null when built in code)
 * @param modelType             the config's {@code model_type} ({@code kimi_k25} for the wrapper)
 * @param family                the architecture
 * @param vocabSize             {@code vocab_size}
 * @param hiddenSize            {@code hidden_size}
 * @param numLayers             {@code num_hidden_layers} (decoder layers; MTP layers not included)
 * @param numHeads              {@code num_attention_heads}
 * @param numKvHeads            {@code num_key_value_heads}
 * @param headDim               query/key dim per head: {@code head_dim}; for MLA {@code qk_nope_head_dim + qk_rope_head_dim}
 * @param vHeadDim              value dim per head: {@code head_dim}; for MLA {@code v_head_dim}
 * @param intermediateSize      intermediate size of the dense MLP layers, 0 if the model has none
 * @param hiddenAct             {@code hidden_act}
 * @param rmsNormEps            {@code rms_norm_eps}
 * @param tieWordEmbeddings     {@code tie_word_embeddings}: lm_head shares the embedding matrix
 * @param attentionBias         {@code attention_bias}: q/k/v/o projections have biases
 * @param maxPositionEmbeddings {@code max_position_embeddings}
 * @param slidingWindow         window of sliding-attention layers in tokens, 0 if no layer slides
 * @param attentionSinks        each head has a learned sink logit (gpt-oss, DeepSeek V4)
 * @param attentionKinds        attention kind of each decoder layer ({@code layer_types}, resolved)
 * @param mlpKinds              MLP kind of each decoder layer (resolved from the family's schedule keys)
 * @param rope                  rotary parameters (DeepSeek V4: those of the main, uncompressed branch)
 * @param moe                   experts and routing, or null for a dense model
 * @param mla                   multi-head latent attention (DeepSeek-V3 family), else null
 * @param gptOss                gpt-oss specifics, else null
 * @param deepseekV4            DeepSeek V4 specifics, else null
 * @param numNextnPredictLayers multi-token-prediction layers in the checkpoint ({@code num_nextn_predict_layers})
 * @param quantization          the checkpoint's {@code quantization_config}, or null
 * @param dtype                 {@code dtype} / {@code torch_dtype} of the unquantized weights, or null
 * @param bosTokenId            {@code bos_token_id}, or null
 * @param eosTokenIds           {@code eos_token_id} (one or several), empty if none
 * @param padTokenId            {@code pad_token_id}, or null
 */
public record ModelSpec(Path source, String modelType, ModelFamily family, int vocabSize, int hiddenSize,
                        int numLayers, int numHeads, int numKvHeads, int headDim, int vHeadDim, int intermediateSize,
                        String hiddenAct, double rmsNormEps, boolean tieWordEmbeddings, boolean attentionBias,
                        int maxPositionEmbeddings, int slidingWindow, boolean attentionSinks,
                        List<AttentionKind> attentionKinds, List<MlpKind> mlpKinds, RopeSpec rope, MoeSpec moe,
                        MlaSpec mla, GptOssSpec gptOss, DeepseekV4Spec deepseekV4, int numNextnPredictLayers,
                        QuantizationConfig quantization, DType dtype, Integer bosTokenId, List<Integer> eosTokenIds,
                        Integer padTokenId) {

    public ModelSpec {
        if (family == null || modelType == null || rope == null || hiddenAct == null) {
            throw new IllegalArgumentException("family, model_type, rope and hidden_act must be given");
        }
        attentionKinds = List.copyOf(attentionKinds);
        mlpKinds = List.copyOf(mlpKinds);
        eosTokenIds = List.copyOf(eosTokenIds);
        positive("vocab_size", vocabSize);
        positive("hidden_size", hiddenSize);
        positive("num_hidden_layers", numLayers);
        positive("num_attention_heads", numHeads);
        positive("num_key_value_heads", numKvHeads);
        positive("head dim", headDim);
        positive("value head dim", vHeadDim);
        positive("max_position_embeddings", maxPositionEmbeddings);
        if (numHeads % numKvHeads != 0) {
            throw new IllegalArgumentException("num_attention_heads " + numHeads + " is not a multiple of num_key_value_heads "
                    + numKvHeads);
        }
        if (!(rmsNormEps > 0)) {
            throw new IllegalArgumentException("rms_norm_eps must be positive, got " + rmsNormEps);
        }
        if (intermediateSize < 0 || slidingWindow < 0 || numNextnPredictLayers < 0) {
            throw new IllegalArgumentException("intermediate_size " + intermediateSize + ", sliding_window " + slidingWindow
                    + ", num_nextn_predict_layers " + numNextnPredictLayers + " must not be negative");
        }
        if (attentionKinds.size() != numLayers || mlpKinds.size() != numLayers) {
            throw new IllegalArgumentException("num_hidden_layers is " + numLayers + " but " + attentionKinds.size()
                    + " attention layer types and " + mlpKinds.size() + " MLP layer types are given");
        }
        for (int i = 0; i < numLayers; i++) {
            AttentionKind a = attentionKinds.get(i);
            MlpKind m = mlpKinds.get(i);
            if (a == null || m == null) {
                throw new IllegalArgumentException("layer " + i + " has no attention or MLP kind");
            }
            if ((a == AttentionKind.SLIDING || a.isCompressed()) && slidingWindow <= 0) {
                throw new IllegalArgumentException("layer " + i + " is " + a.configName() + " but sliding_window is not set");
            }
            if (a.isCompressed() && family != ModelFamily.DEEPSEEK_V4) {
                throw new IllegalArgumentException("layer " + i + " is " + a.configName() + ", which only deepseek_v4 has");
            }
            if (m == MlpKind.HASH_MOE && family != ModelFamily.DEEPSEEK_V4) {
                throw new IllegalArgumentException("layer " + i + " is hash-routed MoE, which only deepseek_v4 has");
            }
            if (m.isMoe() && moe == null) {
                throw new IllegalArgumentException("layer " + i + " is MoE but the model has no experts");
            }
            if (m == MlpKind.DENSE && intermediateSize <= 0) {
                throw new IllegalArgumentException("layer " + i + " is a dense MLP but intermediate_size is not set");
            }
        }
        if ((family == ModelFamily.DEEPSEEK_V3) != (mla != null)) {
            throw new IllegalArgumentException("MLA parameters go with the DeepSeek-V3 family only (family " + family + ")");
        }
        if ((family == ModelFamily.GPT_OSS) != (gptOss != null)) {
            throw new IllegalArgumentException("gpt-oss parameters go with the gpt_oss family only (family " + family + ")");
        }
        if ((family == ModelFamily.DEEPSEEK_V4) != (deepseekV4 != null)) {
            throw new IllegalArgumentException("DeepSeek V4 parameters go with the deepseek_v4 family only (family " + family + ")");
        }
        if (mla != null && (headDim != mla.qkHeadDim() || vHeadDim != mla.vHeadDim())) {
            throw new IllegalArgumentException("MLA head dims " + headDim + "/" + vHeadDim + " disagree with qk_nope+qk_rope "
                    + mla.qkHeadDim() + " and v_head_dim " + mla.vHeadDim());
        }
        int rot = mla != null ? mla.qkRopeHeadDim() : RopeScaling.rotaryDim(headDim, rope.partialRotaryFactor());
        if (rot <= 0 || rot % 2 != 0 || rot > headDim) {
            throw new IllegalArgumentException("rotary dim " + rot + " (head dim " + headDim + " x partial_rotary_factor "
                    + rope.partialRotaryFactor() + ") must be even and in [2, head dim]");
        }
        if (deepseekV4 != null && deepseekV4.oGroups() > 0 && numHeads % deepseekV4.oGroups() != 0) {
            throw new IllegalArgumentException("num_attention_heads " + numHeads + " is not a multiple of o_groups "
                    + deepseekV4.oGroups());
        }
    }

    private static void positive(String key, int v) {
        if (v <= 0) {
            throw new IllegalArgumentException(key + " must be positive, got " + v);
        }
    }

    private int layer(int i) {
        if (i < 0 || i >= numLayers) {
            throw new IndexOutOfBoundsException("layer " + i + " of a model with " + numLayers + " layers");
        }
        return i;
    }

    /** Attention kind of decoder layer {@code i}. */
    public AttentionKind attentionKind(int i) {
        return attentionKinds.get(layer(i));
    }

    /** MLP kind of decoder layer {@code i}. */
    public MlpKind mlpKind(int i) {
        return mlpKinds.get(layer(i));
    }

    /** True when decoder layer {@code i} has routed experts (hash-routed included). */
    public boolean isMoeLayer(int i) {
        return mlpKind(i).isMoe();
    }

    /** Number of decoder layers with routed experts. */
    public int numMoeLayers() {
        return (int) mlpKinds.stream().filter(MlpKind::isMoe).count();
    }

    /** Number of decoder layers with a dense MLP. */
    public int numDenseLayers() {
        return numLayers - numMoeLayers();
    }

    /** True when any layer has routed experts. */
    public boolean isMoe() {
        return moe != null && numMoeLayers() > 0;
    }

    /** Query heads per KV head. */
    public int kvGroupSize() {
        return numHeads / numKvHeads;
    }

    /** Dimensions per head that rotary embedding rotates. */
    public int rotaryDim() {
        return mla != null ? mla.qkRopeHeadDim() : RopeScaling.rotaryDim(headDim, rope.partialRotaryFactor());
    }

    /** The rotary frequencies of the (main) attention, for the kernels. */
    public RopeScaling ropeScaling() {
        return rope.toRopeScaling(maxPositionEmbeddings);
    }

    /** DeepSeek V4: the rotary frequencies of the compressed branches; throws for other families. */
    public RopeScaling compressRopeScaling() {
        if (deepseekV4 == null) {
            throw new IllegalStateException(modelType + " has no compressed attention branch");
        }
        return deepseekV4.compressRope().toRopeScaling(maxPositionEmbeddings);
    }

    /**
     * Elements of K and V a standard (GQA) KV cache holds per token and layer,
     * {@code kvHeads * (headDim + vHeadDim)}; for MLA the latent plus the rope key.
     * DeepSeek V4's compressed caches are sized by the memory planner from {@link #deepseekV4()}.
     */
    public long kvElementsPerTokenPerLayer() {
        if (mla != null) {
            return mla.cacheElementsPerToken();
        }
        if (deepseekV4 != null) {
            return (long) numKvHeads * headDim; // shared K=V head of the sliding-window branch
        }
        return (long) numKvHeads * (headDim + vHeadDim);
    }

    @Override
    public String toString() {
        return "ModelSpec[" + modelType + ", layers " + numLayers + ", hidden " + hiddenSize + ", heads " + numHeads + "/"
                + numKvHeads + "x" + headDim + (moe == null ? "" : ", experts " + moe.numExperts() + " top-" + moe.topK())
                + ", vocab " + vocabSize + (source == null ? "" : ", from " + source) + "]";
    }
}
