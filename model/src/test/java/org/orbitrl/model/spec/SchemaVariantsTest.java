package org.orbitrl.model.spec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.RopeScaling;

/**
 * The older schema of the released configs and the transformers 5 schema (as
 * {@code save_pretrained} rewrites them) give the same spec.
 */
class SchemaVariantsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Path NAME = Path.of("config.json");

    private static ObjectNode read(String model) throws IOException {
        return (ObjectNode) JSON.readTree(ConfigPaths.models().resolve(model).resolve("config.json").toFile());
    }

    private static ModelSpec parse(ObjectNode root) throws IOException {
        return ConfigLoader.parse(NAME, JSON.writeValueAsBytes(root));
    }

    @Test
    void qwen3MoeInTransformers5Keys() throws IOException {
        ObjectNode old = read("qwen3-30b-a3b");
        ObjectNode v5 = old.deepCopy();
        v5.put("num_local_experts", v5.remove("num_experts").intValue());
        v5.put("dtype", v5.remove("torch_dtype").textValue());
        v5.remove("rope_scaling");
        v5.putObject("rope_parameters").put("rope_type", "default").put("rope_theta", v5.remove("rope_theta").doubleValue());
        assertEquals(parse(old), parse(v5));
        // and the comparison can fail: a different theta is a different spec
        ((ObjectNode) v5.get("rope_parameters")).put("rope_theta", 5e5);
        assertNotEquals(parse(old), parse(v5));
    }

    @Test
    void gptOssRopeScalingVersusRopeParameters() throws IOException {
        ObjectNode old = read("gpt-oss-20b");
        ObjectNode v5 = old.deepCopy();
        ObjectNode rp = (ObjectNode) v5.remove("rope_scaling");
        rp.put("rope_theta", v5.remove("rope_theta").doubleValue());
        v5.set("rope_parameters", rp);
        assertEquals(parse(old), parse(v5));
        // without any rope keys, GptOssConfig's defaults give the same YaRN rope
        ObjectNode bare = old.deepCopy();
        bare.remove("rope_scaling");
        bare.remove("rope_theta");
        assertEquals(parse(old).rope(), parse(bare).rope());
    }

    @Test
    void deepseekV4LegacyKeysVersusTransformers5Keys() throws IOException {
        ObjectNode old = read("deepseek-v4-flash");
        ModelSpec a = parse(old);
        ObjectNode v5 = old.deepCopy();
        ArrayNode ratios = (ArrayNode) v5.remove("compress_ratios");
        ArrayNode types = v5.putArray("layer_types");
        for (int i = 0; i < a.numLayers(); i++) {
            int r = ratios.get(i).intValue();
            types.add(r == 0 ? "sliding_attention" : r == 4 ? "compressed_sparse_attention" : "heavily_compressed_attention");
        }
        v5.putObject("compress_rates").put("compressed_sparse_attention", 4).put("heavily_compressed_attention", 128);
        ArrayNode mlp = v5.putArray("mlp_layer_types");
        int hash = v5.remove("num_hash_layers").intValue();
        for (int i = 0; i < a.numLayers(); i++) {
            mlp.add(i < hash ? "hash_moe" : "moe");
        }
        ObjectNode yarn = (ObjectNode) v5.remove("rope_scaling");
        ObjectNode rp = v5.putObject("rope_parameters");
        rp.putObject("main").put("rope_type", "default").put("rope_theta", 10000.0).put("partial_rotary_factor", 0.125);
        ObjectNode compress = yarn.deepCopy();
        compress.put("rope_type", compress.remove("type").textValue());
        compress.put("rope_theta", 160000.0).put("partial_rotary_factor", 0.125).put("attention_factor", 1.0);
        rp.set("compress", compress);
        v5.remove("qk_rope_head_dim");
        v5.put("partial_rotary_factor", 0.125);
        ModelSpec b = parse(v5);
        assertEquals(a.attentionKinds(), b.attentionKinds());
        assertEquals(a.mlpKinds(), b.mlpKinds());
        assertEquals(a.rope(), b.rope());
        assertEquals(a.deepseekV4().compressRope(), b.deepseekV4().compressRope());
        assertEquals(a.moe(), b.moe());
        assertEquals(RopeScaling.Type.YARN, b.compressRopeScaling().type());
    }

    @Test
    void yarnWithoutFactorDerivesItFromPositions() throws IOException {
        ObjectNode c = read("deepseek-v3");
        ((ObjectNode) c.get("rope_scaling")).remove("factor");
        RopeScaling r = parse(c).ropeScaling();
        assertEquals(RopeScaling.Type.YARN, r.type());
        assertEquals(163840.0 / 4096, r.effectiveFactor()); // max_position_embeddings / original_max_position_embeddings
    }

    @Test
    void mlaWithoutQueryCompression() throws IOException {
        ObjectNode c = read("deepseek-v3");
        c.putNull("q_lora_rank");
        assertEquals(0, parse(c).mla().qLoraRank());
    }

    @Test
    void qwen3SlidingWindowOnlyWhenEnabled() throws IOException {
        ObjectNode c = read("qwen3-4b");
        c.put("sliding_window", 4096);
        assertEquals(0, parse(c).slidingWindow());
        c.put("use_sliding_window", true);
        c.put("max_window_layers", 30);
        ModelSpec s = parse(c);
        assertEquals(4096, s.slidingWindow());
        assertEquals(AttentionKind.FULL, s.attentionKind(29));
        assertEquals(AttentionKind.SLIDING, s.attentionKind(30));
    }
}
