package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

/**
 * A routed MoE block with every step in backend memory, grouped by expert: the router's choice and weights
 * ({@link ExpertRouter}: Qwen3-MoE's softmax top-k, DeepSeek-V3's and Kimi-K2's group-limited sigmoid top-k), the pairs
 * grouped by expert ({@link Backend#moeGroup}; the per-expert counts are the one host read of a training call, and of an
 * inference call only where the backend does not take its products from the device offsets: {@link GroupOffsets}), the
 * gate, up and down products over each expert's contiguous rows ({@link Backend#moeExpertMatmul}, quantized experts dequantized C at a
 * time into one reused buffer), each expert's adapters on its rows, and the weighted combination. Backward mirrors it:
 * the routing-weight gradient and the rows' output gradients on the device, the activation gradient through the frozen
 * experts (never a base weight gradient), the adapters' gradients per expert, and the router-logit gradient
 * ({@link ExpertRouter#logitGrad}) through the frozen router into the input.
 *
 * <p>Adapters: an expert projection's LoRA runs over all experts' rows at once ({@link ExpertLora});
 * any other hook that keeps the base input runs on its expert's rows; {@link #supports} is false when an enabled hook
 * transforms the base input (OFT), and the block then runs per expert instead.
 */
final class GroupedMoe {
    private final ExpertRouter router;
    private final DenseMlp[] experts;
    private final ExpertWeights gate;   // E x [I, hidden]
    private final ExpertWeights up;     // E x [I, hidden]
    private final ExpertWeights down;   // E x [hidden, I]

    /** What backward needs; grouped tensors are in expert order, [P = tokens·k, ...]. */
    static final class Tape {
        Tensor x;         // [N, hidden]
        ExpertRouter.Routed routed;   // weights and ids [N, k], and what the router's backward reads
        Tensor order;     // i32 [P]
        Tensor position;  // i32 [P]
        int[] offsets;    // [E + 1], host
        Tensor xs;        // [P, hidden] the input rows of the pairs
        Tensor g;         // [P, I]
        Tensor u;         // [P, I]
        Tensor act;       // [P, I] silu(g)·u
        Tensor ys;        // [P, hidden] unweighted expert outputs

        /** Releases what the block allocated for backward (not x, the caller's input). */
        void release(TensorAllocator a) {
            if (routed != null) {
                routed.release(a);
            }
            for (Tensor t : new Tensor[]{order, position, xs, g, u, act, ys}) {
                if (t != null) {
                    a.release(t);
                }
            }
            routed = null;
            order = position = xs = g = u = act = ys = null;
        }
    }

    private GroupedMoe(ExpertRouter router, DenseMlp[] experts, ExpertWeights gate, ExpertWeights up, ExpertWeights down) {
        this.router = router;
        this.experts = experts;
        this.gate = gate;
        this.up = up;
        this.down = down;
    }

    /** The experts' weights as per-projection sets (shared, not copied); null when a rank lacks an expert or one has a bias. */
    static GroupedMoe of(ExpertRouter router, DenseMlp[] experts) {
        for (DenseMlp e : experts) {
            if (e == null || e.gate.bias() != null || e.up.bias() != null || e.down.bias() != null) {
                return null;
            }
        }
        return new GroupedMoe(router, experts, weights(experts, 0), weights(experts, 1), weights(experts, 2));
    }

    private static ExpertWeights weights(DenseMlp[] experts, int which) {
        Tensor[] dense = new Tensor[experts.length];
        QuantizedTensor[] quantized = new QuantizedTensor[experts.length];
        Linear first = linear(experts[0], which);
        for (int e = 0; e < experts.length; e++) {
            Weight w = linear(experts[e], which).weight();
            if (w instanceof Weight.Quantized q) {
                quantized[e] = q.w();
            } else if (w instanceof Weight.Dense d) {
                dense[e] = d.w();
            }
        }
        return new ExpertWeights(first.out(), first.in(), dense, quantized);
    }

    private static Linear[] linears(DenseMlp[] experts, int which) {
        Linear[] out = new Linear[experts.length];
        for (int e = 0; e < out.length; e++) {
            out[e] = linear(experts[e], which);
        }
        return out;
    }

