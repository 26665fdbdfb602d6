package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

/**
 * DeepSeek-V3 MoE block: sigmoid router scores; the experts are chosen on the scores plus
 * {@code e_score_correction_bias}, limited to the {@code topk_group} groups (of {@code n_group})
 * whose two best biased scores sum highest (other groups' biased scores are set to 0, as
 * transformers masks them); the chosen experts' unbiased scores are the weights, renormalised
 * ({@code norm_topk_prob}, +1e-20) and multiplied by {@code routed_scaling_factor}. The shared
 * experts (one fused SwiGLU MLP) see every token. The router is frozen; the gradient flows through
 * the routing weights into the input, as in transformers. The routing decision and the gradient of
 * the routing weights are taken on the host (router logits, expert outputs and d out are copied
 * there through {@link TensorAllocator#toHost}); everything else runs on the backend.
 */
final class DeepseekV3Moe {
    final Linear router;     // [experts, hidden]
    final float[] bias;      // [experts] e_score_correction_bias on the host, or null
    final DenseMlp[] experts;
    final DenseMlp shared;   // null when there are no shared experts
    private final int topK;
    private final int nGroup;
    private final int topkGroup;
    private final boolean normTopK;
    private final float scaling;
    private ExpertChunker chunker;

    /** Routing for N tokens, token-major [N*k]: experts, final weights, and the sigmoid scores [N*E]. */
    record Routing(int[] expert, float[] weight, float[] scores, int topK) {
    }

    /** What backward needs. */
    static final class Tape {
        Tensor x;                    // [N, hidden]
        Routing routing;
        ExpertGroups groups;
        DenseMlp.Tape[] expertTapes; // per expert, null when it had no tokens
        Tensor[] expertOut;          // per expert [count, hidden], unweighted
        DenseMlp.Tape sharedTape;
    }

    DeepseekV3Moe(Linear router, Tensor bias, DenseMlp[] experts, DenseMlp shared, DeepseekV3Config c) {
        this(router, bias == null ? null : bias.toFloatArray(), experts, shared, c.topK(), c.nGroup(), c.topkGroup(),
                c.normTopK(), c.routedScaling());
    }

    private DeepseekV3Moe(Linear router, float[] bias, DenseMlp[] experts, DenseMlp shared, int topK, int nGroup,
                          int topkGroup, boolean normTopK, float scaling) {
        this.router = router;
        this.bias = bias;
        this.experts = experts;
        this.shared = shared;
        this.topK = topK;
        this.nGroup = nGroup;
        this.topkGroup = topkGroup;
        this.normTopK = normTopK;
        this.scaling = scaling;
    }

    /** The same frozen weights with fresh, adapter-free linear layers and no chunker (the model's view hands its layers one). */
    DeepseekV3Moe view() {
        DenseMlp[] ex = new DenseMlp[experts.length];
        for (int e = 0; e < ex.length; e++) {
            ex[e] = experts[e].view();
        }
        return new DeepseekV3Moe(router.view(), bias, ex, shared == null ? null : shared.view(), topK, nGroup, topkGroup, normTopK,
                scaling);
    }

    /** Routes quantized experts through {@code c}'s chunks (null: chunking off); the model's MoE layers share one. */
    void useChunker(ExpertChunker c) {
        this.chunker = c;
    }

    private void eachActive(Backend b, ExpertGroups groups, java.util.function.BiConsumer<Integer, Weight[]> body) {
        if (chunker != null) {
            chunker.forEachActive(b, experts, groups, body);
            return;
        }
        for (int e = 0; e < experts.length; e++) {
            if (groups.count(e) > 0) {
                body.accept(e, null);
            }
        }
    }

