package org.orbitrl.model.arch;

import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.QuantizationConfig;

import java.util.List;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * The shape of a gpt-oss decoder ({@code gpt_oss}) as the model code needs it.
 *
 * @param sliding             per layer: sliding-window attention ({@code sliding_attention}) or full
 * @param slidingWindow       {@code sliding_window}: a query sees itself and the window − 1 keys before it
 * @param intermediate        {@code intermediate_size} of one expert (the fused gate_up has 2× as many rows)
 * @param swigluLimit         clamp of the experts' gate (above) and up (both sides)
 * @param swigluAlpha         the sigmoid's slope in {@code gate·sigmoid(alpha·gate)}
 * @param mxfp4               the checkpoint's {@code quantization_config} is {@code mxfp4}
 * @param modulesToNotConvert the mxfp4 config's {@code modules_to_not_convert} (glob patterns), empty otherwise
 */
public record GptOssConfig(int vocab, int hidden, int layers, int heads, int kvHeads, int headDim, int intermediate,
                           int experts, int topK, float rmsEps, boolean attentionBias, boolean tieEmbeddings,
                           RopeScaling rope, int maxPositions, boolean[] sliding, int slidingWindow,
                           float swigluLimit, float swigluAlpha, boolean mxfp4, List<String> modulesToNotConvert) {

    public GptOssConfig {
        require(vocab > 0 && hidden > 0 && layers > 0 && heads > 0 && kvHeads > 0 && headDim > 0,
                "sizes must be positive");
        require(heads % kvHeads == 0, "num_attention_heads " + heads + " is not a multiple of num_key_value_heads " + kvHeads);
        require(sliding.length == layers, "layer_types has " + sliding.length + " entries for " + layers + " layers");
        require(experts > 0 && topK > 0 && topK <= experts, "top-k " + topK + " of " + experts + " experts");
        require(intermediate > 0, "intermediate_size must be positive");
        require(slidingWindow > 0 || !anyTrue(sliding), "sliding_window must be positive with sliding layers");
        modulesToNotConvert = List.copyOf(modulesToNotConvert);
    }

    private static boolean anyTrue(boolean[] b) {
        for (boolean x : b) {
            if (x) {
                return true;
            }
        }
        return false;
    }

    private static void require(boolean ok, String msg) {
        if (!ok) {
            throw new IllegalArgumentException("gpt_oss config: " + msg);
        }
    }

    /** The shape of a {@code gpt_oss} spec. */
    public static GptOssConfig from(ModelSpec spec) {
        if (spec.family() != ModelFamily.GPT_OSS) {
            throw new IllegalArgumentException(spec.source() + ": model_type " + spec.modelType() + " is not gpt_oss");
        }
        boolean[] sliding = new boolean[spec.numLayers()];
        for (int i = 0; i < sliding.length; i++) {
            sliding[i] = spec.attentionKind(i) == AttentionKind.SLIDING;
        }
        QuantizationConfig q = spec.quantization();
        if (q != null && !(q instanceof QuantizationConfig.Mxfp4)) {
            throw new IllegalArgumentException(spec.source() + ": gpt_oss quantization_config quant_method "
                    + q.quantMethod() + " is not supported (expected mxfp4 or none)");
        }
        List<String> keep = q instanceof QuantizationConfig.Mxfp4 m ? m.modulesToNotConvert() : List.of();
        return new GptOssConfig(spec.vocabSize(), spec.hiddenSize(), spec.numLayers(), spec.numHeads(),
                spec.numKvHeads(), spec.headDim(), spec.moe().moeIntermediateSize(), spec.moe().numExperts(),
                spec.moe().topK(), (float) spec.rmsNormEps(), spec.attentionBias(), spec.tieWordEmbeddings(),
                spec.ropeScaling(), spec.maxPositionEmbeddings(), sliding, spec.slidingWindow(),
                (float) spec.gptOss().swigluLimit(), (float) spec.gptOss().swigluAlpha(), q != null, keep);
    }

    public boolean isSliding(int layer) {
        return sliding[layer];
    }

    /**
     * Whether the checkpoint stores {@code module}'s weights in MXFP4: the config is mxfp4 and no
     * {@code modules_to_not_convert} entry covers the module, by transformers' rule: an entry is a
     * regular expression matched at the start of the module name ({@code model.layers.*.self_attn}
     * covers {@code model.layers.3.self_attn}), or a suffix of the name.
     */
    public boolean storesMxfp4(String module) {
        if (!mxfp4) {
            return false;
        }
        for (String p : modulesToNotConvert) {
            if (module.endsWith(p)) {
                return false;
            }
            try {
                if (Pattern.compile(p).matcher(module).lookingAt()) {
                    return false;
                }
            } catch (PatternSyntaxException e) {
                throw new IllegalArgumentException("quantization_config.modules_to_not_convert entry '" + p
                        + "' is not a valid pattern: " + e.getDescription(), e);
            }
        }
        return true;
    }
}
