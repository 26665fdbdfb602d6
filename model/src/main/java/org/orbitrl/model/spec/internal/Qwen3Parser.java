package org.orbitrl.model.spec.internal;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.MlpKind;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;
import org.orbitrl.model.spec.RopeSpec;

/** {@code qwen3} and {@code qwen3_moe}, with the defaults of transformers' Qwen3Config / Qwen3MoeConfig. */
public final class Qwen3Parser {
    private Qwen3Parser() {
    }

    public static ModelSpec parse(JsonFields f, String modelType, ModelFamily family) {
        CommonFields c = CommonFields.read(f, null, modelType, family,
                new CommonFields.Defaults(1e-6, 32768, null, null));
        int layers = c.numLayers();
        int kvHeads = f.optInt("num_key_value_heads", c.numHeads());
        int headDim = f.reqPositiveInt("head_dim");

        // sliding_window counts only with use_sliding_window; then layers from max_window_layers on slide
        boolean useSliding = f.optBool("use_sliding_window", false);
        int window = useSliding ? f.optInt("sliding_window", 4096) : 0;
        int maxWindowLayers = f.optInt("max_window_layers", 28);
        List<AttentionKind> attn = LayerSchedule.attentionKinds(f, layers,
                Set.of(AttentionKind.FULL, AttentionKind.SLIDING), false);
        if (attn == null) {
            attn = new ArrayList<>(layers);
            for (int i = 0; i < layers; i++) {
                attn.add(window > 0 && i >= maxWindowLayers ? AttentionKind.SLIDING : AttentionKind.FULL);
            }
        }

        List<MlpKind> mlp = new ArrayList<>(layers);
        MoeSpec moe = null;
        if (family == ModelFamily.QWEN3_MOE) {
            int experts = expertCount(f);
            int step = f.optInt("decoder_sparse_step", 1);
            if (step <= 0) {
                throw f.error("decoder_sparse_step", "expected a positive integer, got " + step);
            }
            List<Integer> mlpOnly = f.optIntList("mlp_only_layers");
            mlpOnly = mlpOnly == null ? List.of() : mlpOnly;
            Set<Integer> dense = new HashSet<>();
            for (int i = 0; i < mlpOnly.size(); i++) {
                int l = mlpOnly.get(i);
                if (l < 0 || l >= layers) {
                    throw f.error("mlp_only_layers[" + i + "]", "layer " + l + " is outside [0, " + layers + ")");
                }
                dense.add(l);
            }
            for (int i = 0; i < layers; i++) {
                mlp.add(!dense.contains(i) && (i + 1) % step == 0 ? MlpKind.MOE : MlpKind.DENSE);
            }
            int topK = f.reqPositiveInt("num_experts_per_tok");
            int moeInter = f.reqPositiveInt("moe_intermediate_size");
            try {
                moe = new MoeSpec(experts, topK, moeInter, 0, 0, f.optBool("norm_topk_prob", false),
                        MoeSpec.Scoring.SOFTMAX, 1, 1, 1, false, false, false, 0, 1, step, mlpOnly, 0);
            } catch (IllegalArgumentException e) {
                throw CommonFields.invalid(f.file(), e);
            }
        } else {
            for (int i = 0; i < layers; i++) {
                mlp.add(MlpKind.DENSE);
            }
        }
        boolean anyDense = mlp.contains(MlpKind.DENSE);
        int inter = anyDense ? f.reqPositiveInt("intermediate_size") : f.optInt("intermediate_size", 0);

        RopeSpec rope = RopeParser.parse(f, 10000, null, 1);
        try {
            return new ModelSpec(c.source(), modelType, family, c.vocabSize(), c.hiddenSize(), layers, c.numHeads(),
                    kvHeads, headDim, headDim, inter, c.hiddenAct(), c.rmsNormEps(), c.tieWordEmbeddings(),
                    f.optBool("attention_bias", false), c.maxPositionEmbeddings(), window, false, attn, mlp, rope, moe,
                    null, null, null, 0, c.quantization(), c.dtype(), c.bosTokenId(), c.eosTokenIds(), c.padTokenId());
        } catch (IllegalArgumentException e) {
            throw CommonFields.invalid(f.file(), e);
        }
    }

    /** Routed expert count under any of its names: {@code num_experts}, {@code num_local_experts}, {@code n_routed_experts}. */
    static int expertCount(JsonFields f) {
        Integer found = null;
        String foundKey = null;
        for (String key : new String[] {"num_local_experts", "num_experts", "n_routed_experts"}) {
            if (f.has(key)) {
                int v = f.reqPositiveInt(key);
                if (found != null && found != v) {
                    throw f.error(key, "is " + v + " but " + foundKey + " is " + found);
                }
                found = v;
                foundKey = key;
            }
        }
        if (found == null) {
            throw f.error("num_local_experts", "missing; expected the routed expert count as num_local_experts, "
                    + "num_experts or n_routed_experts");
        }
        return found;
    }
}
