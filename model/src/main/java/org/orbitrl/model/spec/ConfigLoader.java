package org.orbitrl.model.spec;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.orbitrl.model.spec.internal.DeepseekV3Parser;
import org.orbitrl.model.spec.internal.DeepseekV4Parser;
import org.orbitrl.model.spec.internal.GptOssParser;
import org.orbitrl.model.spec.internal.JsonFields;
import org.orbitrl.model.spec.internal.Qwen3Parser;

/**
 * Reads a Hugging Face {@code config.json} into a {@link ModelSpec}.
 *
 * <p>Both schemas are read: transformers 5 ({@code rope_parameters}, {@code num_local_experts},
 * {@code dtype}) and the older one the released checkpoints ship ({@code rope_theta} +
 * {@code rope_scaling} with {@code type} or {@code rope_type}, {@code num_experts},
 * {@code torch_dtype}). Keys that fix a weight shape (hidden size, layers, heads, head dims,
 * intermediate sizes, expert counts, MLA and DeepSeek V4 ranks) are required; other keys a config
 * omits take the defaults of the transformers 5.17 config class of the family. Unknown keys are
 * ignored (configs carry many generation and bookkeeping keys).
 *
 * <p>Every error is a {@link ConfigException} naming the file and, where there is one, the key.
 */
public final class ConfigLoader {
    private static final ObjectMapper JSON = new ObjectMapper();

    private ConfigLoader() {
    }

    /** Loads {@code dirOrFile}: a {@code config.json}, or a model directory holding one. */
    public static ModelSpec load(Path dirOrFile) {
        Path file = Files.isDirectory(dirOrFile) ? dirOrFile.resolve("config.json") : dirOrFile;
        if (!Files.isRegularFile(file)) {
            throw new ConfigException(file, null, "no such file; expected a config.json or a model directory holding one");
        }
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new ConfigException(file, null, "cannot read: " + e.getMessage(), e);
        }
        return parse(file, bytes);
    }

    /** Parses config JSON text; {@code file} names it in errors and becomes {@link ModelSpec#source()}. */
    public static ModelSpec parse(Path file, byte[] json) {
        JsonNode root;
        try {
            root = JSON.readTree(json);
        } catch (JsonProcessingException e) {
            throw new ConfigException(file, null, "invalid JSON: " + e.getOriginalMessage()
                    + " at line " + e.getLocation().getLineNr() + ", column " + e.getLocation().getColumnNr(), e);
        } catch (IOException e) {
            throw new ConfigException(file, null, "cannot read: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new ConfigException(file, null, "expected a JSON object at the top level, got "
                    + (root == null || root.isMissingNode() ? "nothing" : root.getNodeType().name().toLowerCase()));
        }
        JsonFields f = new JsonFields(file, "", (ObjectNode) root);
        String modelType = f.reqString("model_type");
        ModelFamily family = ModelFamily.ofModelType(modelType);
        if (family == null) {
            throw f.error("model_type", "unsupported model_type '" + modelType + "'; Orbit supports "
                    + ModelFamily.supportedModelTypes());
        }
        try {
            return switch (family) {
                case QWEN3, QWEN3_MOE -> Qwen3Parser.parse(f, modelType, family);
                case GPT_OSS -> GptOssParser.parse(f, modelType);
                case DEEPSEEK_V4 -> DeepseekV4Parser.parse(f, modelType);
                case DEEPSEEK_V3 -> "kimi_k25".equals(modelType) ? kimiK25(f) : DeepseekV3Parser.parse(f, null, modelType);
            };
        } catch (IllegalArgumentException | ArithmeticException e) {
            // values each valid alone that contradict each other (the spec's own checks): named with the file
            throw new ConfigException(file, null, e.getMessage(), e);
        }
    }

    /** The {@code kimi_k25} wrapper: the text model is its {@code text_config}, a DeepSeek-V3 text model. */
    private static ModelSpec kimiK25(JsonFields outer) {
        JsonFields text = outer.optObject("text_config");
        if (text == null) {
            throw outer.error("text_config", "missing; kimi_k25 keeps its text model (DeepSeek-V3 architecture) there");
        }
        String textType = text.reqString("model_type");
        if (ModelFamily.ofModelType(textType) != ModelFamily.DEEPSEEK_V3 || "kimi_k25".equals(textType)) {
            throw text.error("model_type", "unsupported text model '" + textType
                    + "' in kimi_k25; expected kimi_k2 or deepseek_v3");
        }
        return DeepseekV3Parser.parse(text, outer, "kimi_k25");
    }
}
