package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.arch.DenseMlp;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Placement;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightLoader;
import org.orbitrl.model.nn.WeightSource;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.MlpKind;

import java.util.HashSet;
import java.util.Set;
import java.util.function.Function;

/**
 * Builds {@link DeepseekV4Model} from a checkpoint in DeepSeek's native names, as transformers
 * 5.17 saves it ({@code model.layers.N.attn.wq_a.weight}, {@code model.embed_tokens.weight},
 * {@code model.hc_head.hc_fn}, {@code head.weight}) or as the released checkpoints name it
 * ({@code layers.N.attn.wq_a.weight}, {@code embed.weight}, {@code hc_head_fn}, {@code norm.weight},
 * {@code attn.kv_norm}; multi-token-prediction {@code mtp.*} tensors are not used). The linears
 * take transformers' module names, which PEFT adapters use: {@code wq_a} → {@code self_attn.q_a_proj},
 * {@code wq_b} → {@code q_b_proj}, {@code wkv} → {@code kv_proj}, {@code wo_b} → {@code o_b_proj},
 * {@code compressor.wkv}/{@code wgate} → {@code self_attn.compressor.kv_proj}/{@code gate_proj},
 * {@code indexer.*} → {@code self_attn.compressor.indexer.*}, {@code ffn.gate} → {@code mlp.gate},
 * experts' {@code w1/w3/w2} → {@code gate_proj/up_proj/down_proj}. Every tensor's shape is
 * checked and a tensor nobody reads is an error. Weights may be bf16, FP8 with 128×128 block
 * scales or FP4 experts, as {@link DeepseekV4Weights} reads them. The linears' weights and the
 * embedding go where the backend's kernels read them ({@link Placement}: device memory for a device
 * backend), {@code wo_a} too ({@link GroupedOutput}); the host-side parameters (norms, hyper-connection mixes) stay f32
 * arrays.
 */
final class DeepseekV4Loader {
    private final WeightLoader w;
    private final DeepseekV4Weights quant;
    private final Set<String> used = new HashSet<>();
    private final WeightSource src;
    private final boolean released;
    private final Function<Tensor, Weight> expertQuantizer;
    private final TensorAllocator place;   // where the linears' weights and the embedding go: the backend's memory

    private DeepseekV4Loader(WeightSource src, Function<Tensor, Weight> expertQuantizer, TensorAllocator place) {
        this.expertQuantizer = expertQuantizer;
        this.place = place;
        this.src = src;
        this.w = new WeightLoader(src, used);
        this.quant = new DeepseekV4Weights(src, used, w);
        this.released = !src.has("model.embed_tokens.weight") && src.has("embed.weight");
    }

    private String layer(int i) {
        return (released ? "layers." : "model.layers.") + i + ".";
    }

    private float[] floats(String name, long... shape) {
        return w.tensor(name, shape).toFloatArray();
    }

    private float[] firstOf(long[] shape, String... names) {
        for (String n : names) {
            if (src.has(n)) {
                return floats(n, shape);
            }
        }
        throw new IllegalArgumentException("checkpoint has none of " + String.join(", ", names));
    }

    private Linear linear(String hfName, String module, int out, int in) {
        return Placement.linear(place, new Linear(hfName, quant.weight(module, out, in), null));
    }

    static DeepseekV4Model load(DeepseekV4Config c, WeightSource src, Backend backend,
                                Function<Tensor, Weight> expertQuantizer) {
        return new DeepseekV4Loader(src, expertQuantizer, backend.allocator()).build(c, backend);
    }

    /** A hash layer's token-to-expert table [vocab, k], each entry checked to name one of the layer's experts. */
    private int[] hashTable(String name, DeepseekV4Config c) {
        long[] stored = w.tensor(name, c.vocab(), c.topK()).toLongArray();
        int[] table = new int[stored.length];
        for (int i = 0; i < stored.length; i++) {
            if (stored[i] < 0 || stored[i] >= c.experts()) {
                throw new IllegalArgumentException(name + "[" + i / c.topK() + "] names expert " + stored[i]
                        + ": expected 0 to " + (c.experts() - 1));
            }
            table[i] = (int) stored[i];
        }
        return table;
    }

