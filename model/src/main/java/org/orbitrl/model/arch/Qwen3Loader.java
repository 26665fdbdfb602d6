package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Placement;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightLoader;
import org.orbitrl.model.nn.WeightSource;
import org.orbitrl.model.parallel.ParallelLayout;
import org.orbitrl.model.parallel.RankGroups;
import org.orbitrl.model.parallel.ShardedWeights;

import java.util.HashSet;
import java.util.Set;

/**
 * Builds a {@link Qwen3Model} from named weights, checking every tensor's shape and that the source
 * holds exactly the tensors the architecture needs (missing and unexpected names are both errors);
 * under a {@link ParallelLayout}, this rank's share of them.
 */
final class Qwen3Loader {
    private Qwen3Loader() {
    }

    static Qwen3Model load(DecoderConfig full, WeightSource fullSource, Backend backend, Qwen3Model.LoadOptions options,
                           RankGroups groups) {
        DecoderConfig c = full;
        WeightSource src = fullSource;
        ShardedWeights sharded = null;
        if (groups != null) {
            ParallelLayout layout = groups.layout();
            layout.validate(full.modelType(), full.heads(), full.kvHeads(), full.intermediate(), full.hasDenseLayers(),
                    full.experts());
            if (full.vocab() % layout.tp() != 0) {
                throw new IllegalArgumentException(full.modelType() + ": vocab_size " + full.vocab()
                        + " is not divisible by tp " + layout.tp() + " (the embedding and LM head are split by rows)");
            }
            c = full.shard(layout.tp());
            sharded = new ShardedWeights(fullSource, layout, groups.rank(), full.experts());
            src = sharded;
        }
        Set<String> used = new HashSet<>();
        Loader w = new Loader(src, used, backend.allocator());
        int h = c.hidden();
        int qDim = c.heads() * c.headDim();
        int kvDim = c.kvHeads() * c.headDim();
        int vocabHere = c.vocab() / (groups == null ? 1 : groups.layout().tp());   // vocabulary rows this rank holds
        Tensor embed = w.get("model.embed_tokens.weight", vocabHere, h);
        Qwen3Layer[] layers = new Qwen3Layer[c.layers()];
        for (int i = 0; i < c.layers(); i++) {
            String p = "model.layers." + i + ".";
            Qwen3Attention attn = new Qwen3Attention(i, c,
                    w.linear(p + "self_attn.q_proj", qDim, h, c.attentionBias()),
                    w.linear(p + "self_attn.k_proj", kvDim, h, c.attentionBias()),
                    w.linear(p + "self_attn.v_proj", kvDim, h, c.attentionBias()),
                    w.linear(p + "self_attn.o_proj", h, qDim, false),
                    w.get(p + "self_attn.q_norm.weight", c.headDim()),
                    w.get(p + "self_attn.k_norm.weight", c.headDim()));
            DenseMlp mlp = null;
            SparseMoe moe = null;
            if (c.isMoe(i)) {
                ShardedWeights shards = sharded;
                DenseMlp[] experts = DenseMlp.routedExperts(w.place(), p + "mlp.experts.", c.experts(), c.moeIntermediate(), h,
                        e -> shards == null || shards.ownsExpert(e), w.weights()::weight, options.expertQuantizer());
                moe = new SparseMoe(w.linear(p + "mlp.gate", c.experts(), h, false), experts, c.topK(), c.normTopKProb());
            } else {
                mlp = new DenseMlp(
                        w.linear(p + "mlp.gate_proj", c.intermediate(), h, false),
                        w.linear(p + "mlp.up_proj", c.intermediate(), h, false),
                        w.linear(p + "mlp.down_proj", h, c.intermediate(), false));
            }
            layers[i] = new Qwen3Layer(w.get(p + "input_layernorm.weight", h), w.get(p + "post_attention_layernorm.weight", h),
                    attn, mlp, moe);
        }
        Tensor norm = w.get("model.norm.weight", h);
        Linear head = c.tieEmbeddings() && !src.has("lm_head.weight")
                ? new Linear("lm_head", Weight.of(embed), null)
                : w.linear("lm_head", vocabHere, h, false);
        Set<String> extra = new HashSet<>(src.names());
        extra.removeAll(used);
        extra.removeIf(n -> n.endsWith("rotary_emb.inv_freq"));
        if (!extra.isEmpty()) {
            throw new IllegalArgumentException("checkpoint has tensors a " + c.modelType() + " model does not use: "
                    + extra.stream().sorted().limit(10).toList() + (extra.size() > 10 ? " and " + (extra.size() - 10) + " more" : ""));
        }
        return new Qwen3Model(c, backend, embed, layers, norm, head, groups);
    }

    /**
     * Looks up tensors by name, records what was used, and builds linears; every tensor is placed
     * in the backend's memory ({@link Placement}).
     */
    private record Loader(WeightSource src, Set<String> used, WeightLoader weights, TensorAllocator place) {
        Loader(WeightSource src, Set<String> used, TensorAllocator place) {
            this(src, used, new WeightLoader(src, used), place);
        }

        Tensor get(String name, long... shape) {
            return Placement.tensor(place, weights.tensor(name, shape));
        }

        Linear linear(String module, int out, int in, boolean bias) {
            return new Linear(module, Placement.weight(place, weights.weight(module, out, in)),
                    bias ? Placement.tensor(place, weights.bias(module, out)) : null);
        }
    }
}
