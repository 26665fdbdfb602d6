package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

/**
 * Qwen3-MoE sparse block: a linear router, softmax over all experts, top-k, optional
 * renormalisation of the k weights, and the weighted sum of the chosen SwiGLU experts.
 * Tokens are grouped by expert so each active expert runs one batched matmul over its tokens.
 * The router is frozen, but the gradient flows through the routing weights into the input.
 *
 * <p>By default the block runs grouped in backend memory ({@link GroupedMoe}); it runs per expert,
 * with the routing decision on the host, when {@link #setGrouped} turns that off, when this rank
 * lacks some experts, or when an expert adapter transforms the base input.
 */
final class SparseMoe implements ExpertParallelBlock {
    final Linear router;     // [experts, hidden]
    final DenseMlp[] experts;        // [E], null where another expert-parallel rank holds the expert
    private final int topK;
    private final boolean normTopK;
    private ExpertChunker chunker;   // null: experts run on their own weights (fused decode for quantized)
    private final GroupedMoe grouped; // null when some expert is not held here
    private final ExpertRouter.Softmax softmax;   // the router as the grouped form and expert parallelism route
    private final GroupedExperts owned; // under expert parallelism, the block of experts held here (else null)
    private final int ownedFirst;       // the first of them
    private boolean useGrouped = true;

    /** The routing decision for N tokens, token-major [N*k], plus the full probabilities [N*E]. */
    record Routing(int[] expert, float[] weight, float[] chosenProb, float[] probs, int topK) {
    }

    /** What backward needs. */
    static final class Tape {
        Tensor x;                 // [N, hidden]
        Routing routing;
        ExpertGroups groups;
        DenseMlp.Tape[] expertTapes; // per expert, null when it had no tokens
        Tensor[] expertOut;          // per expert [count, hidden], unweighted
        GroupedMoe.Tape grouped;     // non-null when the grouped path ran

        /** Releases what the block allocated for backward (not x, the caller's input). */
        void release(TensorAllocator a) {
            if (grouped != null) {
                grouped.release(a);
            }
            DenseMlp.releaseExperts(a, expertTapes, expertOut);
            grouped = null;
            expertTapes = null;
            expertOut = null;
        }
    }

    SparseMoe(Linear router, DenseMlp[] experts, int topK, boolean normTopK) {
        this.router = router;
        this.experts = experts;
        this.topK = topK;
        this.normTopK = normTopK;
        this.softmax = new ExpertRouter.Softmax(router, topK, normTopK);
        this.grouped = GroupedMoe.of(softmax, experts);
        this.owned = ExpertParallelBlock.ownedBlock(experts);
        this.ownedFirst = ExpertParallelBlock.firstHeld(experts);
    }

    @Override
    public DenseMlp[] experts() {
        return experts;
    }

    @Override
    public ExpertRouter router() {
        return softmax;
    }

    /**
     * Under expert parallelism, the experts held here grouped in backend memory (a contiguous block; ids relative to
     * {@link #ownedFirst}), or null: the grouped path is off, the block has gaps, or an expert adapter transforms the
     * base input. The owner side of {@link ExpertDispatch} then runs them one at a time.
     */
    @Override
    public GroupedExperts owned(Backend b) {
        return useGrouped && owned != null && owned.supports(b) ? owned : null;
    }

    @Override
    public int ownedFirst() {
        return ownedFirst;
    }

    /** The active-expert chunk of quantized experts (0: off). */
    @Override
    public int chunkSize() {
        return chunk();
    }

    /** The same frozen weights with fresh, adapter-free linear layers and no chunker (the model's view hands its layers one). */
    SparseMoe view() {
        DenseMlp[] ex = new DenseMlp[experts.length];
        for (int e = 0; e < ex.length; e++) {
            ex[e] = experts[e] == null ? null : experts[e].view();
        }
        SparseMoe m = new SparseMoe(router.view(), ex, topK, normTopK);
        m.useGrouped = useGrouped;
        return m;
    }

    int topK() {
        return topK;
    }

    boolean normTopK() {
        return normTopK;
    }

    /** Runs the block grouped in backend memory when it can (the default), or per expert with host routing. */
    void setGrouped(boolean on) {
        this.useGrouped = on;
    }

    private int chunk() {
        return chunker == null ? 0 : chunker.chunk();
    }

    /** Routes quantized experts through C-expert dequantization chunks (0 turns chunking off). */
    void setExpertChunk(int c) {
        useChunker(c <= 0 ? null : new ExpertChunker(c));
    }

    /** Routes quantized experts through {@code c}'s chunks (null: chunking off); the model's MoE layers share one. */
    void useChunker(ExpertChunker c) {
        this.chunker = c;
    }

