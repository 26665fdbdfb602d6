package org.orbitrl.model.spec.internal;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.DeepseekV4Spec;
import org.orbitrl.model.spec.MlpKind;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;
import org.orbitrl.model.spec.RopeSpec;

/**
 * {@code deepseek_v4}, as transformers' DeepseekV4Config resolves it: the released checkpoints'
 * keys ({@code compress_ratios}, {@code num_hash_layers}, {@code qk_rope_head_dim},
 * {@code rope_theta} + {@code rope_scaling}) and the transformers 5 keys ({@code layer_types},
 * {@code compress_rates}, {@code mlp_layer_types}, nested {@code rope_parameters.main/compress})
 * both resolve to the same spec.
 */
public final class DeepseekV4Parser {
    private static final Set<AttentionKind> KINDS =
            Set.of(AttentionKind.SLIDING, AttentionKind.COMPRESSED_SPARSE, AttentionKind.HEAVILY_COMPRESSED);

    private DeepseekV4Parser() {
    }

    public static ModelSpec parse(JsonFields f, String modelType) {
        CommonFields c = CommonFields.read(f, null, modelType, ModelFamily.DEEPSEEK_V4,
                new CommonFields.Defaults(1e-6, 1048576, 0, 1));
        int layers = c.numLayers();
        int headDim = f.reqPositiveInt("head_dim");

        Map<AttentionKind, Integer> rates = compressRates(f);
        List<Integer> ratios = f.optIntList("compress_ratios");
        List<AttentionKind> attn = LayerSchedule.attentionKinds(f, layers, KINDS, true);
        if (attn == null && ratios != null) {
            if (ratios.size() < layers) {
                throw f.error("compress_ratios", "has " + ratios.size() + " entries; expected at least " + layers
                        + " (num_hidden_layers)");
            }
            attn = new ArrayList<>(layers);
            for (int i = 0; i < layers; i++) {
                attn.add(switch (ratios.get(i)) {
                    case 0 -> AttentionKind.SLIDING;
                    case 4 -> AttentionKind.COMPRESSED_SPARSE;
                    case 128 -> AttentionKind.HEAVILY_COMPRESSED;
                    default -> throw f.error("compress_ratios[" + i + "]", "unknown compress ratio " + ratios.get(i)
                            + "; expected 0 (sliding), 4 (compressed sparse) or 128 (heavily compressed)");
                });
            }
        }
        if (attn == null) {
            // transformers' default schedule: two heavily-compressed layers, then CSA/HCA interleaved
            attn = new ArrayList<>(layers);
            for (int i = 0; i < layers; i++) {
                attn.add(i < 2 || (i - 2) % 2 == 0 ? AttentionKind.HEAVILY_COMPRESSED : AttentionKind.COMPRESSED_SPARSE);
            }
        }

        List<MlpKind> mlp = mlpKinds(f, layers);
        int hashLayers = (int) mlp.stream().filter(k -> k == MlpKind.HASH_MOE).count();

        // partial rotary: explicit factor > qk_rope_head_dim / head_dim > 64/512
        double partial = f.has("partial_rotary_factor") ? f.reqDouble("partial_rotary_factor")
                : f.has("qk_rope_head_dim") ? (double) f.reqPositiveInt("qk_rope_head_dim") / headDim : 64.0 / 512;
        RopeSpec[] ropes = ropes(f, partial);

        int moeInter = f.reqPositiveInt("moe_intermediate_size");
        int shared = f.optInt("n_shared_experts", 1);
        String scoringName = f.optString("scoring_func", "sqrtsoftplus");
        MoeSpec.Scoring scoring = MoeSpec.Scoring.ofConfigName(scoringName);
        if (scoring == null) {
            throw f.error("scoring_func", "unsupported '" + scoringName + "'; expected sqrtsoftplus, sigmoid or softmax");
        }
        double swigluLimit = f.optDouble("swiglu_limit", 10.0);
        try {
            MoeSpec moe = new MoeSpec(Qwen3Parser.expertCount(f), f.reqPositiveInt("num_experts_per_tok"), moeInter,
                    shared, moeInter * shared, f.optBool("norm_topk_prob", true), scoring,
                    f.optDouble("routed_scaling_factor", 1.5), 1, 1,
                    "noaux_tc".equals(f.optString("topk_method", "noaux_tc")), false, false, 0, 1, 0, List.of(),
                    hashLayers);
            DeepseekV4Spec v4 = new DeepseekV4Spec(f.reqPositiveInt("q_lora_rank"), f.reqPositiveInt("o_groups"),
                    f.reqPositiveInt("o_lora_rank"), f.reqPositiveInt("index_n_heads"), f.reqPositiveInt("index_head_dim"),
                    f.optInt("index_topk", 512), rates, ratios == null ? List.of() : ratios, ropes[1],
                    f.optInt("hc_mult", 4), f.optInt("hc_sinkhorn_iters", 20), f.optDouble("hc_eps", 1e-6), swigluLimit,
                    f.optString("expert_dtype", null), f.optBool("mlp_bias", false));
            return new ModelSpec(c.source(), modelType, ModelFamily.DEEPSEEK_V4, c.vocabSize(), c.hiddenSize(), layers,
                    c.numHeads(), f.optInt("num_key_value_heads", 1), headDim, headDim, 0, c.hiddenAct(),
                    c.rmsNormEps(), c.tieWordEmbeddings(), f.optBool("attention_bias", false),
                    c.maxPositionEmbeddings(), f.optInt("sliding_window", 128), true, attn, mlp, ropes[0], moe, null,
                    null, v4, f.optInt("num_nextn_predict_layers", 1), c.quantization(), c.dtype(), c.bosTokenId(),
                    c.eosTokenIds(), c.padTokenId());
        } catch (IllegalArgumentException e) {
            throw CommonFields.invalid(f.file(), e);
        }
    }

