package org.orbitrl.model.spec;

import java.util.List;

/**
 * The mixture-of-experts part of a model: experts, routing and which layers have them. Which
 * layers are MoE is resolved in {@link ModelSpec#mlpKinds()}; the raw schedule keys are kept here
 * as the config states them (absent keys hold their Hugging Face defaults).
 *
 * @param numExperts            routed experts per MoE layer ({@code n_routed_experts}, {@code num_experts},
 *                              {@code num_local_experts})
 * @param topK                  experts per token ({@code num_experts_per_tok})
 * @param moeIntermediateSize   intermediate size of one routed expert
 * @param numSharedExperts      shared experts ({@code n_shared_experts}), 0 if none
 * @param sharedIntermediateSize intermediate size of the shared-expert MLP (all shared experts fused,
 *                              {@code moe_intermediate_size * n_shared_experts}), 0 if none
 * @param normTopkProb          renormalise the top-k weights to sum to 1 ({@code norm_topk_prob})
 * @param scoring               router score function ({@code scoring_func})
 * @param routedScalingFactor   multiplier on the routed output ({@code routed_scaling_factor}), 1 if none
 * @param nGroup                expert groups for group-limited routing ({@code n_group}), 1 if none
 * @param topkGroup             groups kept per token ({@code topk_group}), 1 if none
 * @param eScoreCorrectionBias  the router has an {@code e_score_correction_bias} added for selection only
 *                              (DeepSeek {@code topk_method: noaux_tc})
 * @param routerBias            the router linear has a bias (gpt-oss)
 * @param expertBias            the expert projections have biases (gpt-oss)
 * @param firstKDenseReplace    DeepSeek: the first k layers are dense ({@code first_k_dense_replace})
 * @param moeLayerFreq          DeepSeek: every n-th layer after those is MoE ({@code moe_layer_freq})
 * @param decoderSparseStep     Qwen3-MoE: layer i is MoE when (i+1) % step == 0 ({@code decoder_sparse_step})
 * @param mlpOnlyLayers         Qwen3-MoE: layers forced dense ({@code mlp_only_layers})
 * @param numHashLayers         DeepSeek V4: leading layers routed by the {@code tid2eid} table
 */
public record MoeSpec(int numExperts, int topK, int moeIntermediateSize, int numSharedExperts,
                      int sharedIntermediateSize, boolean normTopkProb, Scoring scoring, double routedScalingFactor,
                      int nGroup, int topkGroup, boolean eScoreCorrectionBias, boolean routerBias, boolean expertBias,
                      int firstKDenseReplace, int moeLayerFreq, int decoderSparseStep, List<Integer> mlpOnlyLayers,
                      int numHashLayers) {

    /** Router score functions ({@code scoring_func}). */
    public enum Scoring {
        /** softmax over all experts' logits (Qwen3-MoE; gpt-oss's softmax over the top-k logits is the same after renormalising) */
        SOFTMAX("softmax"),
        /** element-wise sigmoid (DeepSeek-V3, Kimi-K2) */
        SIGMOID("sigmoid"),
        /** element-wise sqrt(softplus(x)) (DeepSeek V4) */
        SQRTSOFTPLUS("sqrtsoftplus");

        private final String configName;

        Scoring(String configName) {
            this.configName = configName;
        }

        public String configName() {
            return configName;
        }

        public static Scoring ofConfigName(String name) {
            for (Scoring s : values()) {
                if (s.configName.equals(name)) {
                    return s;
                }
            }
            return null;
        }
    }

    public MoeSpec {
        mlpOnlyLayers = List.copyOf(mlpOnlyLayers);
        if (numExperts <= 0) {
            throw new IllegalArgumentException("number of routed experts must be positive, got " + numExperts);
        }
        if (topK <= 0 || topK > numExperts) {
            throw new IllegalArgumentException("num_experts_per_tok must be in [1, " + numExperts + "], got " + topK);
        }
        if (moeIntermediateSize <= 0) {
            throw new IllegalArgumentException("moe_intermediate_size must be positive, got " + moeIntermediateSize);
        }
        if (numSharedExperts < 0 || sharedIntermediateSize < 0 || (numSharedExperts > 0) != (sharedIntermediateSize > 0)) {
            throw new IllegalArgumentException("shared experts " + numSharedExperts + " with shared intermediate size "
                    + sharedIntermediateSize + " is inconsistent");
        }
        if (scoring == null) {
            throw new IllegalArgumentException("scoring_func must be given");
        }
        if (!(routedScalingFactor > 0)) {
            throw new IllegalArgumentException("routed_scaling_factor must be positive, got " + routedScalingFactor);
        }
        if (nGroup <= 0 || numExperts % nGroup != 0) {
            throw new IllegalArgumentException("n_group " + nGroup + " must be positive and divide the "
                    + numExperts + " routed experts");
        }
        if (topkGroup <= 0 || topkGroup > nGroup) {
            throw new IllegalArgumentException("topk_group must be in [1, n_group=" + nGroup + "], got " + topkGroup);
        }
        if (topK > topkGroup * (numExperts / nGroup)) {
            throw new IllegalArgumentException("num_experts_per_tok " + topK + " exceeds the " + topkGroup * (numExperts / nGroup)
                    + " experts in topk_group=" + topkGroup + " groups of " + numExperts / nGroup);
        }
        if (firstKDenseReplace < 0 || moeLayerFreq <= 0 || decoderSparseStep < 0 || numHashLayers < 0) {
            throw new IllegalArgumentException("first_k_dense_replace " + firstKDenseReplace + ", moe_layer_freq "
                    + moeLayerFreq + ", decoder_sparse_step " + decoderSparseStep + ", num_hash_layers " + numHashLayers
                    + ": frequencies must be positive and counts non-negative");
        }
    }

    /** True when the router uses DeepSeek's group-limited top-k (more than one group). */
    public boolean groupLimited() {
        return nGroup > 1;
    }
}
