package org.orbitrl.memory.plan.internal;

import static org.orbitrl.memory.plan.ParamFamily.ATTENTION;
import static org.orbitrl.memory.plan.ParamFamily.DENSE_MLP;
import static org.orbitrl.memory.plan.ParamFamily.EMBEDDING;
import static org.orbitrl.memory.plan.ParamFamily.HYPER_CONNECTIONS;
import static org.orbitrl.memory.plan.ParamFamily.OUTPUT_HEAD;
import static org.orbitrl.memory.plan.ParamFamily.ROUTED_EXPERTS;
import static org.orbitrl.memory.plan.ParamFamily.ROUTER;
import static org.orbitrl.memory.plan.ParamFamily.SHARED_EXPERTS;

import java.util.List;
import org.orbitrl.memory.plan.WeightGroup;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.DeepseekV4Spec;
import org.orbitrl.model.spec.MlaSpec;
import org.orbitrl.model.spec.MlpKind;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;

/**
 * The weight tensors of each architecture, derived from the spec with the module structure of
 * transformers 5.17 (the reference the parameter counts are tested against). Fused expert
 * tensors are one {@code [2*inter, hidden]} gate_up and one {@code [hidden, inter]} down matrix
 * per expert. Multi-token-prediction layers, which transformers does not instantiate, follow the
 * upstream checkpoints' layout and are listed separately.
 */
public final class ArchitectureWeights {
    private ArchitectureWeights() {
    }

    /**
     * An empty list for {@code s}'s weights: DeepSeek V4 holds its norms, sinks, position biases and hyper-connection
     * weights as f32 arrays for its host operations, whatever the checkpoint stores.
     */
    private static GroupList groups(ModelSpec s) {
        return new GroupList(s.family() == org.orbitrl.model.spec.ModelFamily.DEEPSEEK_V4);
    }

    /** The decoder's weights (embedding, layers, final norm, head). */
    public static List<WeightGroup> main(ModelSpec s) {
        GroupList g = groups(s);
        long h = s.hiddenSize();
        g.embedding("model.embed_tokens.weight", EMBEDDING, s.vocabSize(), h);
        for (int i = 0; i < s.numLayers(); i++) {
            layer(s, g, "model.layers", s.attentionKind(i), s.mlpKind(i));
        }
        g.norm("model.norm.weight", h, 1);
        if (s.deepseekV4() != null) {
            hyperHead(g, "model.hc_head", s.deepseekV4().hcMult(), h);
        }
        if (!s.tieWordEmbeddings()) {
            g.linear("lm_head.weight", OUTPUT_HEAD, s.vocabSize(), h, 1);
        }
        return g.toList();
    }

    /** The weights of decoder layer {@code i} alone, named as {@link #main} names them (without the layer's index). */
    public static List<WeightGroup> layer(ModelSpec s, int i) {
        GroupList g = groups(s);
        layer(s, g, "model.layers", s.attentionKind(i), s.mlpKind(i));
        return g.toList();
    }

    /**
     * The multi-token-prediction layers of the upstream checkpoint ({@code num_nextn_predict_layers}):
     * DeepSeek-V3 adds to a MoE decoder layer {@code enorm}, {@code hnorm}, {@code eh_proj [H, 2H]}
     * and {@code shared_head.norm}; DeepSeek V4 adds to a sliding-window MoE block {@code e_proj},
     * {@code h_proj} {@code [H, H]}, three norms and a hyper-connection head. Embedding and output
     * head are shared with the main model (V3 checkpoints store copies; see {@link #mtpSharedCopies}).
     */
    public static List<WeightGroup> mtp(ModelSpec s) {
        GroupList g = groups(s);
        long h = s.hiddenSize();
        for (int n = 0; n < s.numNextnPredictLayers(); n++) {
            switch (s.family()) {
                case DEEPSEEK_V3 -> {
                    layer(s, g, "mtp", AttentionKind.FULL, MlpKind.MOE);
                    g.norm("mtp.enorm.weight", h, 1).norm("mtp.hnorm.weight", h, 1);
                    g.linear("mtp.eh_proj.weight", DENSE_MLP, h, 2 * h, 1);
                    g.norm("mtp.shared_head.norm.weight", h, 1);
                }
                case DEEPSEEK_V4 -> {
                    layer(s, g, "mtp", AttentionKind.SLIDING, MlpKind.MOE);
                    g.linear("mtp.e_proj.weight", DENSE_MLP, h, h, 1).linear("mtp.h_proj.weight", DENSE_MLP, h, h, 1);
                    g.norm("mtp.enorm.weight", h, 1).norm("mtp.hnorm.weight", h, 1).norm("mtp.norm.weight", h, 1);
                    hyperHead(g, "mtp.hc_head", s.deepseekV4().hcMult(), h);
                }
                default -> throw new IllegalArgumentException(s.modelType() + " declares "
                        + s.numNextnPredictLayers() + " multi-token-prediction layers, which Orbit does not model");
            }
        }
        return g.toList();
    }