    private static Map<AttentionKind, Integer> compressRates(JsonFields f) {
        Map<AttentionKind, Integer> rates = new EnumMap<>(AttentionKind.class);
        rates.put(AttentionKind.COMPRESSED_SPARSE, 4);
        rates.put(AttentionKind.HEAVILY_COMPRESSED, 128);
        Map<String, Integer> given = f.optIntMap("compress_rates");
        if (given != null) {
            for (var e : given.entrySet()) {
                AttentionKind k = AttentionKind.ofConfigName(e.getKey());
                if (k == null || !k.isCompressed()) {
                    throw f.error("compress_rates." + e.getKey(), "unknown attention type; expected "
                            + AttentionKind.COMPRESSED_SPARSE.configName() + " or "
                            + AttentionKind.HEAVILY_COMPRESSED.configName());
                }
                rates.put(k, e.getValue());
            }
        }
        if (f.has("compress_rate_csa")) {
            rates.put(AttentionKind.COMPRESSED_SPARSE, f.reqPositiveInt("compress_rate_csa"));
        }
        if (f.has("compress_rate_hca")) {
            rates.put(AttentionKind.HEAVILY_COMPRESSED, f.reqPositiveInt("compress_rate_hca"));
        }
        return rates;
    }

    private static List<MlpKind> mlpKinds(JsonFields f, int layers) {
        List<String> names = f.optStringList("mlp_layer_types");
        List<MlpKind> out = new ArrayList<>(layers);
        if (names == null) {
            int hash = f.optInt("num_hash_layers", 3);
            for (int i = 0; i < layers; i++) {
                out.add(i < hash ? MlpKind.HASH_MOE : MlpKind.MOE);
            }
            return out;
        }
        if (names.size() < layers) {
            throw f.error("mlp_layer_types", "has " + names.size() + " entries; expected " + layers + " (num_hidden_layers)");
        }
        for (int i = 0; i < layers; i++) {
            out.add(switch (names.get(i)) {
                case "hash_moe" -> MlpKind.HASH_MOE;
                case "moe" -> MlpKind.MOE;
                default -> throw f.error("mlp_layer_types[" + i + "]", "unknown MLP type '" + names.get(i)
                        + "'; expected hash_moe or moe");
            });
        }
        return out;
    }

    /**
     * [main, compress] rotary parameters. Nested {@code rope_parameters.main/compress} are read as
     * given; otherwise main is plain rope at {@code rope_theta} and compress takes the config's
     * YaRN scaling at {@code compress_rope_theta} with attention factor 1 (the reference does not
     * scale cos/sin there).
     */
    private static RopeSpec[] ropes(JsonFields f, double partial) {
        double theta = f.optDouble("rope_theta", 10000);
        double compressTheta = f.optDouble("compress_rope_theta", 160000);
        JsonFields params = f.optObject("rope_parameters");
        if (params != null && params.has("main") && params.has("compress")) {
            return new RopeSpec[] {RopeParser.fromParams(params.optObject("main"), theta, partial),
                    RopeParser.fromParams(params.optObject("compress"), compressTheta, partial)};
        }
        if (params == null) {
            params = f.optObject("rope_scaling");
        }
        RopeSpec main = RopeSpec.plain(theta).withPartialRotaryFactor(partial);
        RopeSpec compress = params == null ? RopeSpec.plain(compressTheta).withPartialRotaryFactor(partial)
                : RopeParser.fromParams(params, compressTheta, partial).withTheta(compressTheta)
                        .withPartialRotaryFactor(partial);
        if (compress.type() == RopeScaling.Type.YARN && !params.has("attention_factor")) {
            compress = new RopeSpec(compress.type(), compress.theta(), compress.factor(), compress.originalMaxPositions(),
                    compress.betaFast(), compress.betaSlow(), compress.mscale(), compress.mscaleAllDim(), 1.0,
                    compress.truncate(), compress.partialRotaryFactor());
        }
        return new RopeSpec[] {main, compress};
    }
}
