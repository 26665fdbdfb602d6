package org.orbitrl.model.spec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeScaling;

/** The fixture configs (transformers 5.17 schema) load with the values their JSON states. */
class FixtureConfigsTest {

    private static ModelSpec load(String name) {
        return ConfigLoader.load(ConfigPaths.fixtures().resolve(name).resolve("config.json"));
    }

    @Test
    void qwen3() {
        ModelSpec s = load("qwen3");
        assertEquals(ModelFamily.QWEN3, s.family());
        assertEquals(256, s.vocabSize());
        assertEquals(64, s.hiddenSize());
        assertEquals(2, s.numLayers());
        assertEquals(4, s.numHeads());
        assertEquals(2, s.numKvHeads());
        assertEquals(16, s.headDim());
        assertEquals(128, s.intermediateSize());
        assertEquals(1e-6, s.rmsNormEps());
        assertEquals(DType.BF16, s.dtype());
        assertNull(s.bosTokenId());
        assertEquals(List.of(), s.eosTokenIds());
        assertEquals(List.of(AttentionKind.FULL, AttentionKind.FULL), s.attentionKinds());
        assertEquals(RopeScaling.Type.DEFAULT, s.ropeScaling().type());
        assertEquals(10000.0, s.ropeScaling().theta());
        assertEquals(16, s.rotaryDim());
    }

    @Test
    void qwen3Moe() {
        ModelSpec s = load("qwen3_moe");
        assertEquals(ModelFamily.QWEN3_MOE, s.family());
        assertEquals(64, s.hiddenSize());
        assertEquals(2, s.numLayers());
        assertEquals(8, s.moe().numExperts()); // num_local_experts (transformers 5 name)
        assertEquals(2, s.moe().topK());
        assertEquals(32, s.moe().moeIntermediateSize());
        assertTrue(s.moe().normTopkProb());
        assertEquals(MoeSpec.Scoring.SOFTMAX, s.moe().scoring());
        assertTrue(s.isMoeLayer(0) && s.isMoeLayer(1));
        assertEquals(0, s.moe().numSharedExperts());
    }

    @Test
    void deepseekV3() {
        ModelSpec s = load("deepseek_v3");
        assertEquals(ModelFamily.DEEPSEEK_V3, s.family());
        assertEquals(3, s.numLayers());
        assertEquals(64, s.hiddenSize());
        assertEquals(4, s.numHeads());
        assertEquals(32, s.mla().qLoraRank());
        assertEquals(16, s.mla().kvLoraRank());
        assertEquals(16, s.mla().qkNopeHeadDim());
        assertEquals(8, s.mla().qkRopeHeadDim());
        assertEquals(16, s.mla().vHeadDim());
        assertTrue(s.mla().ropeInterleave());
        assertEquals(24, s.headDim());
        assertEquals(8, s.rotaryDim());
        assertFalse(s.isMoeLayer(0));
        assertTrue(s.isMoeLayer(1) && s.isMoeLayer(2));
        assertEquals(128, s.intermediateSize());
        assertEquals(8, s.moe().numExperts());
        assertEquals(2, s.moe().topK());
        assertEquals(2, s.moe().nGroup());
        assertEquals(1, s.moe().topkGroup());
        assertEquals(1, s.moe().numSharedExperts());
        assertEquals(32, s.moe().sharedIntermediateSize());
        assertEquals(2.5, s.moe().routedScalingFactor());
        assertEquals(MoeSpec.Scoring.SIGMOID, s.moe().scoring()); // transformers' default: the key is absent
        assertTrue(s.moe().eScoreCorrectionBias());
        assertEquals(1, s.numNextnPredictLayers());
        assertEquals(RopeScaling.Type.DEFAULT, s.ropeScaling().type());
    }

    @Test
    void deepseekV4() {
        ModelSpec s = load("deepseek_v4");
        assertEquals(4, s.numLayers());
        assertEquals(64, s.hiddenSize());
        assertEquals(4, s.numHeads());
        assertEquals(1, s.numKvHeads());
        assertEquals(32, s.headDim());
        assertEquals(4, s.rotaryDim()); // 32 * 0.125
        assertEquals(List.of(AttentionKind.HEAVILY_COMPRESSED, AttentionKind.SLIDING, AttentionKind.COMPRESSED_SPARSE,
                AttentionKind.HEAVILY_COMPRESSED), s.attentionKinds());
        assertEquals(List.of(MlpKind.HASH_MOE, MlpKind.MOE, MlpKind.MOE, MlpKind.MOE), s.mlpKinds());
        DeepseekV4Spec v4 = s.deepseekV4();
        assertEquals(4, v4.compressRate(AttentionKind.COMPRESSED_SPARSE));
        assertEquals(8, v4.compressRate(AttentionKind.HEAVILY_COMPRESSED));
        assertEquals(2, v4.hcMult());
        assertEquals(2, v4.indexNHeads());
        assertEquals(16, v4.indexHeadDim());
        assertEquals(4, v4.indexTopk());
        assertEquals(2, v4.oGroups());
        assertEquals(16, v4.oLoraRank());
        assertEquals(32, v4.qLoraRank());
        assertEquals(List.of(), v4.compressRatios());
        assertEquals(8, s.slidingWindow());
        assertEquals(1, s.moe().numHashLayers());
        assertEquals(8, s.moe().numExperts());
        assertEquals(MoeSpec.Scoring.SQRTSOFTPLUS, s.moe().scoring());
        assertEquals(10000.0, s.ropeScaling().theta());
        assertEquals(160000.0, s.compressRopeScaling().theta());
        assertEquals(RopeScaling.Type.DEFAULT, s.compressRopeScaling().type());
    }

    @Test
    void gptOss() {
        ModelSpec s = load("gpt_oss");
        assertEquals(2, s.numLayers());
        assertEquals(64, s.hiddenSize());
        assertEquals(4, s.numHeads());
        assertEquals(2, s.numKvHeads());
        assertEquals(16, s.headDim());
        assertEquals(8, s.moe().numExperts());
        assertEquals(2, s.moe().topK());
        assertEquals(32, s.moe().moeIntermediateSize());
        assertEquals(8, s.slidingWindow());
        assertEquals(List.of(AttentionKind.SLIDING, AttentionKind.FULL), s.attentionKinds());
        RopeScaling r = s.ropeScaling();
        assertEquals(RopeScaling.Type.YARN, r.type());
        assertEquals(150000.0, r.theta());
        assertEquals(32.0, r.factor());
        assertEquals(4096, r.originalMaxPositions());
        assertFalse(r.truncate());
        assertEquals(256, r.maxPositions());
        assertEquals(7.0, s.gptOss().swigluLimit()); // transformers' default: the key is absent
        assertNull(s.quantization());
    }
}
