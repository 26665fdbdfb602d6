package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;

/**
 * A routed MoE block with every step in backend memory, grouped by expert: the router's choice and weights
 * ({@link ExpertRouter}: Qwen3-MoE's softmax top-k, DeepSeek-V3's and Kimi-K2's group-limited sigmoid top-k), then the
 * routed experts over that choice ({@link GroupedExperts}: the pairs grouped by expert, the gate, up and down products
 * over each expert's contiguous rows, quantized experts dequantized C at a time into one reused buffer, each expert's
 * adapters on its rows, and the weighted combination). Backward mirrors it: the experts' backward (the routing-weight
 * gradient and the activation gradient through the frozen experts, never a base weight gradient; the adapters'
 * gradients per expert), and the router-logit gradient ({@link ExpertRouter#logitGrad}) through the frozen router into
 * the input. A decode step of a few tokens takes {@link #forwardPairs} where the backend asks for it.
 *
 * <p>{@link #supports} is false when an enabled hook on an expert projection transforms the base input (OFT), and the
 * block then runs per expert instead.
 */
final class GroupedMoe {
    private final ExpertRouter router;
    private final GroupedExperts grouped;
    private final DenseMlp[] experts;
    private final ExpertWeights gate;   // E x [I, hidden]
    private final ExpertWeights up;     // E x [I, hidden]
    private final ExpertWeights down;   // E x [hidden, I]

    /** What backward needs: the input, the choice, and the experts' tape. */
    static final class Tape {
        Tensor x;         // [N, hidden]
        ExpertRouter.Routed routed;   // weights and ids [N, k], and what the router's backward reads
        final GroupedExperts.Tape experts = new GroupedExperts.Tape();

        /** Releases what the block allocated for backward (not x, the caller's input). */
        void release(TensorAllocator a) {
            if (routed != null) {
                routed.release(a);
            }
            experts.release(a);
            routed = null;
        }
    }

    private GroupedMoe(ExpertRouter router, GroupedExperts grouped) {
        this.router = router;
        this.grouped = grouped;
        this.experts = grouped.experts();
        this.gate = grouped.gate();
        this.up = grouped.up();
        this.down = grouped.down();
    }

    /** The experts' weights as per-projection sets (shared, not copied); null when a rank lacks an expert or one has a bias. */
    static GroupedMoe of(ExpertRouter router, DenseMlp[] experts) {
        GroupedExperts g = GroupedExperts.of(experts, Float.POSITIVE_INFINITY);
        return g == null ? null : new GroupedMoe(router, g);
    }

    /** gpt-oss's fused experts ({@link GroupedExperts#fused}) behind {@code router}; null when {@code experts} is. */
    static GroupedMoe fused(ExpertRouter router, GroupedExperts experts) {
        return experts == null ? null : new GroupedMoe(router, experts);
    }

    private static Linear linear(DenseMlp m, int which) {
        return GroupedExperts.linear(m, which);
    }

    /** True unless an enabled adapter on an expert projection transforms the base input (probed on one row). */
    boolean supports(Backend b) {
        return grouped.supports(b);
    }

    private static void release(TensorAllocator a, Tensor... ts) {
        GroupedExperts.release(a, ts);
    }

    /**
     * x [N, hidden] -> out [N, hidden], overwritten unless {@code accumulate} (then added into it). {@code training}: a
     * forward of a training step (its recomputed forward must equal its first); false for inference and decode, where a few
     * tokens may take {@link #forwardPairs}.
     */
    void forward(Backend b, Tensor x, Tensor out, Tape tape, int chunk, boolean training, boolean accumulate) {
        if (takesPairs(b, x, tape, training)) {
            forwardPairs(b, x, out, accumulate);
            return;
        }
        TensorAllocator a = b.allocator();
        ExpertRouter.Routed r = router.route(b, x);
        grouped.forward(b, x, r.ids(), r.weights(), out, tape == null ? null : tape.experts, chunk, training || tape != null,
                accumulate);
        if (tape == null) {
            r.release(a);
        } else {
            tape.x = x;
            tape.routed = r;
        }
    }

    /** Whether a forward of x takes {@link #forwardPairs}: outside training, a few tokens, where the backend asks for it. */
    boolean takesPairs(Backend b, Tensor x, Tape tape, boolean training) {
        return !training && tape == null && grouped.takesPairs(b, (long) x.size(0) * router.topK());
    }

    /**
     * The forward of a few tokens per (token, expert) pair, where the backend asks for it ({@link Backend#moePairs}):
     * the routing as above in one call where the backend fuses it ({@link ExpertRouter#routeDecode}), then the experts
     * per pair ({@link GroupedExperts#forwardPairs}). No host read, so a decode step of an MoE model can be captured.
     * For inference and decode batches ({@value GroupedExperts#PAIRS_MAX} pairs at most), never in a training step
     * (whose recomputed forwards must equal its first), and a long prompt's prefill keeps the grouped products. With
     * {@code accumulate} the pairs are weighted into out as it is ({@link #takesPairs} must hold): the bits of the
     * output and an add, one launch fewer.
     */
    void forwardPairs(Backend b, Tensor x, Tensor out, boolean accumulate) {
        if (grouped.isFused()) {
            forwardPairsFused(b, x, out, accumulate);
            return;
        }
        ExpertRouter.Routed r = router.routeDecode(b, x);
        grouped.forwardPairs(b, x, r.ids(), r.weights(), out, accumulate);
        r.release(b.allocator());
    }

