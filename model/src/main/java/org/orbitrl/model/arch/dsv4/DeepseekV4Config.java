package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.DeepseekV4Spec;
import org.orbitrl.model.spec.MlpKind;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;

import java.util.List;

/**
 * The shape of a DeepSeek V4 model as its code needs it, with the two rotary tables: the main
 * one of sliding-window layers and the compressed branches' one (used by compressed layers'
 * queries and keys, the compressors and the indexer).
 */
record DeepseekV4Config(ModelSpec spec, int vocab, int hidden, int layers, int heads, int headDim, int qLoraRank,
                        int oGroups, int oLoraRank, int slidingWindow, float rmsEps, int hcMult, int hcIters,
                        float hcEps, int experts, int topK, int moeIntermediate, int sharedIntermediate,
                        float routedScaling, float swigluLimit, int indexHeads, int indexDim, int indexTopK,
                        List<AttentionKind> kinds, List<MlpKind> mlpKinds, RopeTable mainRope, RopeTable compressRope) {

    static DeepseekV4Config from(ModelSpec s) {
        if (s.family() != ModelFamily.DEEPSEEK_V4) {
            throw new IllegalArgumentException(s.source() + ": model_type " + s.modelType() + " is not DeepSeek V4");
        }
        DeepseekV4Spec v = s.deepseekV4();
        MoeSpec m = s.moe();
        int rot = RopeScaling.rotaryDim(s.headDim(), s.rope().partialRotaryFactor());
        int maxPos = s.maxPositionEmbeddings();
        RopeTable main = RopeTable.of(s.ropeScaling(), rot, maxPos, RopeTable.Style.INTERLEAVED);
        RopeTable comp = RopeTable.of(s.compressRopeScaling(), rot, maxPos, RopeTable.Style.INTERLEAVED);
        if (m.scoring() == MoeSpec.Scoring.SOFTMAX) {
            throw new IllegalArgumentException(s.source() + ": scoring_func softmax is not supported for deepseek_v4 "
                    + "(its router applies the score function element-wise: sqrtsoftplus or sigmoid)");
        }
        if (s.numKvHeads() != 1) {
            throw new IllegalArgumentException(s.source() + ": DeepSeek V4 attention has one shared K=V head, config has "
                    + "num_key_value_heads " + s.numKvHeads());
        }
        return new DeepseekV4Config(s, s.vocabSize(), s.hiddenSize(), s.numLayers(), s.numHeads(), s.headDim(),
                v.qLoraRank(), v.oGroups(), v.oLoraRank(), s.slidingWindow(), (float) s.rmsNormEps(), v.hcMult(),
                v.hcSinkhornIters(), (float) v.hcEps(), m.numExperts(), m.topK(), m.moeIntermediateSize(),
                m.sharedIntermediateSize(), (float) m.routedScalingFactor(), (float) v.swigluLimit(), v.indexNHeads(),
                v.indexHeadDim(), v.indexTopk(), s.attentionKinds(), s.mlpKinds(), main, comp);
    }

    int compressRate(int layer) {
        return spec.deepseekV4().compressRate(kinds.get(layer));
    }

    /** cos and sin [N, rotaryDim/2] of a table at the given positions. */
    static float[][] cosSin(RopeTable rope, int[] positions) {
        int half = rope.rotaryDim() / 2;
        float[] cos = new float[positions.length * half];
        float[] sin = new float[positions.length * half];
        for (int i = 0; i < positions.length; i++) {
            if (positions[i] >= rope.maxPositions()) {
                throw new IllegalArgumentException("position " + positions[i] + " is beyond max_position_embeddings "
                        + rope.maxPositions());
            }
            for (int j = 0; j < half; j++) {
                cos[i * half + j] = rope.cos(positions[i], j);
                sin[i * half + j] = rope.sin(positions[i], j);
            }
        }
        return new float[][] {cos, sin};
    }
}