    Routing route(Backend b, Tensor x) {
        int n = x.size(0);
        int ne = experts.length;
        Tensor logits = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, ne); // [N, E]
        router.forward(b, x, logits);
        float[] s = b.allocator().toHost(logits).toFloatArray(); // device->host: the routing decision
        for (int i = 0; i < s.length; i++) {
            s[i] = (float) (1.0 / (1.0 + Math.exp(-s[i])));
        }
        float[] bs = bias == null ? new float[ne] : bias;
        int per = ne / nGroup;
        int[] expert = new int[n * topK];
        float[] weight = new float[n * topK];
        float[] choice = new float[ne];
        float[] groupScore = new float[nGroup];
        boolean[] keep = new boolean[nGroup];
        for (int t = 0; t < n; t++) {
            for (int e = 0; e < ne; e++) {
                choice[e] = s[t * ne + e] + bs[e];
            }
            for (int g = 0; g < nGroup; g++) {             // sum of the group's two best biased scores
                float m1 = Float.NEGATIVE_INFINITY;
                float m2 = Float.NEGATIVE_INFINITY;
                for (int e = g * per; e < (g + 1) * per; e++) {
                    if (choice[e] > m1) {
                        m2 = m1;
                        m1 = choice[e];
                    } else if (choice[e] > m2) {
                        m2 = choice[e];
                    }
                }
                groupScore[g] = m1 + m2;
                keep[g] = false;
            }
            for (int j = 0; j < topkGroup; j++) {
                int best = -1;
                for (int g = 0; g < nGroup; g++) {
                    if (!keep[g] && (best < 0 || groupScore[g] > groupScore[best])) {
                        best = g;
                    }
                }
                keep[best] = true;
            }
            for (int e = 0; e < ne; e++) {
                if (!keep[e / per]) {
                    choice[e] = 0f;
                }
            }
            float sum = 0;
            for (int j = 0; j < topK; j++) {
                int best = -1;
                for (int e = 0; e < ne; e++) {
                    if (!Float.isNaN(choice[e]) && (best < 0 || choice[e] > choice[best])) {
                        best = e;
                    }
                }
                choice[best] = Float.NaN;                   // taken
                expert[t * topK + j] = best;
                weight[t * topK + j] = s[t * ne + best];
                sum += s[t * ne + best];
            }
            float denom = normTopK ? sum + 1e-20f : 1f;
            for (int j = 0; j < topK; j++) {
                weight[t * topK + j] = weight[t * topK + j] / denom * scaling;
            }
        }
        return new Routing(expert, weight, s, topK);
    }

    /** x [N, hidden] -> out [N, hidden]. */
    void forward(Backend b, Tensor x, Tensor out, Tape tape) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        int h = x.size(1);
        Routing r = route(b, x);
        ExpertGroups groups = ExpertGroups.of(r.expert(), r.weight(), topK, experts.length);
        if (shared != null) {
            DenseMlp.Tape st = tape == null ? null : new DenseMlp.Tape();
            shared.forward(b, x, out, st);
            if (tape != null) {
                tape.sharedTape = st;
            }
        } else {
            a.zero(out);
        }
        Tensor routed = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden] zero-filled
        if (tape != null) {
            tape.x = x;
            tape.routing = r;
            tape.groups = groups;
            tape.expertTapes = new DenseMlp.Tape[experts.length];
            tape.expertOut = new Tensor[experts.length];
        }
        eachActive(b, groups, (e, dense) -> {
            int cnt = groups.count(e);
            Tensor rows = a.upload(MemoryCategory.ACTIVATIONS, groups.tokens(e));  // i32 [cnt]
            Tensor xe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h); // [cnt, hidden]
            Tensor ye = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h); // [cnt, hidden]
            b.gatherRows(x, rows, xe);
            DenseMlp.Tape et = tape == null ? null : new DenseMlp.Tape();
            experts[e].forward(b, xe, ye, et, dense);
            b.scatterAddRows(ye, rows, a.upload(MemoryCategory.ACTIVATIONS, groups.weights(e)), routed);
            if (tape != null) {
                tape.expertTapes[e] = et;
                tape.expertOut[e] = ye;
            }
        });
        b.add(routed, out, out);
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten): shared experts, routed experts, routing weights. */
    void backward(Backend b, Tape tape, Tensor dout, Tensor dx) {
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        int h = dout.size(1);
        int ne = experts.length;
        Routing r = tape.routing;
        ExpertGroups groups = tape.groups;
        if (shared != null) {
            shared.backward(b, tape.sharedTape, dout, dx);
        } else {
            a.zero(dx);
        }
        float[] dWeight = new float[n * topK];  // d loss / d (final routing weight), token-major
        float[] d = a.toHost(dout).toFloatArray(); // device->host: for the routing-weight gradient
        eachActive(b, groups, (ex, dense) -> {
            int cnt = groups.count(ex);
            float[] dye = RoutedOutputGrad.of(groups, ex, d, a.toHost(tape.expertOut[ex]).toFloatArray(), h, dWeight);
            Tensor dxe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h); // [cnt, hidden]
            experts[ex].backward(b, tape.expertTapes[ex], a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dye, cnt, h)), dxe, dense);
            b.scatterAddRows(dxe, a.upload(MemoryCategory.ACTIVATIONS, groups.tokens(ex)), null, dx);
        });
        // weights w_j = scaling · s_j / (Σ s + 1e-20) -> scores s = sigmoid(logits) -> router logits
        float[] dLogits = new float[n * ne];
        for (int t = 0; t < n; t++) {
            float sum = 0;
            float dot = 0;
            for (int j = 0; j < topK; j++) {
                int e = r.expert()[t * topK + j];
                sum += r.scores()[t * ne + e];
            }
            float denom = normTopK ? sum + 1e-20f : 1f;
            for (int j = 0; j < topK; j++) {
                int e = r.expert()[t * topK + j];
                dot += dWeight[t * topK + j] * scaling * r.scores()[t * ne + e];
            }
            for (int j = 0; j < topK; j++) {
                int e = r.expert()[t * topK + j];
                float g = dWeight[t * topK + j] * scaling / denom;
                float ds = normTopK ? g - dot / (denom * denom) : g;
                float sc = r.scores()[t * ne + e];
                dLogits[t * ne + e] += ds * sc * (1 - sc);
            }
        }
        Tensor dxr = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        router.backward(b, tape.x, a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dLogits, n, ne)), dxr);
        b.add(dx, dxr, dx);
    }
}
