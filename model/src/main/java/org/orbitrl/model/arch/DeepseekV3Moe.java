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
 * ({@code norm_topk_prob}, +1e-20) and multiplied by {@code routed_scaling_factor}
 * ({@link Backend#moeSigmoidTopk}). The shared experts (one fused SwiGLU MLP) see every token. The
 * router is frozen; the gradient flows through the routing weights into the input, as in transformers.
 *
 * <p>By default the routed experts run grouped in backend memory ({@link GroupedMoe}: the routing, the
 * grouped products and their backward on the device, the per-expert counts the one host read; a decode
 * batch's pairs through the backend's per-pair products). They run per expert (the routing decision copied
 * to the host, each active expert's rows gathered, multiplied and scattered back) when {@link #setGrouped}
 * turns that off or an expert adapter transforms the base input (OFT).
 *
 * <p>Under expert parallelism ({@link #expertParallel}) this rank holds a contiguous block of the routed experts (the
 * others null); the shared experts run here on every token and the routed ones through {@link ExpertDispatch}, their
 * sums taken in one GPU's order.
 */
final class DeepseekV3Moe implements ExpertParallelBlock {
    final Linear router;     // [experts, hidden]
    final Tensor bias;       // [experts] e_score_correction_bias, or null
    final DenseMlp[] experts;
    final DenseMlp shared;   // null when there are no shared experts
    private final ExpertRouter.SigmoidGroups routing;
    private final GroupedMoe grouped;   // null when an expert has a bias
    private boolean useGrouped = true;
    private ExpertChunker chunker;
    private final GroupedExperts owned;   // under expert parallelism, the block held here grouped (else null)
    private final int ownedFirst;
    private org.orbitrl.kernels.comm.Communicator ep;   // null: every expert here

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
        GroupedMoe.Tape grouped;     // non-null when the grouped path ran
        ExpertDispatch.Tape dispatch; // non-null under expert parallelism

        /** Releases what the block allocated for backward (not x, the caller's input). */
        void release(TensorAllocator a) {
            if (grouped != null) {
                grouped.release(a);
            }
            if (sharedTape != null) {
                sharedTape.release(a);
            }
            if (dispatch != null) {
                dispatch.release(a);
            }
            DenseMlp.releaseExperts(a, expertTapes, expertOut);
            grouped = null;
            sharedTape = null;
            dispatch = null;
            expertTapes = null;
            expertOut = null;
        }
    }

    DeepseekV3Moe(Linear router, Tensor bias, DenseMlp[] experts, DenseMlp shared, DeepseekV3Config c) {
        this(router, bias, experts, shared, new ExpertRouter.SigmoidGroups(router, bias, c.topK(), c.nGroup(), c.topkGroup(),
                c.normTopK(), c.routedScaling()));
    }

    /** The block of {@code routing}'s router ({@code router} its linear layer); the loader's constructor above, or a bench's. */
    DeepseekV3Moe(Linear router, Tensor bias, DenseMlp[] experts, DenseMlp shared, ExpertRouter.SigmoidGroups routing) {
        this.router = router;
        this.bias = bias;
        this.experts = experts;
        this.shared = shared;
        this.routing = routing;
        this.grouped = GroupedMoe.of(routing, experts);
        this.owned = ExpertParallelBlock.ownedBlock(experts);
        this.ownedFirst = ExpertParallelBlock.firstHeld(experts);
    }

    /** Routes over {@code ep}'s ranks, each holding its block of the experts (null: all experts here). */
    void expertParallel(org.orbitrl.kernels.comm.Communicator ep) {
        this.ep = ep;
    }

    /** Whether the routed experts are split over an expert-parallel group ({@link #expertParallel(org.orbitrl.kernels.comm.Communicator)}). */
    boolean expertParallel() {
        return ep != null;
    }

    @Override
    public DenseMlp[] experts() {
        return experts;
    }

    @Override
    public ExpertRouter router() {
        return routing;
    }

    @Override
    public GroupedExperts owned(Backend b) {
        return useGrouped && owned != null && owned.supports(b) ? owned : null;
    }

    @Override
    public int ownedFirst() {
        return ownedFirst;
    }

    @Override
    public int chunkSize() {
        return chunk();
    }

    /** The same frozen weights with fresh, adapter-free linear layers and no chunker (the model's view hands its layers one). */
    DeepseekV3Moe view() {
        DenseMlp[] ex = new DenseMlp[experts.length];
        for (int e = 0; e < ex.length; e++) {
            ex[e] = experts[e] == null ? null : experts[e].view();
        }
        Linear r = router.view();
        DeepseekV3Moe m = new DeepseekV3Moe(r, bias, ex, shared == null ? null : shared.view(), new ExpertRouter.SigmoidGroups(r,
                bias, routing.topK(), routing.nGroup(), routing.topkGroup(), routing.normTopK(), routing.scaling()));
        m.useGrouped = useGrouped;
        m.ep = ep;
        return m;
    }

    /** Runs the routed experts grouped in backend memory when it can (true, the default), or per expert with host routing. */
    void setGrouped(boolean on) {
        this.useGrouped = on;
    }

    /** Routes quantized experts through {@code c}'s chunks (null: chunking off); the model's MoE layers share one. */
    void useChunker(ExpertChunker c) {
        this.chunker = c;
    }

    private int chunk() {
        return chunker == null ? 0 : chunker.chunk();
    }

    private boolean groupedHere(Backend b) {
        return useGrouped && grouped != null && grouped.supports(b);
    }

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

    /** The routing decision for x [N, hidden], taken on the backend and copied to the host (the per-expert path's). */
    Routing route(Backend b, Tensor x) {
        TensorAllocator a = b.allocator();
        ExpertRouter.Routed r = routing.route(b, x);
        long[] ids = a.toHost(r.ids()).toLongArray();
        int[] expert = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            expert[i] = (int) ids[i];
        }
        Routing out = new Routing(expert, a.toHost(r.weights()).toFloatArray(), a.toHost(r.saved()[0]).toFloatArray(), routing.topK());
        r.release(a);
        return out;
    }

    /**
     * x [N, hidden] -> out [N, hidden]. {@code training}: a forward of a training step (with or without its tape: a
     * recomputed layer's must equal its first); false for inference and decode, whose few tokens may take the backend's
     * per-pair products.
     */
    void forward(Backend b, Tensor x, Tensor out, Tape tape, boolean training) {
        TensorAllocator a = b.allocator();
        if (ep != null) {
            Tensor base = null;   // [N, hidden] the shared experts' output, where each token's sum starts
            if (shared != null) {
                base = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, x.shape());
                DenseMlp.Tape st = tape == null ? null : new DenseMlp.Tape();
                shared.forward(b, x, base, st);
                if (tape != null) {
                    tape.sharedTape = st;
                }
            }
            ExpertDispatch.Tape dt = tape == null ? null : new ExpertDispatch.Tape();
            ExpertDispatch.forward(this, b, ep, x, base, out, dt, training);
            if (base != null) {
                a.release(base);
            }
            if (tape != null) {
                tape.x = x;
                tape.dispatch = dt;
            }
            return;
        }
        if (groupedHere(b)) {
            if (shared != null) {
                DenseMlp.Tape st = tape == null ? null : new DenseMlp.Tape();
                shared.forward(b, x, out, st);
                if (tape != null) {
                    tape.sharedTape = st;
                }
            }
            GroupedMoe.Tape gt = tape == null ? null : new GroupedMoe.Tape();
            grouped.forward(b, x, out, gt, chunk(), training || tape != null, shared != null);
            if (tape != null) {
                tape.grouped = gt;
            }
            return;
        }
        int n = x.size(0);
        int h = x.size(1);
        Routing r = route(b, x);
        ExpertGroups groups = ExpertGroups.of(r.expert(), r.weight(), r.topK(), experts.length);
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
            Tensor we = a.upload(MemoryCategory.ACTIVATIONS, groups.weights(e));       // [cnt]
            b.scatterAddRows(ye, rows, we, routed);
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
        b.add(routed, out, out);
        a.release(routed);
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten): shared experts, routed experts, routing weights. */
    void backward(Backend b, Tape tape, Tensor dout, Tensor dx) {
        TensorAllocator a = b.allocator();
        if (tape.dispatch != null) {
            Tensor dBase = null;   // [N, hidden] the shared experts' input gradient
            if (shared != null) {
                dBase = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, dout.shape());
                shared.backward(b, tape.sharedTape, dout, dBase);
            }
            ExpertDispatch.backward(this, b, ep, tape.dispatch, dout, dBase, dx);
            tape.dispatch = null;
            if (dBase != null) {
                a.release(dBase);
            }
            return;
        }
        if (shared != null) {
            shared.backward(b, tape.sharedTape, dout, dx);
        } else if (tape.grouped == null) {
            a.zero(dx);
        }
        if (tape.grouped != null) {
            grouped.backward(b, tape.grouped, dout, dx, chunk(), shared != null);
            return;
        }
        int n = dout.size(0);
        int h = dout.size(1);
        int k = routing.topK();
        Routing r = tape.routing;
        ExpertGroups groups = tape.groups;
        float[] dWeight = new float[n * k];  // d loss / d (final routing weight), token-major
        float[] d = a.toHost(dout).toFloatArray(); // device->host: for the routing-weight gradient
        // the routed experts' input gradient summed on its own, then added to the shared experts' (the grouped order)
        Tensor routedDx = shared != null ? a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h) : dx;   // [N, hidden]
        eachActive(b, groups, (ex, dense) -> {
            int cnt = groups.count(ex);
            float[] dye = RoutedOutputGrad.of(groups, ex, d, a.toHost(tape.expertOut[ex]).toFloatArray(), h, dWeight);
            Tensor dxe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h); // [cnt, hidden]
            Tensor dy = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dye, cnt, h));  // [cnt, hidden]
            experts[ex].backward(b, tape.expertTapes[ex], dy, dxe, dense);
            Tensor rows = a.upload(MemoryCategory.ACTIVATIONS, groups.tokens(ex));     // i32 [cnt]
            b.scatterAddRows(dxe, rows, null, routedDx);
            for (Tensor t : new Tensor[]{dy, rows, dxe}) {
                a.release(t);
            }
        });
        if (routedDx != dx) {
            b.add(dx, routedDx, dx);
            a.release(routedDx);
        }
        routerBackward(b, tape.x, r, dWeight, dx);
    }

    /** Accumulates into dx [N, hidden] the gradient through the routing weights of x [N, hidden] (host-side choice). */
    void routerBackward(Backend b, Tensor x, Routing r, float[] dWeight, Tensor dx) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        int h = x.size(1);
        int k = routing.topK();
        // weights w_j = scaling · s_j / (Σ s + 1e-20) -> scores s = sigmoid(logits) -> router logits
        int ne = experts.length;
        Tensor scores = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(r.scores(), n, ne));     // [N, E]
        Tensor ids = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(r.expert(), n, k));      // i32 [N, k]
        Tensor dw = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dWeight, n, k));              // [N, k]
        Tensor dLogits = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, ne);               // [N, E]
        b.moeSigmoidRouterBackward(scores, ids, dw, routing.normTopK(), routing.scaling(), dLogits);
        Tensor dxr = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        router.backward(b, x, dLogits, dxr);
        b.add(dx, dxr, dx);
        for (Tensor t : new Tensor[]{scores, ids, dw, dLogits, dxr}) {
            a.release(t);
        }
    }
}
