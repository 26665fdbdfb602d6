package org.orbitrl.model.spec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeScaling;

/**
 * Every released config in {@code ../shared/models} loads, with the key numbers as read by hand
 * from each JSON file.
 */
class RealConfigsTest {

    private static ModelSpec load(String name) {
        return ConfigLoader.load(ConfigPaths.models().resolve(name));
    }

    @Test
    void everyModelDirectoryLoads() throws IOException {
        List<Path> dirs;
        try (Stream<Path> s = Files.list(ConfigPaths.models())) {
            dirs = s.filter(Files::isDirectory).sorted().toList();
        }
        assertEquals(10, dirs.size(), "model directories: " + dirs);
        for (Path d : dirs) {
            ModelSpec spec = ConfigLoader.load(d);
            assertEquals(d.resolve("config.json"), spec.source());
            assertEquals(spec.numLayers(), spec.attentionKinds().size(), d.toString());
        }
    }

    @Test
    void deepseekV3() {
        ModelSpec s = load("deepseek-v3");
        assertEquals(ModelFamily.DEEPSEEK_V3, s.family());
        assertEquals(7168, s.hiddenSize());
        assertEquals(61, s.numLayers());
        assertEquals(128, s.numHeads());
        assertEquals(128, s.numKvHeads());
        assertEquals(129280, s.vocabSize());
        assertEquals(18432, s.intermediateSize());
        assertEquals(192, s.headDim());
        assertEquals(128, s.vHeadDim());
        MlaSpec mla = s.mla();
        assertEquals(1536, mla.qLoraRank());
        assertEquals(512, mla.kvLoraRank());
        assertEquals(128, mla.qkNopeHeadDim());
        assertEquals(64, mla.qkRopeHeadDim());
        assertEquals(576, s.kvElementsPerTokenPerLayer());
        assertEquals(64, s.rotaryDim());
        MoeSpec moe = s.moe();
        assertEquals(256, moe.numExperts());
        assertEquals(8, moe.topK());
        assertEquals(1, moe.numSharedExperts());
        assertEquals(2048, moe.moeIntermediateSize());
        assertEquals(2048, moe.sharedIntermediateSize());
        assertEquals(8, moe.nGroup());
        assertEquals(4, moe.topkGroup());
        assertEquals(2.5, moe.routedScalingFactor());
        assertEquals(MoeSpec.Scoring.SIGMOID, moe.scoring());
        assertTrue(moe.eScoreCorrectionBias());
        assertTrue(moe.normTopkProb());
        assertEquals(3, moe.firstKDenseReplace());
        assertFalse(s.isMoeLayer(2));
        assertTrue(s.isMoeLayer(3));
        assertEquals(58, s.numMoeLayers());
        assertEquals(1, s.numNextnPredictLayers());
        assertEquals(163840, s.maxPositionEmbeddings());
        assertEquals(DType.BF16, s.dtype());
        assertEquals(0, s.bosTokenId());
        assertEquals(List.of(1), s.eosTokenIds());
        RopeScaling r = s.ropeScaling();
        assertEquals(RopeScaling.Type.YARN, r.type());
        assertEquals(10000, r.theta());
        assertEquals(40, r.factor());
        assertEquals(4096, r.originalMaxPositions());
        assertEquals(1.0, r.mscale());
        assertEquals(1.0, r.mscaleAllDim());
        assertEquals(1.0f, r.attentionFactor()); // mscale / mscale_all_dim, both 1
        QuantizationConfig.Fp8 q = assertInstanceOf(QuantizationConfig.Fp8.class, s.quantization());
        assertEquals(List.of(128, 128), q.weightBlockSize());
        assertEquals("dynamic", q.activationScheme());
        assertFalse(q.ue8m0Scales());
    }