    /** Elements of the embedding and head copies a DeepSeek-V3 checkpoint stores with each MTP layer. */
    public static long mtpSharedCopies(ModelSpec s) {
        return s.family() == org.orbitrl.model.spec.ModelFamily.DEEPSEEK_V3
                ? 2L * s.vocabSize() * s.hiddenSize() * s.numNextnPredictLayers() : 0;
    }

    private static void layer(ModelSpec s, GroupList g, String p, AttentionKind attn, MlpKind mlp) {
        long h = s.hiddenSize();
        g.norm(p + ".input_layernorm.weight", h, 1).norm(p + ".post_attention_layernorm.weight", h, 1);
        switch (s.family()) {
            case QWEN3, QWEN3_MOE -> gqaAttention(s, g, p, true, false);
            case GPT_OSS -> gqaAttention(s, g, p, false, true);
            case DEEPSEEK_V3 -> mla(s.mla(), s, g, p);
            case DEEPSEEK_V4 -> {
                v4Attention(s, g, p, attn);
                hyperConnection(g, p + ".attn_hc", s.deepseekV4().hcMult(), h);
                hyperConnection(g, p + ".ffn_hc", s.deepseekV4().hcMult(), h);
            }
        }
        if (mlp == MlpKind.DENSE) {
            g.swiglu(p + ".mlp", DENSE_MLP, h, s.intermediateSize(), 1, false);
        } else {
            moe(s, g, p, mlp);
        }
    }

    private static void gqaAttention(ModelSpec s, GroupList g, String p, boolean qkNorm, boolean sinks) {
        long h = s.hiddenSize();
        long q = (long) s.numHeads() * s.headDim();
        long kv = (long) s.numKvHeads() * s.headDim();
        long v = (long) s.numKvHeads() * s.vHeadDim();
        boolean b = s.attentionBias();
        g.linear(p + ".self_attn.q_proj.weight", ATTENTION, q, h, 1, b);
        g.linear(p + ".self_attn.k_proj.weight", ATTENTION, kv, h, 1, b);
        g.linear(p + ".self_attn.v_proj.weight", ATTENTION, v, h, 1, b);
        g.linear(p + ".self_attn.o_proj.weight", ATTENTION, h, (long) s.numHeads() * s.vHeadDim(), 1, b);
        if (qkNorm) {
            g.norm(p + ".self_attn.q_norm.weight", s.headDim(), 1).norm(p + ".self_attn.k_norm.weight", s.headDim(), 1);
        }
        if (sinks) {
            g.f32Param(p + ".self_attn.sinks", ATTENTION, 1, s.numHeads());   // f32, as attention reads them
        }
    }

    private static void mla(MlaSpec m, ModelSpec s, GroupList g, String p) {
        long h = s.hiddenSize();
        long nh = s.numHeads();
        boolean b = s.attentionBias();
        if (m.qLoraRank() > 0) {
            g.linear(p + ".self_attn.q_a_proj.weight", ATTENTION, m.qLoraRank(), h, 1, b);
            g.norm(p + ".self_attn.q_a_layernorm.weight", m.qLoraRank(), 1);
            g.linear(p + ".self_attn.q_b_proj.weight", ATTENTION, nh * m.qkHeadDim(), m.qLoraRank(), 1);
        } else {
            g.linear(p + ".self_attn.q_proj.weight", ATTENTION, nh * m.qkHeadDim(), h, 1);
        }
        g.linear(p + ".self_attn.kv_a_proj_with_mqa.weight", ATTENTION, m.kvLoraRank() + m.qkRopeHeadDim(), h, 1, b);
        g.norm(p + ".self_attn.kv_a_layernorm.weight", m.kvLoraRank(), 1);
        g.linear(p + ".self_attn.kv_b_proj.weight", ATTENTION, nh * (m.qkNopeHeadDim() + m.vHeadDim()), m.kvLoraRank(), 1);
        g.linear(p + ".self_attn.o_proj.weight", ATTENTION, h, nh * m.vHeadDim(), 1, b);
    }

