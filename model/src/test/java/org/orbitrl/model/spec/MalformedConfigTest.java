package org.orbitrl.model.spec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Broken configs, each derived from a real one by one edit, fail with messages naming file and key. */
class MalformedConfigTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;

    private Path edited(String model, Consumer<ObjectNode> edit) throws IOException {
        ObjectNode root = (ObjectNode) JSON.readTree(ConfigPaths.models().resolve(model).resolve("config.json").toFile());
        edit.accept(root);
        Path file = tmp.resolve(model + "-config.json");
        JSON.writeValue(file.toFile(), root);
        return file;
    }

    private static ConfigException fails(Path file, String... fragments) {
        ConfigException e = assertThrows(ConfigException.class, () -> ConfigLoader.load(file));
        assertTrue(e.getMessage().contains(file.toString()), "message names the file: " + e.getMessage());
        for (String f : fragments) {
            assertTrue(e.getMessage().contains(f), "message contains '" + f + "': " + e.getMessage());
        }
        return e;
    }

    @Test
    void missingRequiredKey() throws IOException {
        Path f = edited("qwen3-30b-a3b", r -> r.remove("hidden_size"));
        ConfigException e = fails(f, "'hidden_size'", "missing", "integer");
        assertEquals("hidden_size", e.key());
    }

    @Test
    void missingExpertCount() throws IOException {
        fails(edited("qwen3-30b-a3b", r -> r.remove("num_experts")), "num_local_experts", "missing");
        fails(edited("deepseek-v3", r -> r.remove("kv_lora_rank")), "'kv_lora_rank'", "missing");
        fails(edited("deepseek-v4-pro", r -> r.remove("o_groups")), "'o_groups'", "missing");
    }

    @Test
    void wrongTypes() throws IOException {
        fails(edited("qwen3-4b", r -> r.put("num_hidden_layers", "36")), "'num_hidden_layers'",
                "expected an integer", "string \"36\"");
        fails(edited("qwen3-4b", r -> r.put("hidden_size", 2560.5)), "'hidden_size'", "expected an integer", "2560.5");
        fails(edited("qwen3-4b", r -> r.put("tie_word_embeddings", 1)), "'tie_word_embeddings'", "expected true or false");
        fails(edited("qwen3-4b", r -> r.put("rope_theta", "big")), "'rope_theta'", "expected a number");
        fails(edited("qwen3-4b", r -> r.put("hidden_size", -5)), "'hidden_size'", "positive", "-5");
        fails(edited("gpt-oss-20b", r -> r.putArray("layer_types").add("sliding_attention").add(3)),
                "'layer_types[1]'", "expected a string");
    }

    @Test
    void nestedKeyIsNamedWithItsPath() throws IOException {
        Path f = edited("kimi-k2.6", r -> ((ObjectNode) r.get("text_config")).put("hidden_size", "7168"));
        ConfigException e = fails(f, "'text_config.hidden_size'", "expected an integer");
        assertEquals("text_config.hidden_size", e.key());
        fails(edited("kimi-k2.6", r -> r.remove("text_config")), "'text_config'", "missing");
        fails(edited("kimi-k2.6", r -> ((ObjectNode) r.get("text_config")).put("model_type", "qwen3")),
                "'text_config.model_type'", "qwen3", "kimi_k2");
        fails(edited("kimi-k2.6", r -> ((ObjectNode) r.at("/text_config/quantization_config/config_groups/group_0/weights"))
                .remove("num_bits")), "'text_config.quantization_config.config_groups.group_0.weights.num_bits'", "missing");
    }

    @Test
    void unknownModelType() throws IOException {
        Path f = edited("qwen3-4b", r -> r.put("model_type", "llama"));
        fails(f, "unsupported model_type 'llama'", "qwen3", "qwen3_moe", "deepseek_v3", "kimi_k2", "kimi_k25",
                "deepseek_v4", "gpt_oss");
        fails(edited("qwen3-4b", r -> r.remove("model_type")), "'model_type'", "missing");
    }

    @Test
    void invalidJson() throws IOException {
        Path f = tmp.resolve("config.json");
        Files.writeString(f, "{\"model_type\": \"qwen3\", \"hidden_size\": 64,,}", StandardCharsets.UTF_8);
        fails(f, "invalid JSON", "line 1");
        Files.writeString(f, "[1, 2]", StandardCharsets.UTF_8);
        fails(f, "expected a JSON object", "array");
        Files.writeString(f, "", StandardCharsets.UTF_8);
        fails(f, "expected a JSON object");
    }

    @Test
    void directoryWithoutConfig() {
        fails(tmp, "no such file", "config.json");
        assertTrue(assertThrows(ConfigException.class, () -> ConfigLoader.load(tmp)).getMessage()
                .contains(tmp.resolve("config.json").toString()));
    }

    @Test
    void inconsistentValues() throws IOException {
        fails(edited("qwen3-30b-a3b", r -> r.put("num_key_value_heads", 5)), "num_attention_heads 32",
                "num_key_value_heads 5");
        fails(edited("qwen3-30b-a3b", r -> r.put("num_experts_per_tok", 200)), "num_experts_per_tok", "200");
        fails(edited("gpt-oss-20b", r -> r.putArray("layer_types").add("full_attention")), "'layer_types'",
                "1 entries", "expected 24");
        fails(edited("deepseek-v3", r -> r.put("n_group", 7)), "n_group 7", "256");
        fails(edited("deepseek-v4-flash", r -> ((com.fasterxml.jackson.databind.node.ArrayNode) r.get("compress_ratios"))
                .set(5, 16)), "'compress_ratios[5]'", "16");
        fails(edited("qwen3-30b-a3b", r -> r.putArray("mlp_only_layers").add(48)), "'mlp_only_layers[0]'", "48");
        fails(edited("qwen3-30b-a3b", r -> {
            r.putArray("mlp_only_layers").add(3);
            r.remove("intermediate_size");
        }), "'intermediate_size'", "missing");
    }

    @Test
    void unsupportedRopeAndQuantization() throws IOException {
        fails(edited("deepseek-v3", r -> ((ObjectNode) r.get("rope_scaling")).put("type", "dynamic")),
                "'rope_scaling.type'", "dynamic", "yarn");
        fails(edited("deepseek-v3", r -> ((ObjectNode) r.get("rope_scaling")).put("type", "linear").remove("factor")),
                "'rope_scaling.factor'", "missing");
        fails(edited("deepseek-v3", r -> ((ObjectNode) r.get("quantization_config")).put("quant_method", "gptq")),
                "'quantization_config.quant_method'", "gptq", "compressed-tensors");
        fails(edited("deepseek-v3", r -> ((ObjectNode) r.get("quantization_config")).putArray("weight_block_size").add(128)),
                "weight_block_size", "[128]");
        fails(edited("qwen3-4b", r -> r.put("torch_dtype", "float64")), "'torch_dtype'", "float64", "bfloat16");
    }
}