    @Test
    void kimiK2Instruct() {
        ModelSpec s = load("kimi-k2-instruct");
        assertEquals("kimi_k2", s.modelType());
        assertEquals(ModelFamily.DEEPSEEK_V3, s.family());
        assertEquals(7168, s.hiddenSize());
        assertEquals(64, s.numHeads());
        assertEquals(384, s.moe().numExperts());
        assertEquals(8, s.moe().topK());
        assertEquals(1, s.moe().nGroup());
        assertEquals(1, s.moe().topkGroup());
        assertEquals(2.827, s.moe().routedScalingFactor());
        assertEquals(60, s.numMoeLayers());
        assertFalse(s.isMoeLayer(0));
        assertEquals(163840, s.vocabSize());
        assertEquals(0, s.numNextnPredictLayers());
        assertEquals(163584, s.bosTokenId());
        assertEquals(List.of(163585), s.eosTokenIds());
        assertEquals(50000.0, s.rope().theta());
        assertEquals(32.0, s.rope().factor());
        assertEquals(1.0, s.rope().betaFast());
        assertInstanceOf(QuantizationConfig.Fp8.class, s.quantization());
    }

    @Test
    void kimiK25WrapperReadsTextConfig() {
        ModelSpec s = load("kimi-k2.6");
        assertEquals("kimi_k25", s.modelType());
        assertEquals(ModelFamily.DEEPSEEK_V3, s.family());
        assertEquals(7168, s.hiddenSize());
        assertEquals(61, s.numLayers());
        assertEquals(64, s.numHeads());
        assertEquals(512, s.mla().kvLoraRank());
        assertEquals(1536, s.mla().qLoraRank());
        assertEquals(384, s.moe().numExperts());
        assertEquals(8, s.moe().topK());
        assertEquals(1, s.moe().firstKDenseReplace());
        assertEquals(262144, s.maxPositionEmbeddings());
        assertEquals(1e-5, s.rmsNormEps());
        assertEquals(64.0, s.rope().factor());
        assertEquals(163839, s.padTokenId());
        assertEquals(DType.BF16, s.dtype());
        var ct = assertInstanceOf(QuantizationConfig.CompressedTensors.class, s.quantization());
        assertEquals("pack-quantized", ct.format());
        assertEquals(List.of("lm_head", "re:.*self_attn.*", "re:.*shared_experts.*",
                "re:.*mlp\\.(gate|up|gate_up|down)_proj.*"), ct.ignore());
        QuantizationConfig.Group g = ct.configGroups().get("group_0");
        assertEquals(List.of("Linear"), g.targets());
        assertEquals(4, g.weights().numBits());
        assertEquals(32, g.weights().groupSize());
        assertTrue(g.weights().symmetric());
        assertEquals("group", g.weights().strategy());
        assertEquals("int", g.weights().type());
        assertNull(g.inputActivations());
        assertEquals("compressed", ct.quantizationStatus());
    }

