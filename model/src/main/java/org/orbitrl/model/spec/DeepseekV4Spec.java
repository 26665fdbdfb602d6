package org.orbitrl.model.spec;

import java.util.List;
import java.util.Map;

/**
 * What DeepSeek V4 adds beyond the common fields: compressed attention with the lightning
 * indexer, the grouped low-rank output projection, manifold-constrained hyper-connections and
 * the separate rotary embedding of the compressed branches. The per-layer attention kinds and
 * MoE kinds are in {@link ModelSpec#attentionKinds()} and {@link ModelSpec#mlpKinds()}.
 *
 * @param qLoraRank          {@code q_lora_rank}: query bottleneck rank
 * @param oGroups            {@code o_groups}: head groups of the grouped output projection
 * @param oLoraRank          {@code o_lora_rank}: per-group intermediate dim of that projection
 * @param indexNHeads        {@code index_n_heads}: lightning-indexer query heads
 * @param indexHeadDim       {@code index_head_dim}: lightning-indexer head dim
 * @param indexTopk          {@code index_topk}: compressed entries each query keeps (compressed-sparse layers)
 * @param compressRates      tokens per compressed entry for each compressed attention kind
 *                           ({@code compress_rates}, default CSA 4, HCA 128)
 * @param compressRatios     the older per-layer {@code compress_ratios} list exactly as the config gives it
 *                           (it may carry entries for the MTP layers after the decoder layers), or empty
 * @param compressRope       rotary parameters of the compressed branches ({@code rope_parameters.compress}:
 *                           {@code compress_rope_theta}, with the config's YaRN scaling)
 * @param hcMult             {@code hc_mult}: residual streams of the hyper-connections
 * @param hcSinkhornIters    {@code hc_sinkhorn_iters}: Sinkhorn-Knopp iterations of the residual mixing
 * @param hcEps              {@code hc_eps}: Sinkhorn floor
 * @param swigluLimit        {@code swiglu_limit}: clamp of the routed experts' gate/up pre-activations
 * @param expertDtype        {@code expert_dtype} of the released checkpoint ({@code fp4}), or null
 * @param mlpBias            {@code mlp_bias}
 */
public record DeepseekV4Spec(int qLoraRank, int oGroups, int oLoraRank, int indexNHeads, int indexHeadDim,
                             int indexTopk, Map<AttentionKind, Integer> compressRates, List<Integer> compressRatios,
                             RopeSpec compressRope, int hcMult, int hcSinkhornIters, double hcEps, double swigluLimit,
                             String expertDtype, boolean mlpBias) {

    public DeepseekV4Spec {
        compressRates = Map.copyOf(compressRates);
        compressRatios = List.copyOf(compressRatios);
        if (qLoraRank <= 0 || oGroups <= 0 || oLoraRank <= 0 || indexNHeads <= 0 || indexHeadDim <= 0 || indexTopk <= 0) {
            throw new IllegalArgumentException("DeepSeek V4 dims must be positive: q_lora_rank " + qLoraRank + ", o_groups "
                    + oGroups + ", o_lora_rank " + oLoraRank + ", index_n_heads " + indexNHeads + ", index_head_dim "
                    + indexHeadDim + ", index_topk " + indexTopk);
        }
        for (AttentionKind k : new AttentionKind[] {AttentionKind.COMPRESSED_SPARSE, AttentionKind.HEAVILY_COMPRESSED}) {
            Integer r = compressRates.get(k);
            if (r == null || r <= 0) {
                throw new IllegalArgumentException("compress_rates." + k.configName() + " must be a positive integer, got " + r);
            }
        }
        if (compressRope == null) {
            throw new IllegalArgumentException("the compressed branches' rope parameters must be given");
        }
        if (hcMult <= 0 || hcSinkhornIters <= 0 || !(hcEps > 0)) {
            throw new IllegalArgumentException("hc_mult " + hcMult + ", hc_sinkhorn_iters " + hcSinkhornIters + ", hc_eps "
                    + hcEps + " must be positive");
        }
        if (!(swigluLimit > 0)) {
            throw new IllegalArgumentException("swiglu_limit must be positive, got " + swigluLimit);
        }
    }

    /** Tokens per compressed KV entry for a layer of {@code kind}; 0 for a layer without compression. */
    public int compressRate(AttentionKind kind) {
        return kind.isCompressed() ? compressRates.get(kind) : 0;
    }
}
