package org.orbitrl.model.spec.internal;

import java.nio.file.Path;
import java.util.List;
import org.orbitrl.kernels.DType;
import org.orbitrl.model.spec.ConfigException;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.QuantizationConfig;

/**
 * The keys every family reads the same way. Family defaults are passed in where transformers'
 * config classes differ.
 */
public record CommonFields(Path source, String modelType, ModelFamily family, int vocabSize, int hiddenSize,
                           int numLayers, int numHeads, String hiddenAct, double rmsNormEps, boolean tieWordEmbeddings,
                           int maxPositionEmbeddings, QuantizationConfig quantization, DType dtype, Integer bosTokenId,
                           List<Integer> eosTokenIds, Integer padTokenId) {

    /** Family defaults for keys a config may omit. */
    public record Defaults(double rmsNormEps, int maxPositionEmbeddings, Integer bosTokenId, Integer eosTokenId) {
    }

    /**
     * Reads the common keys from {@code text} (the text model's object); token ids, dtype and
     * quantization fall back to {@code outer} (the wrapper of {@code kimi_k25}) when the text
     * object lacks them.
     */
    public static CommonFields read(JsonFields text, JsonFields outer, String modelType, ModelFamily family,
                                    Defaults d) {
        JsonFields tokens = pick(text, outer, "eos_token_id");
        List<Integer> eos = tokens.has("eos_token_id") ? tokens.optIntListOrScalar("eos_token_id")
                : d.eosTokenId() == null ? List.of() : List.of(d.eosTokenId());
        JsonFields bosSrc = pick(text, outer, "bos_token_id");
        Integer bos = bosSrc.has("bos_token_id") ? bosSrc.optInteger("bos_token_id")
                : bosSrc.hasExplicitNull("bos_token_id") ? null : d.bosTokenId();
        JsonFields padSrc = pick(text, outer, "pad_token_id");
        JsonFields quantSrc = pick(text, outer, "quantization_config");
        return new CommonFields(text.file(), modelType, family,
                text.reqPositiveInt("vocab_size"), text.reqPositiveInt("hidden_size"),
                text.reqPositiveInt("num_hidden_layers"), text.reqPositiveInt("num_attention_heads"),
                text.optString("hidden_act", "silu"), text.optDouble("rms_norm_eps", d.rmsNormEps()),
                text.optBool("tie_word_embeddings", false),
                text.optInt("max_position_embeddings", d.maxPositionEmbeddings()),
                QuantizationParser.parse(quantSrc.optObject("quantization_config")), dtype(text, outer),
                bos, eos, padSrc.optInteger("pad_token_id"));
    }

    private static JsonFields pick(JsonFields text, JsonFields outer, String key) {
        return text.has(key) || outer == null || text.hasExplicitNull(key) ? text : outer;
    }

    private static DType dtype(JsonFields text, JsonFields outer) {
        for (JsonFields f : outer == null ? List.of(text) : List.of(text, outer)) {
            for (String key : new String[] {"dtype", "torch_dtype"}) {
                if (f.has(key)) {
                    String name = f.reqString(key);
                    return switch (name) {
                        case "bfloat16" -> DType.BF16;
                        case "float16" -> DType.F16;
                        case "float32" -> DType.F32;
                        default -> throw f.error(key, "unsupported dtype '" + name
                                + "'; expected bfloat16, float16 or float32");
                    };
                }
            }
        }
        return null;
    }

    /** Wraps a failed record validation as an error naming the file. */
    public static ConfigException invalid(Path file, IllegalArgumentException e) {
        return new ConfigException(file, null, e.getMessage(), e);
    }
}