    /**
     * {@link #forwardPairs} with accumulate of the residual before the block's norm: {@code out = x + delta}, its norm
     * into {@code normed} (the experts' input), the routing of normed, then the experts per pair weighted into out; the
     * add, the norm and the routing in one backend call where it fuses them ({@link ExpertRouter#routeDecodeAfterAdd}).
     */
    void forwardPairsAfterAdd(Backend b, Tensor x, Tensor delta, Tensor out, Tensor normWeight, float eps, Tensor normed) {
        if (grouped.isFused()) {
            b.addRmsNorm(x, delta, out, normWeight, eps, normed);
            forwardPairsFused(b, normed, out, true);
            return;
        }
        ExpertRouter.Routed r = router.routeDecodeAfterAdd(b, x, delta, out, normWeight, eps, normed);
        grouped.forwardPairs(b, normed, r.ids(), r.weights(), out, true);
        r.release(b.allocator());
    }

    /**
     * gpt-oss's form of {@link #forwardPairs}: each pair's row through its expert's fused gate_up and its LoRA, gate_up's
     * bias by the pair's expert ({@link Backend#moeExpertBiasPairs}), the clamped SwiGLU, down with its LoRA and bias,
     * and the pairs weighted back into their tokens. Nothing read on the host.
     */
    private void forwardPairsFused(Backend b, Tensor x, Tensor out, boolean accumulate) {
        TensorAllocator a = b.allocator();
        GroupedExperts.Fused f = grouped.fusedForm();
        int k = router.topK();
        int p = x.size(0) * k;
        int inter = down.cols();
        ExpertRouter.Routed r = router.routeDecode(b, x);
        Tensor ids = r.ids();
        Tensor gu = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, 2L * inter);   // [P, 2I]
        b.moeExpertMatmulPairs(x, k, gate, ids, 1f, gu, false);
        ExpertLora guLora = ExpertLora.of(grouped.projections(0));
        if (guLora != null) {
            Tensor guA = guLora.pairsA(b, x, k, ids);                                   // [P, r]
            guLora.addPairsB(b, guA, ids, gu);
            a.release(guA);
        }
        b.moeExpertBiasPairs(gu, f.gateUpBias(), ids);
        Tensor act = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);       // [P, I]
        b.clampedSwiglu(gu, f.alpha(), f.limit(), act);
        a.release(gu);
        Tensor ys = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, x.size(1));   // [P, hidden]
        b.moeExpertMatmulPairs(act, 1, down, ids, 1f, ys, false);
        ExpertLora downLora = ExpertLora.of(grouped.projections(2));
        if (downLora != null) {
            Tensor downA = downLora.pairsA(b, act, 1, ids);                             // [P, r]
            downLora.addPairsB(b, downA, ids, ys);
            a.release(downA);
        }
        a.release(act);
        b.moeExpertBiasPairs(ys, f.downBias(), ids);
        b.moeCombinePairs(ys, r.weights(), out, accumulate);
        a.release(ys);
        a.release(r.weights());
        a.release(ids);
    }

    /** Whether no expert projection has an enabled adapter (a backend's whole-layer decode form takes the base alone). */
    boolean adapterFree() {
        for (DenseMlp m : experts) {
            for (int which = 0; which < 3; which++) {
                Linear.AdapterHook h = linear(m, which).adapter();
                if (h != null && h.enabled()) {
                    return false;
                }
            }
        }
        return true;
    }

    ExpertWeights gate() {
        return gate;
    }

    ExpertWeights up() {
        return up;
    }

    ExpertWeights down() {
        return down;
    }

    /**
     * dout [N, hidden] -> dx [N, hidden], overwritten unless {@code accumulate} (then added into it); the experts' adapters
     * accumulate their gradients.
     */
    void backward(Backend b, Tape t, Tensor dout, Tensor dx, int chunk, boolean accumulate) {
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        int h = dout.size(1);
        int k = router.topK();
        Tensor dWeight = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, k);    // [N, k]
        grouped.backward(b, t.experts, t.routed.weights(), dout, dx, dWeight, chunk, accumulate);
        Tensor dLogits = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.experts()); // [N, E]
        router.logitGrad(b, t.routed, dWeight, dLogits);
        a.release(dWeight);
        Tensor dxr = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);        // [N, hidden]
        router.linear().backward(b, t.x, dLogits, dxr);
        a.release(dLogits);
        b.add(dx, dxr, dx);
        a.release(dxr);
    }
}