    /** A routed expert's projection: as stored, or quantized on load from full precision if asked. */
    private Weight expert(String module, int out, int in) {
        Weight wt = quant.weight(module, out, in);
        Tensor full = expertQuantizer == null ? null : Weight.quantizable(wt);
        return full != null ? expertQuantizer.apply(full) : wt;
    }

    /**
     * A layer's routed experts, each projection's experts placed together ({@link Placement#experts}: quantized experts
     * back to back in device memory, which the grouped tensor-core products read as one stacked matrix), each expert
     * read (and quantized, if asked) as it is placed.
     */
    private DenseMlp[] routedExperts(String p, String hp, DeepseekV4Config c, int h) {
        int n = c.experts();
        int inter = c.moeIntermediate();
        Weight[][] w = {   // gate (w1), up (w3), down (w2)
                Placement.experts(place, n, e -> expert(p + "ffn.experts." + e + ".w1", inter, h)),
                Placement.experts(place, n, e -> expert(p + "ffn.experts." + e + ".w3", inter, h)),
                Placement.experts(place, n, e -> expert(p + "ffn.experts." + e + ".w2", h, inter))};
        DenseMlp[] experts = new DenseMlp[n];
        for (int e = 0; e < n; e++) {
            String eh = hp + "mlp.experts." + e + ".";
            experts[e] = new DenseMlp(new Linear(eh + "gate_proj", w[0][e], null), new Linear(eh + "up_proj", w[1][e], null),
                    new Linear(eh + "down_proj", w[2][e], null));
        }
        return experts;
    }

