package org.orbitrl.model.spec.internal;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.GptOssSpec;
import org.orbitrl.model.spec.MlpKind;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;
import org.orbitrl.model.spec.RopeSpec;

/** {@code gpt_oss}, with the defaults of transformers' GptOssConfig. Every layer is MoE. */
public final class GptOssParser {
    /** GptOssConfig's rope when the config has none: YaRN x32 over 4096 positions, not truncated. */
    private static final RopeSpec DEFAULT_ROPE =
            new RopeSpec(RopeScaling.Type.YARN, 150000, 32, 4096, 32, 1, 0, 0, Double.NaN, false, 1);

    private GptOssParser() {
    }

    public static ModelSpec parse(JsonFields f, String modelType) {
        CommonFields c = CommonFields.read(f, null, modelType, ModelFamily.GPT_OSS,
                new CommonFields.Defaults(1e-5, 131072, null, null));
        int layers = c.numLayers();
        int kvHeads = f.optInt("num_key_value_heads", 8);
        int headDim = f.reqPositiveInt("head_dim");
        int window = f.optInt("sliding_window", 128);
        List<AttentionKind> attn = LayerSchedule.attentionKinds(f, layers,
                Set.of(AttentionKind.FULL, AttentionKind.SLIDING), false);
        if (attn == null) {
            attn = new ArrayList<>(layers);
            for (int i = 0; i < layers; i++) {
                attn.add((i + 1) % 2 == 1 ? AttentionKind.SLIDING : AttentionKind.FULL);
            }
        }
        int topK;
        if (f.has("num_experts_per_tok")) {
            topK = f.reqPositiveInt("num_experts_per_tok");
            if (f.has("experts_per_token") && f.reqInt("experts_per_token") != topK) {
                throw f.error("experts_per_token", "is " + f.reqInt("experts_per_token")
                        + " but num_experts_per_tok is " + topK);
            }
        } else if (f.has("experts_per_token")) {
            topK = f.reqPositiveInt("experts_per_token");
        } else {
            throw f.error("num_experts_per_tok", "missing; expected the experts per token");
        }
        MoeSpec moe;
        GptOssSpec oss;
        try {
            // softmax over the top-k router logits: the same weights as softmax-all then renormalised top-k
            moe = new MoeSpec(Qwen3Parser.expertCount(f), topK, f.reqPositiveInt("intermediate_size"), 0, 0, true,
                    MoeSpec.Scoring.SOFTMAX, 1, 1, 1, false, true, true, 0, 1, 1, List.of(), 0);
            oss = new GptOssSpec(f.optDouble("swiglu_limit", 7.0), f.optDouble("swiglu_alpha", 1.702));
        } catch (IllegalArgumentException e) {
            throw CommonFields.invalid(f.file(), e);
        }
        RopeSpec rope = RopeParser.parse(f, 150000, DEFAULT_ROPE, 1);
        try {
            return new ModelSpec(c.source(), modelType, ModelFamily.GPT_OSS, c.vocabSize(), c.hiddenSize(), layers,
                    c.numHeads(), kvHeads, headDim, headDim, 0, c.hiddenAct(), c.rmsNormEps(), c.tieWordEmbeddings(),
                    f.optBool("attention_bias", true), c.maxPositionEmbeddings(), window, true, attn,
                    Collections.nCopies(layers, MlpKind.MOE), rope, moe, null, oss, null, 0, c.quantization(),
                    c.dtype(), c.bosTokenId(), c.eosTokenIds(), c.padTokenId());
        } catch (IllegalArgumentException e) {
            throw CommonFields.invalid(f.file(), e);
        }
    }
}