    private static Linear linear(DenseMlp m, int which) {
        return which == 0 ? m.gate : which == 1 ? m.up : m.down;
    }

    /** True unless an enabled adapter on an expert projection transforms the base input (probed on one row). */
    boolean supports(Backend b) {
        TensorAllocator a = b.allocator();
        Tensor probeIn = null;    // [1, hidden]
        Tensor probeMid = null;   // [1, I]
        for (DenseMlp m : experts) {
            for (int which = 0; which < 3; which++) {
                Linear l = linear(m, which);
                Linear.AdapterHook h = l.adapter();
                if (h == null || !h.enabled()) {
                    continue;
                }
                Tensor probe;
                if (which < 2) {
                    probe = probeIn = probeIn != null ? probeIn : a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1, l.in());
                } else {
                    probe = probeMid = probeMid != null ? probeMid : a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1, l.in());
                }
                Tensor in = h.baseInput(b, probe);
                if (in != probe) {
                    release(a, in, probeIn, probeMid);
                    return false;
                }
            }
        }
        release(a, probeIn, probeMid);
        return true;
    }

    private static void release(TensorAllocator a, Tensor... ts) {
        for (Tensor t : ts) {
            if (t != null) {
                a.release(t);
            }
        }
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
        int n = x.size(0);
        int h = x.size(1);
        int e = gate.experts();
        int k = router.topK();
        int inter = gate.rows();
        int p = n * k;
        ExpertRouter.Routed r = router.route(b, x);
        Tensor weights = r.weights();
        Tensor ids = r.ids();
        Tensor offsetsDev = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, e + 1); // [E + 1]
        Tensor order = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, p);          // [P]
        Tensor position = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, p);       // [P]
        b.moeGroup(ids, e, offsetsDev, order, position);
        // the per-expert counts: read on the host here for a training forward (its backward needs them); an inference
        // forward offers its products to the backend from the device first (GroupOffsets), reading them only if declined
        boolean routed = !training && tape == null;
        GroupOffsets offsets = routed ? GroupOffsets.ofDevice(a, offsetsDev) : GroupOffsets.ofHost(ints(a.toHost(offsetsDev)));
        if (!routed) {
            a.release(offsetsDev);
        }
        Tensor xs = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, h);      // [P, hidden]
        b.moeGather(x, order, k, null, xs);
        Tensor g = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);   // [P, I]
        Tensor u = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);   // [P, I]
        offsets.matmulShared(b, xs, new ExpertWeights[]{gate, up}, new Tensor[]{g, u}, chunk);
        ExpertLora gateLora = ExpertLora.of(linears(experts, 0));
        ExpertLora upLora = ExpertLora.of(linears(experts, 1));
        if (gateLora != null && upLora != null && ExpertLora.sameShape(gateLora, upLora)) {   // both A products of xs in one call
            ExpertLora.forward(b, offsets, xs, gateLora, g, upLora, u);
        } else {
            adaptersForward(b, experts, 0, offsets, xs, g);
            adaptersForward(b, experts, 1, offsets, xs, u);
        }
        Tensor act = tape == null ? g : a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter); // [P, I]
        b.swiglu(g, u, act);
        if (tape == null) {
            a.release(xs);
            a.release(u);
        }
        Tensor ys = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, h);      // [P, hidden]
        offsets.matmul(b, act, down, ys, chunk);
        adaptersForward(b, experts, 2, offsets, act, ys);
        b.moeCombineGrouped(ys, position, weights, out, accumulate);
        if (routed) {
            a.release(offsetsDev);
        }
        if (tape == null) {
            r.release(a);
            for (Tensor t : new Tensor[]{order, position, act, ys}) {
                a.release(t);
            }
        } else {
            tape.x = x;
            tape.routed = r;
            tape.order = order;
            tape.position = position;
            tape.offsets = offsets.host();
            tape.xs = xs;
            tape.g = g;
            tape.u = u;
            tape.act = act;
            tape.ys = ys;
        }
    }

    /** Whether a forward of x takes {@link #forwardPairs}: outside training, a few tokens, where the backend asks for it. */
    boolean takesPairs(Backend b, Tensor x, Tape tape, boolean training) {
        return !training && tape == null && (long) x.size(0) * router.topK() <= PAIRS_MAX && b.moePairs(gate) && b.moePairs(up)
                && b.moePairs(down) && pairAdapters(experts);
    }

    /**
     * The forward of a few tokens per (token, expert) pair, where the backend asks for it ({@link Backend#moePairs}):
     * the routing as above, then each pair's gate, up and down products through its expert and its LoRA, read
     * from the ids on the backend ({@link Backend#moeExpertMatmulPairs}; gate, up, their LoRA's B and the SwiGLU in
     * one call where the backend fuses them, {@link Backend#moeSwigluPairs}, and down with its LoRA's B,
     * {@link Backend#moeExpertMatmulPairsLora}), and the pairs weighted back into their
     * tokens ({@link Backend#moeCombinePairs}; down, its LoRA's B and that in one call where the backend fuses them,
     * {@link Backend#moeDownCombinePairs}). No host read, so a decode step of an MoE model can be captured.
     * For inference and decode batches ({@value #PAIRS_MAX} pairs at most), never in a training step (whose
     * recomputed forwards must equal its first), and a long prompt's prefill keeps the grouped products. With
     * {@code accumulate} the pairs are weighted into out as it is ({@link #takesPairs} must hold): the bits of the
     * output and an add, one launch fewer.
     */
    void forwardPairs(Backend b, Tensor x, Tensor out, boolean accumulate) {
        TensorAllocator a = b.allocator();
        int k = router.topK();
        int inter = gate.rows();
        int p = x.size(0) * k;
        ExpertRouter.Routed r = router.routeDecode(b, x);
        Tensor weights = r.weights();
        Tensor ids = r.ids();
        ExpertLora gateLora = ExpertLora.of(linears(experts, 0));
        ExpertLora upLora = ExpertLora.of(linears(experts, 1));
        Tensor gateA;                                                                // [P, r]
        Tensor upA;                                                                  // [P, r]
        if (gateLora != null && upLora != null) {   // both A products of x in one call
            Tensor[] both = ExpertLora.pairsA(b, x, k, ids, gateLora, upLora);
            gateA = both[0];
            upA = both[1];
        } else {
            gateA = gateLora == null ? null : gateLora.pairsA(b, x, k, ids);
            upA = upLora == null ? null : upLora.pairsA(b, x, k, ids);
        }
        Tensor g = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);     // [P, I]: act
        if (!b.moeSwigluPairs(x, k, gate, up, ids, gateA == null ? null : gateLora.pairTerm(gateA),
                upA == null ? null : upLora.pairTerm(upA), g)) {
            Tensor u = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter); // [P, I]
            b.moeExpertMatmulPairs(x, k, gate, ids, 1f, g, false);
            b.moeExpertMatmulPairs(x, k, up, ids, 1f, u, false);
            if (gateA != null) {
                gateLora.addPairsB(b, gateA, ids, g);
            }
            if (upA != null) {
                upLora.addPairsB(b, upA, ids, u);
            }
            b.swiglu(g, u, g);                                                       // act, in place
            a.release(u);
        }
        release(a, gateA, upA);
        ExpertLora downLora = ExpertLora.of(linears(experts, 2));
        Tensor downA = downLora == null ? null : downLora.pairsA(b, g, 1, ids);    // [P, r]
        if (b.moeDownCombinePairs(g, down, ids, downA == null ? null : downLora.pairTerm(downA), weights, out, accumulate)) {
            release(a, downA, g, weights, ids);
            return;
        }
        Tensor ys = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, x.size(1)); // [P, hidden]
        if (downA == null || !b.moeExpertMatmulPairsLora(g, 1, down, ids, downLora.pairTerm(downA), ys)) {
            b.moeExpertMatmulPairs(g, 1, down, ids, 1f, ys, false);
            if (downA != null) {
                downLora.addPairsB(b, downA, ids, ys);
            }
        }
        release(a, downA);
        a.release(g);
        b.moeCombinePairs(ys, weights, out, accumulate);
        a.release(ys);
        a.release(weights);
        a.release(ids);
    }

    /**
     * Pairs at most this many a call ({@code tokens · k}) take {@link #forwardPairs} where the backend asks for it: a
     * decode step of up to 256 sequences at top-8.
     */
    static final int PAIRS_MAX = 2048;

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

    /** Whether every enabled adapter on the experts is a LoRA the pair products can run: per projection, all experts' or none. */
    private static boolean pairAdapters(DenseMlp[] experts) {
        for (int which = 0; which < 3; which++) {
            if (ExpertLora.of(linears(experts, which)) != null) {
                continue;
            }
            for (DenseMlp m : experts) {
                Linear.AdapterHook h = linear(m, which).adapter();
                if (h != null && h.enabled()) {
                    return false;
                }
            }
        }
        return true;
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
        int inter = gate.rows();
        int p = n * k;
        Tensor dys = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, h);        // [P, hidden] = w · dout[token]
        b.moeGather(dout, t.order, k, t.routed.weights(), dys);
        Tensor dWeight = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, k);    // [N, k]
        b.moeWeightGrad(dout, t.ys, t.position, dWeight);
        Tensor dact = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);   // [P, I]
        b.moeExpertMatmulTransposed(dys, down, t.offsets, dact, chunk);
        adaptersBackward(b, experts, 2, t.offsets, t.act, dys, dact);
        a.release(dys);
        Tensor dg = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);     // [P, I]
        Tensor du = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);     // [P, I]
        b.swigluBackward(t.g, t.u, dact, dg, du);
        a.release(dact);
        Tensor dxs = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, h);        // [P, hidden]
        b.moeExpertMatmulTransposed(dg, gate, t.offsets, dxs, chunk);
        adaptersBackward(b, experts, 0, t.offsets, t.xs, dg, dxs);
        a.release(dg);
        b.moeExpertMatmulAccumulate(du, up, t.offsets, 1f, dxs, true, chunk);     // dxs += du · W_up
        adaptersBackward(b, experts, 1, t.offsets, t.xs, du, dxs);
        a.release(du);
        b.moeCombineGrouped(dxs, t.position, null, dx, accumulate);
        a.release(dxs);
        Tensor dLogits = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.experts()); // [N, E]
        router.logitGrad(b, t.routed, dWeight, dLogits);
        a.release(dWeight);
        Tensor dxr = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);        // [N, hidden]
        router.linear().backward(b, t.x, dLogits, dxr);
        a.release(dLogits);
        b.add(dx, dxr, dx);
        a.release(dxr);
    }

    /** Each active expert's enabled adapter adds its delta into y's rows of that expert, from x's rows. */
    private static void adaptersForward(Backend b, DenseMlp[] experts, int which, GroupOffsets groups, Tensor x, Tensor y) {
        ExpertLora lora = ExpertLora.of(linears(experts, which));
        if (lora != null) {
            lora.forward(b, groups, x, y);
            return;
        }
        int[] offsets = null;
        for (int e = 0; e < experts.length; e++) {
            Linear.AdapterHook hook = linear(experts[e], which).adapter();
            if (hook != null && hook.enabled() && offsets == null) {
                offsets = groups.host();
            }
            if (hook != null && hook.enabled() && offsets[e + 1] > offsets[e]) {
                hook.forward(b, x.slice(0, offsets[e], offsets[e + 1]), y.slice(0, offsets[e], offsets[e + 1]));
            }
        }
    }

    /** Each active expert's enabled adapter: its share of dx's rows, and its own parameter gradients. */
    private static void adaptersBackward(Backend b, DenseMlp[] experts, int which, int[] offsets, Tensor x, Tensor dy, Tensor dx) {
        ExpertLora lora = ExpertLora.of(linears(experts, which));
        if (lora != null) {
            lora.backward(b, offsets, x, dy, dx);
            return;
        }
        for (int e = 0; e < experts.length; e++) {
            Linear.AdapterHook hook = linear(experts[e], which).adapter();
            if (hook != null && hook.enabled() && offsets[e + 1] > offsets[e]) {
                long s = offsets[e];
                long end = offsets[e + 1];
                hook.backward(b, x.slice(0, s, end), dy.slice(0, s, end), dx.slice(0, s, end));
            }
        }
    }

    private static int[] ints(Tensor t) {
        long[] v = t.toLongArray();
        int[] out = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = (int) v[i];
        }
        return out;
    }
}