    @Test
    void deepseekV4Flash() {
        ModelSpec s = load("deepseek-v4-flash");
        assertEquals(ModelFamily.DEEPSEEK_V4, s.family());
        assertEquals(4096, s.hiddenSize());
        assertEquals(43, s.numLayers());
        assertEquals(64, s.numHeads());
        assertEquals(1, s.numKvHeads());
        assertEquals(512, s.headDim());
        assertEquals(64, s.rotaryDim());
        assertEquals(256, s.moe().numExperts());
        assertEquals(6, s.moe().topK());
        assertEquals(2048, s.moe().moeIntermediateSize());
        assertEquals(MoeSpec.Scoring.SQRTSOFTPLUS, s.moe().scoring());
        assertEquals(1.5, s.moe().routedScalingFactor());
        assertEquals(3, s.moe().numHashLayers());
        assertEquals(MlpKind.HASH_MOE, s.mlpKind(2));
        assertEquals(MlpKind.MOE, s.mlpKind(3));
        assertEquals(43, s.numMoeLayers());
        assertEquals(128, s.slidingWindow());
        assertTrue(s.attentionSinks());
        DeepseekV4Spec v4 = s.deepseekV4();
        assertEquals(1024, v4.qLoraRank());
        assertEquals(8, v4.oGroups());
        assertEquals(1024, v4.oLoraRank());
        assertEquals(64, v4.indexNHeads());
        assertEquals(128, v4.indexHeadDim());
        assertEquals(512, v4.indexTopk());
        assertEquals(4, v4.hcMult());
        assertEquals(20, v4.hcSinkhornIters());
        assertEquals(10.0, v4.swigluLimit());
        assertEquals("fp4", v4.expertDtype());
        assertEquals(44, v4.compressRatios().size()); // 43 layers + 1 MTP layer
        assertEquals(AttentionKind.SLIDING, s.attentionKind(0));
        assertEquals(AttentionKind.SLIDING, s.attentionKind(1));
        assertEquals(AttentionKind.COMPRESSED_SPARSE, s.attentionKind(2));
        assertEquals(AttentionKind.HEAVILY_COMPRESSED, s.attentionKind(3));
        assertEquals(AttentionKind.COMPRESSED_SPARSE, s.attentionKind(42));
        assertEquals(21, s.attentionKinds().stream().filter(k -> k == AttentionKind.COMPRESSED_SPARSE).count());
        assertEquals(20, s.attentionKinds().stream().filter(k -> k == AttentionKind.HEAVILY_COMPRESSED).count());
        assertEquals(4, v4.compressRate(AttentionKind.COMPRESSED_SPARSE));
        assertEquals(128, v4.compressRate(AttentionKind.HEAVILY_COMPRESSED));
        assertEquals(0, v4.compressRate(AttentionKind.SLIDING));
        assertEquals(1, s.numNextnPredictLayers());
        // main branch: plain rope at rope_theta; compressed branches: YaRN x16 at compress_rope_theta, no mscale
        RopeScaling main = s.ropeScaling();
        assertEquals(RopeScaling.Type.DEFAULT, main.type());
        assertEquals(10000, main.theta());
        RopeScaling comp = s.compressRopeScaling();
        assertEquals(RopeScaling.Type.YARN, comp.type());
        assertEquals(160000, comp.theta());
        assertEquals(16, comp.factor());
        assertEquals(65536, comp.originalMaxPositions());
        assertEquals(1.0f, comp.attentionFactor());
        var q = assertInstanceOf(QuantizationConfig.Fp8.class, s.quantization());
        assertTrue(q.ue8m0Scales());
    }

    @Test
    void deepseekV4Pro() {
        ModelSpec s = load("deepseek-v4-pro");
        assertEquals(7168, s.hiddenSize());
        assertEquals(61, s.numLayers());
        assertEquals(128, s.numHeads());
        assertEquals(384, s.moe().numExperts());
        assertEquals(6, s.moe().topK());
        assertEquals(3072, s.moe().moeIntermediateSize());
        assertEquals(2.5, s.moe().routedScalingFactor());
        assertEquals(16, s.deepseekV4().oGroups());
        assertEquals(1536, s.deepseekV4().qLoraRank());
        assertEquals(1024, s.deepseekV4().indexTopk());
        assertEquals(62, s.deepseekV4().compressRatios().size());
        assertEquals(AttentionKind.HEAVILY_COMPRESSED, s.attentionKind(0));
        assertEquals(AttentionKind.HEAVILY_COMPRESSED, s.attentionKind(1));
        assertEquals(AttentionKind.COMPRESSED_SPARSE, s.attentionKind(2));
        assertEquals(AttentionKind.HEAVILY_COMPRESSED, s.attentionKind(59));
        assertEquals(AttentionKind.COMPRESSED_SPARSE, s.attentionKind(60)); // compress_ratios[61] = 0 is the MTP layer
        assertEquals(0, s.attentionKinds().stream().filter(k -> k == AttentionKind.SLIDING).count());
    }