    private static void v4Attention(ModelSpec s, GroupList g, String p, AttentionKind kind) {
        DeepseekV4Spec v = s.deepseekV4();
        long h = s.hiddenSize();
        long hd = s.headDim();
        long nh = s.numHeads();
        String a = p + ".self_attn";
        g.param(a + ".sinks", ATTENTION, 1, nh);
        g.linear(a + ".q_a_proj.weight", ATTENTION, v.qLoraRank(), h, 1);
        g.norm(a + ".q_a_norm.weight", v.qLoraRank(), 1);
        g.linear(a + ".q_b_proj.weight", ATTENTION, nh * hd, v.qLoraRank(), 1);
        g.linear(a + ".kv_proj.weight", ATTENTION, s.numKvHeads() * hd, h, 1);
        g.norm(a + ".kv_norm.weight", hd, 1);
        long og = v.oGroups();
        g.linear(a + ".o_a_proj.weight", ATTENTION, og * v.oLoraRank(), nh * hd / og, 1);
        g.linear(a + ".o_b_proj.weight", ATTENTION, h, og * v.oLoraRank(), 1);
        if (kind.isCompressed()) {
            long ratio = v.compressRate(kind);
            long coff = kind == AttentionKind.COMPRESSED_SPARSE ? 2 : 1;   // CSA pools overlapping windows
            String c = a + ".compressor";
            g.param(c + ".position_bias", ATTENTION, 1, ratio, coff * hd);
            g.linear(c + ".kv_proj.weight", ATTENTION, coff * hd, h, 1);
            g.linear(c + ".gate_proj.weight", ATTENTION, coff * hd, h, 1);
            g.norm(c + ".kv_norm.weight", hd, 1);
            if (kind == AttentionKind.COMPRESSED_SPARSE) {
                long ihd = v.indexHeadDim();
                String x = c + ".indexer";
                g.param(x + ".position_bias", ATTENTION, 1, ratio, 2 * ihd);
                g.linear(x + ".kv_proj.weight", ATTENTION, 2 * ihd, h, 1);
                g.linear(x + ".gate_proj.weight", ATTENTION, 2 * ihd, h, 1);
                g.norm(x + ".kv_norm.weight", ihd, 1);
                g.linear(x + ".q_b_proj.weight", ATTENTION, (long) v.indexNHeads() * ihd, v.qLoraRank(), 1);
                g.linear(x + ".scorer.weights_proj.weight", ATTENTION, v.indexNHeads(), h, 1);
            }
        }
    }

    private static void moe(ModelSpec s, GroupList g, String p, MlpKind kind) {
        MoeSpec m = s.moe();
        long h = s.hiddenSize();
        long e = m.numExperts();
        long inter = m.moeIntermediateSize();
        String router = s.family() == org.orbitrl.model.spec.ModelFamily.GPT_OSS ? ".mlp.router" : ".mlp.gate";
        g.linear(p + router + ".weight", ROUTER, e, h, 1, m.routerBias());
        if (kind == MlpKind.HASH_MOE) {
            g.buffer(p + ".mlp.gate.tid2eid", ROUTER, 1, s.vocabSize(), m.topK());
        } else if (m.eScoreCorrectionBias()) {
            g.buffer(p + ".mlp.gate.e_score_correction_bias", ROUTER, 1, e);
        }
        // [experts, 2*inter, hidden] and [experts, hidden, inter] as one matrix per expert
        g.linear(p + ".mlp.experts.gate_up_proj", ROUTED_EXPERTS, 2 * inter, h, e, false);
        if (m.expertBias()) {
            g.f32Param(p + ".mlp.experts.gate_up_proj_bias", ROUTED_EXPERTS, e, 2 * inter);
        }
        g.linear(p + ".mlp.experts.down_proj", ROUTED_EXPERTS, h, inter, e, false);
        if (m.expertBias()) {
            g.f32Param(p + ".mlp.experts.down_proj_bias", ROUTED_EXPERTS, e, h);
        }
        if (m.sharedIntermediateSize() > 0) {
            boolean bias = s.deepseekV4() != null && s.deepseekV4().mlpBias();
            g.swiglu(p + ".mlp.shared_experts", SHARED_EXPERTS, h, m.sharedIntermediateSize(), 1, bias);
        }
    }

    /** One mHC mixing unit: {@code fn [(2+n)*n, n*H]}, {@code base [(2+n)*n]}, {@code scale [3]}. */
    private static void hyperConnection(GroupList g, String p, long n, long h) {
        long mix = (2 + n) * n;
        g.param(p + ".fn", HYPER_CONNECTIONS, 1, mix, n * h);
        g.param(p + ".base", HYPER_CONNECTIONS, 1, mix);
        g.param(p + ".scale", HYPER_CONNECTIONS, 1, 3);
    }

    /** The head that folds the residual streams: {@code hc_fn [n, n*H]}, {@code hc_base [n]}, {@code hc_scale [1]}. */
    private static void hyperHead(GroupList g, String p, long n, long h) {
        g.param(p + ".hc_fn", HYPER_CONNECTIONS, 1, n, n * h);
        g.param(p + ".hc_base", HYPER_CONNECTIONS, 1, n);
        g.param(p + ".hc_scale", HYPER_CONNECTIONS, 1, 1);
    }
}