    private DeepseekV4Model build(DeepseekV4Config c, Backend backend) {
        int h = c.hidden();
        int hc = c.hcMult();
        int d = c.headDim();
        Tensor embed = Placement.tensor(place, w.tensor(released ? "embed.weight" : "model.embed_tokens.weight", c.vocab(), h));
        DeepseekV4Model.Layer[] layers = new DeepseekV4Model.Layer[c.layers()];
        for (int i = 0; i < c.layers(); i++) {
            String p = layer(i);
            String hp = "model.layers." + i + ".";
            AttentionKind kind = c.kinds().get(i);
            DeepseekV4Compressor comp = null;
            DeepseekV4Indexer idx = null;
            if (kind.isCompressed()) {
                int rate = c.compressRate(i);
                boolean csa = kind == AttentionKind.COMPRESSED_SPARSE;
                int width = csa ? 2 * d : d;
                comp = new DeepseekV4Compressor(
                        linear(hp + "self_attn.compressor.kv_proj", p + "attn.compressor.wkv", width, h),
                        linear(hp + "self_attn.compressor.gate_proj", p + "attn.compressor.wgate", width, h),
                        floats(p + "attn.compressor.ape", rate, width), floats(p + "attn.compressor.norm.weight", d),
                        rate, d, csa, c.rmsEps());
                if (csa) {
                    int id = c.indexDim();
                    String ip = p + "attn.indexer.";
                    String ih = hp + "self_attn.compressor.indexer.";
                    DeepseekV4Compressor ic = new DeepseekV4Compressor(
                            linear(ih + "kv_proj", ip + "compressor.wkv", 2 * id, h),
                            linear(ih + "gate_proj", ip + "compressor.wgate", 2 * id, h),
                            floats(ip + "compressor.ape", rate, 2 * id), floats(ip + "compressor.norm.weight", id),
                            rate, id, true, c.rmsEps());
                    idx = new DeepseekV4Indexer(ic, linear(ih + "q_b_proj", ip + "wq_b", c.indexHeads() * id, c.qLoraRank()),
                            linear(ih + "scorer.weights_proj", ip + "weights_proj", c.indexHeads(), h), c.indexHeads(), id,
                            c.indexTopK());
                }
            }
            int groupIn = c.heads() * d / c.oGroups();
            DeepseekV4Attention attn = new DeepseekV4Attention(c, kind,
                    linear(hp + "self_attn.q_a_proj", p + "attn.wq_a", c.qLoraRank(), h),
                    floats(p + "attn.q_norm.weight", c.qLoraRank()),
                    linear(hp + "self_attn.q_b_proj", p + "attn.wq_b", c.heads() * d, c.qLoraRank()),
                    linear(hp + "self_attn.kv_proj", p + "attn.wkv", d, h),
                    firstOf(new long[] {d}, p + "attn.norm.weight", p + "attn.kv_norm.weight"),
                    outputProjection(p + "attn.wo_a", c, groupIn),
                    linear(hp + "self_attn.o_b_proj", p + "attn.wo_b", h, c.oGroups() * c.oLoraRank()),
                    floats(p + "attn.attn_sink", c.heads()), comp, idx);
            boolean hash = c.mlpKinds().get(i) == MlpKind.HASH_MOE;
            DenseMlp[] experts = routedExperts(p, hp, c, h);
            String sp = p + "ffn.shared_experts.";
            String sh = hp + "mlp.shared_experts.";
            DenseMlp shared = new DenseMlp(linear(sh + "gate_proj", sp + "w1", c.sharedIntermediate(), h),
                    linear(sh + "up_proj", sp + "w3", c.sharedIntermediate(), h),
                    linear(sh + "down_proj", sp + "w2", h, c.sharedIntermediate()));
            DeepseekV4Moe moe = new DeepseekV4Moe(linear(hp + "mlp.gate", p + "ffn.gate", c.experts(), h),
                    hash ? null : floats(p + "ffn.gate.bias", c.experts()),
                    hash ? hashTable(p + "ffn.gate.tid2eid", c) : null,
                    experts, shared, c.topK(), c.routedScaling(), c.swigluLimit(),
                    c.spec().moe().scoring() == org.orbitrl.model.spec.MoeSpec.Scoring.SIGMOID);
            layers[i] = new DeepseekV4Model.Layer(hyper(c, p + "hc_attn_"), floats(p + "attn_norm.weight", h), attn,
                    hyper(c, p + "hc_ffn_"), floats(p + "ffn_norm.weight", h), moe);
        }
        float[] headFn = released ? floats("hc_head_fn", hc, (long) hc * h) : floats("model.hc_head.hc_fn", hc, (long) hc * h);
        float[] headBase = released ? floats("hc_head_base", hc) : floats("model.hc_head.hc_base", hc);
        float headScale = (released ? floats("hc_head_scale", 1) : floats("model.hc_head.hc_scale", 1))[0];
        float[] norm = floats(released ? "norm.weight" : "model.norm.weight", h);
        Linear head = linear("lm_head", "head", c.vocab(), h);
        Set<String> extra = new HashSet<>(src.names());
        extra.removeAll(used);
        extra.removeIf(n -> n.startsWith("mtp.") || n.startsWith("model.mtp."));
        if (!extra.isEmpty()) {
            throw new IllegalArgumentException("checkpoint has tensors a deepseek_v4 model does not use: "
                    + extra.stream().sorted().limit(10).toList() + (extra.size() > 10 ? " and " + (extra.size() - 10)
                    + " more" : ""));
        }
        return new DeepseekV4Model(c, backend, embed, layers, headFn, headBase, headScale, norm, head);
    }

    /**
     * wo_a in its stored form where each head group's rows are a view of it (bf16, or FP8 block rows), else dequantized
     * to f32; in the backend's memory.
     */
    private GroupedOutput outputProjection(String module, DeepseekV4Config c, int groupIn) {
        Weight wt = quant.weight(module, c.oGroups() * c.oLoraRank(), groupIn);
        if (!GroupedOutput.viewable(wt, c.oLoraRank())) {
            wt = Weight.of(Weight.decoded(wt));
        }
        return new GroupedOutput(Placement.weight(place, wt), c.oGroups(), groupIn, c.oLoraRank());
    }

    private DeepseekV4HyperConnection hyper(DeepseekV4Config c, String prefix) {
        int hc = c.hcMult();
        int mix = (2 + hc) * hc;
        return new DeepseekV4HyperConnection(floats(prefix + "fn", mix, (long) hc * c.hidden()), floats(prefix + "base", mix),
                floats(prefix + "scale", 3), hc, c.hidden(), c.hcIters(), c.hcEps(), c.rmsEps());
    }
}