    /** Calls {@code body(expert, dense weights or null)} for every expert with tokens in {@code groups}. */
    @Override
    public void eachActive(Backend b, ExpertGroups groups, java.util.function.BiConsumer<Integer, Weight[]> body) {
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

    Routing routeOnHost(Backend b, Tensor x) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        int e = experts.length;
        Tensor logits = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, e); // [N, E]
        router.forward(b, x, logits);
        b.softmax(logits);
        Tensor vals = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, topK);  // [N, k]
        Tensor idx = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I32, n, topK);   // [N, k]
        b.topk(logits, topK, vals, idx);
        // the routing decision is taken on the host: [N, k] values and ids, and the [N, E] probabilities for backward
        float[] chosen = a.toHost(vals).toFloatArray();
        float[] w = chosen.clone();
        long[] ids = a.toHost(idx).toLongArray();
        int[] expert = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            expert[i] = (int) ids[i];
        }
        if (normTopK) {
            for (int t = 0; t < n; t++) {
                float sum = 0;
                for (int j = 0; j < topK; j++) {
                    sum += w[t * topK + j];
                }
                for (int j = 0; j < topK; j++) {
                    w[t * topK + j] /= sum;
                }
            }
        }
        float[] probs = a.toHost(logits).toFloatArray();
        a.release(logits);
        a.release(vals);
        a.release(idx);
        return new Routing(expert, w, chosen, probs, topK);
    }

    /** x [N, hidden] -> out [N, hidden], as a training forward computes it (a recomputed layer's forward too). */
    void forward(Backend b, Tensor x, Tensor out, Tape tape) {
        forward(b, x, out, tape, true);
    }

    /**
     * Where {@link #forwardAdd} of these rows takes the per-pair path (a decode step): from the residual before the block's
     * norm, {@code out = x + delta}, {@code normed} its norm ({@link Backend#addRmsNorm}), then out += the block of normed,
     * the add, the norm and the routing in one backend call where it fuses them ({@link GroupedMoe#forwardPairsAfterAdd}),
     * and true. False, with nothing done, elsewhere (the caller adds, norms and calls {@link #forwardAdd}, releasing delta
     * before the block's own buffers are made).
     */
    boolean forwardPairsAfterAdd(Backend b, Tensor x, Tensor delta, Tensor out, Tensor normWeight, float eps, Tensor normed) {
        // the pairs' bound first: a prefill, which forwardAdd then takes, asks supports (adapter probes) no more than before
        if (useGrouped && grouped != null && grouped.takesPairs(b, x, null, false) && grouped.supports(b)) {
            grouped.forwardPairsAfterAdd(b, x, delta, out, normWeight, eps, normed);
            return true;
        }
        return false;
    }

    /**
     * out [N, hidden] += the block's output for x, outside training (no tape): the decode form's pairs weighted straight
     * into out where it applies, else the output and an add. The bits of a {@link #forward} and {@link Backend#add}.
     */
    void forwardAdd(Backend b, Tensor x, Tensor out) {
        if (useGrouped && grouped != null && grouped.supports(b) && grouped.takesPairs(b, x, null, false)) {
            grouped.forwardPairs(b, x, out, true);
            return;
        }
        TensorAllocator a = b.allocator();
        Tensor delta = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, out.shape());   // [N, hidden]
        forward(b, x, delta, null, false);
        b.add(out, delta, out);
        a.release(delta);
    }

    /**
     * The block's frozen weights for a backend's whole-layer decode form: the grouped experts and the router when neither
     * has an enabled adapter and the grouped path is on; null otherwise.
     */
    GroupedMoe decodeExperts() {
        if (!useGrouped || grouped == null || router.bias() != null || enabled(router.adapter()) || !grouped.adapterFree()) {
            return null;
        }
        return grouped;
    }

    private static boolean enabled(Linear.AdapterHook h) {
        return h != null && h.enabled();
    }

    /**
     * x [N, hidden] -> out [N, hidden]. {@code training}: a forward of a training step, with or without a tape (under
     * recompute a layer runs without one first, then with one for backward, and both must compute the same); false for
     * inference and decode, which may take the backend's per-pair experts ({@link GroupedMoe}).
     */
    void forward(Backend b, Tensor x, Tensor out, Tape tape, boolean training) {
        if (useGrouped && grouped != null && grouped.supports(b)) {
            GroupedMoe.Tape gt = tape == null ? null : new GroupedMoe.Tape();
            grouped.forward(b, x, out, gt, chunk(), training || tape != null, false);
            if (tape != null) {
                tape.grouped = gt;
            }
            return;
        }
        Routing r = routeOnHost(b, x);
        TensorAllocator a = b.allocator();
        a.zero(out);
        ExpertGroups groups = ExpertGroups.of(r.expert(), r.weight(), r.topK(), experts.length);
        int h = x.size(1);
        if (tape != null) {
            tape.x = x;
            tape.routing = r;
            tape.groups = groups;
            tape.expertTapes = new DenseMlp.Tape[experts.length];
            tape.expertOut = new Tensor[experts.length];
        }
        eachActive(b, groups, (e, dense) -> {
            int cnt = groups.count(e);
            Tensor rows = a.upload(MemoryCategory.ACTIVATIONS, groups.tokens(e));         // i32 [cnt]
            Tensor xe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);        // [cnt, hidden]
            Tensor ye = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);        // [cnt, hidden]
            b.gatherRows(x, rows, xe);
            DenseMlp.Tape et = tape == null ? null : new DenseMlp.Tape();
            experts[e].forward(b, xe, ye, et, dense);
            Tensor we = a.upload(MemoryCategory.ACTIVATIONS, groups.weights(e));         // [cnt]
            b.scatterAddRows(ye, rows, we, out);
            a.release(rows);
            a.release(we);
            if (tape != null) {
                tape.expertTapes[e] = et;
                tape.expertOut[e] = ye;
            } else {
                a.release(xe);
                a.release(ye);
            }
        });
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten), through the experts and the routing weights. */
    void backward(Backend b, Tape tape, Tensor dout, Tensor dx) {
        if (tape.grouped != null) {
            grouped.backward(b, tape.grouped, dout, dx, chunk(), false);
            return;
        }
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        int h = dout.size(1);
        Routing r = tape.routing;
        ExpertGroups groups = tape.groups;
        a.zero(dx);
        float[] dWeight = new float[n * topK];   // d loss / d (normalised routing weight), token-major
        float[] d = a.toHost(dout).toFloatArray();
        eachActive(b, groups, (ex, dense) -> {
            int cnt = groups.count(ex);
            int[] rows = groups.tokenArray(ex);
            float[] w = groups.weightArray(ex);
            float[] ye = a.toHost(tape.expertOut[ex]).toFloatArray();
            float[] dye = new float[cnt * h];                   // [cnt, hidden] = w · dout[row]
            for (int i = 0; i < cnt; i++) {
                float dot = 0;
                for (int c = 0; c < h; c++) {
                    dye[i * h + c] = w[i] * d[rows[i] * h + c];
                    dot += d[rows[i] * h + c] * ye[i * h + c];
                }
                dWeight[groups.slot(ex, i)] = dot;
            }
            Tensor dxe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);     // [cnt, hidden]
            Tensor dy = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dye, cnt, h));    // [cnt, hidden]
            experts[ex].backward(b, tape.expertTapes[ex], dy, dxe, dense);
            a.release(dy);
            Tensor rowsDev = a.upload(MemoryCategory.ACTIVATIONS, groups.tokens(ex));     // i32 [cnt]
            b.scatterAddRows(dxe, rowsDev, null, dx);
            a.release(rowsDev);
            a.release(dxe);
        });
        routerBackward(b, tape.x, r, dWeight, dx);
    }

    /**
     * Accumulates into dx [N, hidden] the gradient that flows through the routing weights: from
     * d loss / d (normalised weight) per token-major slot [N*k], through the top-k renormalisation and
     * the softmax, into the router logits and through the frozen router into its input x [N, hidden].
     */
    void routerBackward(Backend b, Tensor xIn, Routing r, float[] dWeight, Tensor dx) {
        TensorAllocator a = b.allocator();
        int n = xIn.size(0);
        int h = xIn.size(1);
        int e = experts.length;
        // routing weights -> softmax probabilities -> router logits
        float[] dLogits = new float[n * e];
        float[] dProb = new float[e];
        for (int t = 0; t < n; t++) {
            java.util.Arrays.fill(dProb, 0);
            float sumChosen = 0;
            float dotWd = 0;
            for (int j = 0; j < topK; j++) {
                sumChosen += r.chosenProb()[t * topK + j];
                dotWd += r.weight()[t * topK + j] * dWeight[t * topK + j];
            }
            for (int j = 0; j < topK; j++) {
                int s = t * topK + j;
                float dp = normTopK ? (dWeight[s] - dotWd) / sumChosen : dWeight[s];
                dProb[r.expert()[s]] += dp;
            }
            float pd = 0;
            for (int x = 0; x < e; x++) {
                pd += r.probs()[t * e + x] * dProb[x];
            }
            for (int x = 0; x < e; x++) {
                dLogits[t * e + x] = r.probs()[t * e + x] * (dProb[x] - pd);
            }
        }
        Tensor dxr = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        Tensor dl = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dLogits, n, e));    // [N, E]
        router.backward(b, xIn, dl, dxr);
        a.release(dl);
        b.add(dx, dxr, dx);
        a.release(dxr);
    }
}
