package org.orbitrl.model.spec;

import java.util.List;

/**
 * The architectures Orbit runs, and the {@code model_type} strings of {@code config.json} that map
 * to each. Kimi-K2.x is the DeepSeek-V3 architecture: {@code kimi_k2} directly, and
 * {@code kimi_k25} as a wrapper whose {@code text_config} is the text model.
 */
public enum ModelFamily {
    QWEN3("qwen3"),
    QWEN3_MOE("qwen3_moe"),
    DEEPSEEK_V3("deepseek_v3", "kimi_k2", "kimi_k25"),
    DEEPSEEK_V4("deepseek_v4"),
    GPT_OSS("gpt_oss");

    private final List<String> modelTypes;

    ModelFamily(String... modelTypes) {
        this.modelTypes = List.of(modelTypes);
    }

    /** The {@code model_type} values that select this family. */
    public List<String> modelTypes() {
        return modelTypes;
    }

    /** The family of a {@code model_type}, or null if Orbit does not support it. */
    public static ModelFamily ofModelType(String modelType) {
        for (ModelFamily f : values()) {
            if (f.modelTypes.contains(modelType)) {
                return f;
            }
        }
        return null;
    }

    /** Every supported {@code model_type}, for error messages. */
    public static List<String> supportedModelTypes() {
        return java.util.Arrays.stream(values()).flatMap(f -> f.modelTypes.stream()).toList();
    }
}
