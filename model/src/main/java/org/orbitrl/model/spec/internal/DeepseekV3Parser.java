package org.orbitrl.model.spec.internal;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.MlaSpec;
import org.orbitrl.model.spec.MlpKind;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;
import org.orbitrl.model.spec.RopeSpec;

/**
 * {@code deepseek_v3}, {@code kimi_k2} and the text model of {@code kimi_k25}, with the defaults of
 * transformers' DeepseekV3Config. The router scores with sigmoid and selects with
 * {@code e_score_correction_bias} ({@code topk_method: noaux_tc}) unless the config says otherwise.
 */
public final class DeepseekV3Parser {
    private DeepseekV3Parser() {
    }

    /** @param outer the {@code kimi_k25} wrapper object, or null */
    public static ModelSpec parse(JsonFields f, JsonFields outer, String modelType) {
        CommonFields c = CommonFields.read(f, outer, modelType, ModelFamily.DEEPSEEK_V3,
                new CommonFields.Defaults(1e-6, 4096, 0, 1));
        int layers = c.numLayers();
        int kvHeads = f.optInt("num_key_value_heads", c.numHeads());

        Integer qLora = f.optInteger("q_lora_rank");
        MlaSpec mla;
        try {
            mla = new MlaSpec(qLora == null ? 0 : qLora, f.reqPositiveInt("kv_lora_rank"),
                    f.reqPositiveInt("qk_nope_head_dim"), f.reqPositiveInt("qk_rope_head_dim"),
                    f.reqPositiveInt("v_head_dim"), f.optBool("rope_interleave", true));
        } catch (IllegalArgumentException e) {
            throw CommonFields.invalid(f.file(), e);
        }

        int firstDense = f.optInt("first_k_dense_replace", 3);
        int freq = f.optInt("moe_layer_freq", 1);
        if (freq <= 0) {
            throw f.error("moe_layer_freq", "expected a positive integer, got " + freq);
        }
        List<MlpKind> mlp = new ArrayList<>(layers);
        for (int i = 0; i < layers; i++) {
            mlp.add(i >= firstDense && i % freq == 0 ? MlpKind.MOE : MlpKind.DENSE);
        }
        boolean anyDense = mlp.contains(MlpKind.DENSE);
        int inter = anyDense ? f.reqPositiveInt("intermediate_size") : f.optInt("intermediate_size", 0);

        String scoringName = f.optString("scoring_func", "sigmoid");
        MoeSpec.Scoring scoring = MoeSpec.Scoring.ofConfigName(scoringName);
        if (scoring == null || scoring == MoeSpec.Scoring.SQRTSOFTPLUS) {
            throw f.error("scoring_func", "unsupported '" + scoringName + "' for deepseek_v3; expected sigmoid or softmax");
        }
        String topkMethod = f.optString("topk_method", "noaux_tc");
        int moeInter = f.reqPositiveInt("moe_intermediate_size");
        int shared = f.optInt("n_shared_experts", 1);
        MoeSpec moe;
        try {
            moe = new MoeSpec(Qwen3Parser.expertCount(f), f.reqPositiveInt("num_experts_per_tok"), moeInter, shared,
                    moeInter * shared, f.optBool("norm_topk_prob", true), scoring,
                    f.optDouble("routed_scaling_factor", 2.5), f.optInt("n_group", 8), f.optInt("topk_group", 4),
                    "noaux_tc".equals(topkMethod), false, false, firstDense, freq, 0, List.of(), 0);
        } catch (IllegalArgumentException e) {
            throw CommonFields.invalid(f.file(), e);
        }

        RopeSpec rope = RopeParser.parse(f, 10000, null, 1);
        List<AttentionKind> attn = Collections.nCopies(layers, AttentionKind.FULL);
        try {
            return new ModelSpec(c.source(), modelType, ModelFamily.DEEPSEEK_V3, c.vocabSize(), c.hiddenSize(), layers,
                    c.numHeads(), kvHeads, mla.qkHeadDim(), mla.vHeadDim(), inter, c.hiddenAct(), c.rmsNormEps(),
                    c.tieWordEmbeddings(), f.optBool("attention_bias", false), c.maxPositionEmbeddings(), 0, false, attn,
                    mlp, rope, moe, mla, null, null, f.optInt("num_nextn_predict_layers", 0), c.quantization(),
                    c.dtype(), c.bosTokenId(), c.eosTokenIds(), c.padTokenId());
        } catch (IllegalArgumentException e) {
            throw CommonFields.invalid(f.file(), e);
        }
    }
}