    @Test
    void gptOss() {
        for (String name : List.of("gpt-oss-20b", "gpt-oss-120b")) {
            ModelSpec s = load(name);
            boolean big = name.endsWith("120b");
            assertEquals(ModelFamily.GPT_OSS, s.family());
            assertEquals(2880, s.hiddenSize());
            assertEquals(big ? 36 : 24, s.numLayers());
            assertEquals(64, s.numHeads());
            assertEquals(8, s.numKvHeads());
            assertEquals(64, s.headDim());
            assertEquals(201088, s.vocabSize());
            assertEquals(big ? 128 : 32, s.moe().numExperts());
            assertEquals(4, s.moe().topK());
            assertEquals(2880, s.moe().moeIntermediateSize());
            assertTrue(s.moe().routerBias() && s.moe().expertBias());
            assertTrue(s.attentionBias());
            assertTrue(s.attentionSinks());
            assertEquals(s.numLayers(), s.numMoeLayers());
            assertEquals(128, s.slidingWindow());
            assertEquals(AttentionKind.SLIDING, s.attentionKind(0));
            assertEquals(AttentionKind.FULL, s.attentionKind(1));
            assertEquals(7.0, s.gptOss().swigluLimit());
            assertEquals(1.702, s.gptOss().swigluAlpha());
            assertEquals(List.of(200002), s.eosTokenIds());
            assertNull(s.bosTokenId());
            assertEquals(199999, s.padTokenId());
            RopeScaling r = s.ropeScaling();
            assertEquals(RopeScaling.Type.YARN, r.type());
            assertEquals(150000, r.theta());
            assertEquals(32, r.factor());
            assertFalse(r.truncate());
            // YaRN default attention factor: 0.1 ln(32) + 1
            assertEquals(0.1 * Math.log(32) + 1, r.attentionFactor(), 1e-6);
            var q = assertInstanceOf(QuantizationConfig.Mxfp4.class, s.quantization());
            assertEquals(List.of("model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"),
                    q.modulesToNotConvert());
        }
    }

    @Test
    void qwen3Moe() {
        ModelSpec a = load("qwen3-30b-a3b");
        assertEquals(ModelFamily.QWEN3_MOE, a.family());
        assertEquals(2048, a.hiddenSize());
        assertEquals(48, a.numLayers());
        assertEquals(32, a.numHeads());
        assertEquals(4, a.numKvHeads());
        assertEquals(128, a.headDim());
        assertEquals(6144, a.intermediateSize());
        assertEquals(768, a.moe().moeIntermediateSize());
        assertEquals(128, a.moe().numExperts());
        assertEquals(8, a.moe().topK());
        assertTrue(a.moe().normTopkProb());
        assertEquals(48, a.numMoeLayers());
        assertEquals(0, a.slidingWindow());
        assertEquals(1_000_000, a.rope().theta());
        assertEquals(RopeScaling.Type.DEFAULT, a.ropeScaling().type());
        assertEquals(40960, a.maxPositionEmbeddings());
        assertEquals(151643, a.bosTokenId());
        assertEquals(List.of(151645), a.eosTokenIds());
        assertNull(a.quantization());

        ModelSpec b = load("qwen3-235b-a22b");
        assertEquals(4096, b.hiddenSize());
        assertEquals(94, b.numLayers());
        assertEquals(64, b.numHeads());
        assertEquals(4, b.numKvHeads());
        assertEquals(12288, b.intermediateSize());
        assertEquals(1536, b.moe().moeIntermediateSize());
        assertEquals(128, b.moe().numExperts());
        assertEquals(8, b.moe().topK());
        assertEquals(16, b.kvGroupSize());
    }

    @Test
    void qwen3Dense() {
        ModelSpec s = load("qwen3-4b");
        assertEquals(ModelFamily.QWEN3, s.family());
        assertEquals(2560, s.hiddenSize());
        assertEquals(36, s.numLayers());
        assertEquals(32, s.numHeads());
        assertEquals(8, s.numKvHeads());
        assertEquals(128, s.headDim());
        assertEquals(9728, s.intermediateSize());
        assertTrue(s.tieWordEmbeddings());
        assertNull(s.moe());
        assertFalse(s.isMoe());
        assertEquals(0, s.numMoeLayers());
        assertEquals(AttentionKind.FULL, s.attentionKind(35));
        assertEquals(8 * (128 + 128), s.kvElementsPerTokenPerLayer());
    }
}
