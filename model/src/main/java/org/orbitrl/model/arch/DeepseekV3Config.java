package org.orbitrl.model.arch;

import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.model.spec.MlaSpec;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;

/**
 * The shape of a DeepSeek-V3-architecture decoder ({@code deepseek_v3}, {@code kimi_k2}, the text
 * model of {@code kimi_k25}), as the model code needs it.
 *
 * @param qLoraRank     query bottleneck rank; 0 for a plain {@code q_proj}
 * @param kvLoraRank    rank of the compressed KV latent (what the cache holds, with the rope key)
 * @param moeLayers     which layers have routed experts (the first {@code first_k_dense_replace} are dense)
 * @param sharedInter   intermediate size of the fused shared experts, 0 if none
 * @param softmaxScale  {@code qk_head_dim^-0.5}, times YaRN's {@code mscale(factor, mscale_all_dim)²} where given
 */
public record DeepseekV3Config(String modelType, int vocab, int hidden, int layers, int heads, int qLoraRank,
                               int kvLoraRank, int qkNope, int qkRope, int vHeadDim, int intermediate,
                               int moeIntermediate, int experts, int topK, int sharedInter, boolean normTopK,
                               float routedScaling, int nGroup, int topkGroup, boolean scoreCorrectionBias,
                               boolean[] moeLayers, float rmsEps, boolean tieEmbeddings, boolean attentionBias,
                               RopeScaling rope, int maxPositions, float softmaxScale) {

    public DeepseekV3Config {
        require(vocab > 0 && hidden > 0 && layers > 0 && heads > 0, "sizes must be positive");
        require(kvLoraRank > 0 && qkNope > 0 && qkRope > 0 && qkRope % 2 == 0 && vHeadDim > 0,
                "MLA dims kv_lora_rank " + kvLoraRank + ", qk_nope " + qkNope + ", qk_rope " + qkRope + ", v " + vHeadDim);
        require(moeLayers.length == layers, "moe layer flags " + moeLayers.length + " for " + layers + " layers");
        for (boolean m : moeLayers) {
            if (m) {
                require(experts > 0 && topK > 0 && topK <= experts && moeIntermediate > 0,
                        "top-k " + topK + " of " + experts + " experts of size " + moeIntermediate);
                require(nGroup > 0 && experts % nGroup == 0 && topkGroup > 0 && topkGroup <= nGroup,
                        "n_group " + nGroup + ", topk_group " + topkGroup + " for " + experts + " experts");
                require(experts / nGroup >= 2, "group-limited routing sums the top 2 scores of each group; groups of "
                        + experts / nGroup + " experts");
            }
        }
    }

    private static void require(boolean ok, String msg) {
        if (!ok) {
            throw new IllegalArgumentException("config: " + msg);
        }
    }

    /** Query/key head dim: nope + rope. */
    public int qkHeadDim() {
        return qkNope + qkRope;
    }

    /** Elements one token occupies in one layer's cache: the latent and the rope key. */
    public int cacheWidth() {
        return kvLoraRank + qkRope;
    }

    public boolean isMoe(int layer) {
        return moeLayers[layer];
    }

    /** The DeepSeek-V3 shape of a {@code deepseek_v3}, {@code kimi_k2} or {@code kimi_k25} spec. */
    public static DeepseekV3Config from(ModelSpec spec) {
        if (spec.family() != ModelFamily.DEEPSEEK_V3) {
            throw new IllegalArgumentException(spec.source() + ": model_type " + spec.modelType()
                    + " is not a DeepSeek-V3-architecture model");
        }
        if (!"silu".equals(spec.hiddenAct())) {
            throw new IllegalArgumentException(spec.source() + ": hidden_act " + spec.hiddenAct() + " is not supported (silu)");
        }
        MlaSpec mla = spec.mla();
        MoeSpec m = spec.moe();
        if (m != null && m.scoring() != MoeSpec.Scoring.SIGMOID) {
            throw new IllegalArgumentException(spec.source() + ": scoring_func " + m.scoring().configName()
                    + " is not supported for deepseek_v3 (transformers routes with sigmoid)");
        }
        if (spec.numKvHeads() != spec.numHeads()) {
            throw new IllegalArgumentException(spec.source() + ": MLA expands one latent to every head; num_key_value_heads "
                    + spec.numKvHeads() + " must equal num_attention_heads " + spec.numHeads());
        }
        boolean[] moe = new boolean[spec.numLayers()];
        for (int i = 0; i < moe.length; i++) {
            moe[i] = spec.isMoeLayer(i);
        }
        RopeScaling rope = spec.ropeScaling();
        double scale = 1.0 / Math.sqrt(mla.qkHeadDim());
        if (rope.type() != RopeScaling.Type.DEFAULT && rope.mscaleAllDim() != 0) {
            double ms = RopeScaling.yarnMscale(rope.effectiveFactor(), rope.mscaleAllDim());
            scale = scale * ms * ms;
        }
        return new DeepseekV3Config(spec.modelType(), spec.vocabSize(), spec.hiddenSize(), spec.numLayers(),
                spec.numHeads(), mla.qLoraRank(), mla.kvLoraRank(), mla.qkNopeHeadDim(), mla.qkRopeHeadDim(),
                mla.vHeadDim(), spec.intermediateSize(), m == null ? 0 : m.moeIntermediateSize(),
                m == null ? 0 : m.numExperts(), m == null ? 0 : m.topK(), m == null ? 0 : m.sharedIntermediateSize(),
                m != null && m.normTopkProb(), m == null ? 1f : (float) m.routedScalingFactor(),
                m == null ? 1 : m.nGroup(), m == null ? 1 : m.topkGroup(), m != null && m.eScoreCorrectionBias(), moe,
                (float) spec.rmsNormEps(), spec.tieWordEmbeddings(), spec.attentionBias(), rope,
                spec.maxPositionEmbeddings(), (float) scale);
    }
}
