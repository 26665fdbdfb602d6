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
 * The routed experts of an MoE block over a choice already made (ids i32 [N, k] and weights f32 [N, k] in backend
 * memory), grouped by expert: the pairs grouped ({@link Backend#moeGroup}; the per-expert counts the one host read of a
 * training call, and of an inference call only where the backend does not take its products from the device offsets:
 * {@link GroupOffsets}), the gate, up and down products over each expert's contiguous rows ({@link
 * Backend#moeExpertMatmul}, quantized experts dequantized C at a time into one reused buffer), each expert's adapters on
 * its rows, the SwiGLU (with DeepSeek V4's limit where the block has one, {@link Backend#limitedSwiglu}), and the
 * weighted combination. Backward: the rows' output gradients and the routing weights' gradient, the activation gradient
 * through the frozen experts (never a base weight gradient), and the adapters' gradients per expert.
 *
 * <p>{@link GroupedMoe} routes with its own router and runs these; DeepSeek V4's block routes on the host (its hash
 * layers, its scores) and hands the choice here.
 *
 * <p>gpt-oss's experts ({@link #fused}) keep their fused, row-interleaved gate_up [2I, hidden] as one product [P, 2I],
 * take the clamped SwiGLU of the interleaved rows ({@link Backend#clampedSwiglu}), and add their frozen biases on the
 * grouped rows ({@link Backend#moeExpertBias}): gate_up's into the product before the activation, down's into the
 * unweighted outputs, so the routing-weight gradient sees them as the per-expert block does.
 *
 * <p>Adapters: an expert projection's LoRA runs over all experts' rows at once ({@link ExpertLora}); any other hook that
 * keeps the base input runs on its expert's rows; {@link #supports} is false when an enabled hook transforms the base
 * input (OFT), and the block then runs per expert instead.
 */
public final class GroupedExperts {
    private final DenseMlp[] experts;   // null for the fused form
    private final Linear[][] linears;   // [projection][expert]: gate (or the fused gate_up), up (empty when fused), down
    private final ExpertWeights gate;   // E x [I, hidden]; fused: E x [2I, hidden], gate_up
    private final ExpertWeights up;     // E x [I, hidden]; null when fused
    private final ExpertWeights down;   // E x [hidden, I]
    private final float limit;          // the SwiGLU's clamp; +inf: none
    private final Fused fused;          // gpt-oss's form; null: separate gate and up, no biases

    /**
     * gpt-oss's experts: the clamped SwiGLU's {@code alpha} and {@code limit}, gate_up's bias f32 [E, 2I] and down's f32
     * [E, hidden] in backend memory.
     */
    record Fused(float alpha, float limit, Tensor gateUpBias, Tensor downBias) {
    }

    /** What backward needs; grouped tensors are in expert order, [P = tokens·k, ...]. */
    public static final class Tape {
        Tensor order;     // i32 [P]
        Tensor position;  // i32 [P]
        int[] offsets;    // [E + 1], host
        Tensor xs;        // [P, hidden] the input rows of the pairs
        Tensor g;         // [P, I]; fused: [P, 2I], gate_up with its bias
        Tensor u;         // [P, I]; null when fused
        Tensor act;       // [P, I] swiglu(g, u)
        Tensor ys;        // [P, hidden] unweighted expert outputs

        /** Releases what the experts allocated for backward. */
        public void release(TensorAllocator a) {
            for (Tensor t : new Tensor[]{order, position, xs, g, u, act, ys}) {
                if (t != null) {
                    a.release(t);
                }
            }
            order = position = xs = g = u = act = ys = null;
        }

        /** The per-expert offsets [E + 1] of the pairs (expert e's rows [o_e, o_(e+1))). */
        public int[] offsets() {
            return offsets;
        }
    }

    private GroupedExperts(DenseMlp[] experts, Linear[][] linears, ExpertWeights gate, ExpertWeights up, ExpertWeights down,
                           float limit, Fused fused) {
        this.experts = experts;
        this.linears = linears;
        this.gate = gate;
        this.up = up;
        this.down = down;
        this.limit = limit;
        this.fused = fused;
    }

    /**
     * The experts' weights as per-projection sets (shared, not copied), the SwiGLU clamped at {@code limit}
     * ({@code Float.POSITIVE_INFINITY}: plain SwiGLU); null when an expert is missing or has a bias.
     */
    public static GroupedExperts of(DenseMlp[] experts, float limit) {
        if (!(limit > 0)) {
            throw new IllegalArgumentException("SwiGLU limit must be positive (or infinite for none), got " + limit);
        }
        for (DenseMlp e : experts) {
            if (e == null || e.gate.bias() != null || e.up.bias() != null || e.down.bias() != null) {
                return null;
            }
        }
        Linear[][] ls = {linears(experts, 0), linears(experts, 1), linears(experts, 2)};
        return new GroupedExperts(experts, ls, weights(ls[0]), weights(ls[1]), weights(ls[2]), limit, null);
    }

    /**
     * gpt-oss's experts: per expert the fused gate_up [2I, hidden] and down [hidden, I] (their own biases unused here:
     * {@code fused} holds them stacked, the same values); null when an expert is missing.
     */
    public static GroupedExperts fused(Linear[] gateUp, Linear[] down, Fused fused) {
        int e = gateUp.length;
        if (down.length != e || fused.gateUpBias().rank() != 2 || fused.gateUpBias().size(0) != e
                || fused.downBias().rank() != 2 || fused.downBias().size(0) != e) {
            throw new IllegalArgumentException("fused experts: " + e + " gate_up and " + down.length + " down projections, biases "
                    + fused.gateUpBias() + " and " + fused.downBias() + " ([E, 2I] and [E, hidden])");
        }
        for (int x = 0; x < e; x++) {
            if (gateUp[x] == null || down[x] == null) {
                return null;
            }
            if (gateUp[x].out() != 2 * down[x].in() || fused.gateUpBias().size(1) != gateUp[x].out()
                    || fused.downBias().size(1) != down[x].out()) {
                throw new IllegalArgumentException("fused experts: expert " + x + " gate_up " + gateUp[x].out() + "x" + gateUp[x].in()
                        + " and down " + down[x].out() + "x" + down[x].in() + " do not make a clamped SwiGLU of biases "
                        + fused.gateUpBias() + " and " + fused.downBias());
            }
        }
        Linear[][] ls = {gateUp, new Linear[0], down};
        return new GroupedExperts(null, ls, weights(gateUp), null, weights(down), fused.limit(), fused);
    }

    private static ExpertWeights weights(Linear[] ls) {
        Tensor[] dense = new Tensor[ls.length];
        QuantizedTensor[] quantized = new QuantizedTensor[ls.length];
        Linear first = ls[0];
        for (int e = 0; e < ls.length; e++) {
            Weight w = ls[e].weight();
            if (w instanceof Weight.Quantized q) {
                quantized[e] = q.w();
            } else if (w instanceof Weight.Dense d) {
                dense[e] = d.w();
            }
        }
        return new ExpertWeights(first.out(), first.in(), dense, quantized);
    }

    static Linear[] linears(DenseMlp[] experts, int which) {
        Linear[] out = new Linear[experts.length];
        for (int e = 0; e < out.length; e++) {
            out[e] = linear(experts[e], which);
        }
        return out;
    }

    static Linear linear(DenseMlp m, int which) {
        return which == 0 ? m.gate : which == 1 ? m.up : m.down;
    }

    DenseMlp[] experts() {
        return experts;
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

    /** Experts of the block. */
    public int count() {
        return gate.experts();
    }

    /** True unless an enabled adapter on an expert projection transforms the base input (probed on one row). */
    public boolean supports(Backend b) {
        TensorAllocator a = b.allocator();
        Tensor probeIn = null;    // [1, hidden]
        Tensor probeMid = null;   // [1, I]
        for (int which = 0; which < 3; which++) {
            for (Linear l : linears[which]) {
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

    /** Whether these are gpt-oss's fused experts ({@link #fused}). */
    boolean isFused() {
        return fused != null;
    }

    /** The fused form's activation and biases; null for separate gate and up. */
    Fused fusedForm() {
        return fused;
    }

    /** The experts' linears of projection {@code which}: 0 gate (fused: gate_up), 1 up (empty when fused), 2 down. */
    Linear[] projections(int which) {
        return linears[which];
    }

    /**
     * x [N, hidden] with its choice (ids i32 [N, k], weights f32 [N, k]) -> out [N, hidden], overwritten unless
     * {@code accumulate} (then added into it); ids and weights stay the caller's. {@code tape} null: nothing is kept, and
     * the products are first offered to the backend from the device offsets (an inference forward); else the tape keeps
     * what {@link #backward} reads and the offsets are read to the host.
     */
    public void forward(Backend b, Tensor x, Tensor ids, Tensor weights, Tensor out, Tape tape, int chunk, boolean accumulate) {
        forward(b, x, ids, weights, out, tape, chunk, tape != null, accumulate);
    }

    /** As above; {@code training} reads the offsets to the host even without a tape (a recomputed forward's bits). */
    void forward(Backend b, Tensor x, Tensor ids, Tensor weights, Tensor out, Tape tape, int chunk, boolean training,
                 boolean accumulate) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        int h = x.size(1);
        int e = gate.experts();
        int k = ids.size(1);
        int inter = gate.rows();   // fused: 2I, halved below
        int p = n * k;
        Tensor offsetsDev = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, e + 1); // [E + 1]
        Tensor order = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, p);          // [P]
        Tensor position = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, p);       // [P]
        b.moeGroup(ids, e, offsetsDev, order, position);
        // the per-expert counts: read on the host here for a training forward (its backward needs them); an inference
        // forward offers its products to the backend from the device first (GroupOffsets), reading them only if declined
        boolean routed = !training && tape == null;
        GroupOffsets offsets = routed ? GroupOffsets.ofDevice(a, offsetsDev) : GroupOffsets.ofHost(a.toHost(offsetsDev).toIntArray());
        boolean keepOffsets = routed || fused != null;   // the biases read them on the backend
        if (!keepOffsets) {
            a.release(offsetsDev);
        }
        Tensor xs = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, h);      // [P, hidden]
        b.moeGather(x, order, k, null, xs);
        Tensor g;   // [P, I]; fused: gate_up [P, 2I]
        Tensor u;   // [P, I]; null when fused
        if (fused == null) {
            g = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);
            u = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);
            offsets.matmulShared(b, xs, new ExpertWeights[]{gate, up}, new Tensor[]{g, u}, chunk);
            ExpertLora gateLora = ExpertLora.of(linears[0]);
            ExpertLora upLora = ExpertLora.of(linears[1]);
            if (gateLora != null && upLora != null && ExpertLora.sameShape(gateLora, upLora)) {   // both A products of xs in one call
                ExpertLora.forward(b, offsets, xs, gateLora, g, upLora, u);
            } else {
                adaptersForward(b, linears[0], offsets, xs, g);
                adaptersForward(b, linears[1], offsets, xs, u);
            }
        } else {
            inter = gate.rows() / 2;
            g = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, 2L * inter);
            u = null;
            offsets.matmul(b, xs, gate, g, chunk);
            b.moeExpertBias(g, fused.gateUpBias(), offsetsDev);
            adaptersForward(b, linears[0], offsets, xs, g);
        }
        Tensor act = tape == null && fused == null ? g : a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, inter); // [P, I]
        activation(b, g, u, act);
        if (tape == null) {
            a.release(xs);
            if (u != null) {
                a.release(u);
            } else {
                a.release(g);
            }
        }
        Tensor ys = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, h);      // [P, hidden]
        offsets.matmul(b, act, down, ys, chunk);
        if (fused != null) {
            b.moeExpertBias(ys, fused.downBias(), offsetsDev);
        }
        adaptersForward(b, linears[2], offsets, act, ys);
        b.moeCombineGrouped(ys, position, weights, out, accumulate);
        if (keepOffsets) {
            a.release(offsetsDev);
        }
        if (tape == null) {
            for (Tensor t : new Tensor[]{order, position, act, ys}) {
                a.release(t);
            }
        } else {
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

    /** act = swiglu(g, u), with the block's limit where it has one (act may be g); fused: the clamped SwiGLU of gate_up g. */
    private void activation(Backend b, Tensor g, Tensor u, Tensor act) {
        if (fused != null) {
            b.clampedSwiglu(g, fused.alpha(), fused.limit(), act);
        } else if (limit == Float.POSITIVE_INFINITY) {
            b.swiglu(g, u, act);
        } else {
            b.limitedSwiglu(g, u, limit, act);
        }
    }

    /**
     * Pairs at most this many a call ({@code tokens · k}) take {@link #forwardPairs} where the backend asks for it: a
     * decode step of up to 256 sequences at top-8.
     */
    static final int PAIRS_MAX = 2048;

    /**
     * Whether an inference forward of {@code pairs} (token, expert) pairs takes the per-pair form ({@link #forwardPairs},
     * up to {@link #PAIRS_MAX} pairs, or {@code -Dorbit.moe.pairsMax}, read at each call, for comparisons;
     * gpt-oss's fused experts {@code GroupedMoe}'s): few enough pairs, every projection's experts ones the backend
     * multiplies per pair ({@link Backend#moePairs}), and their enabled adapters LoRA the pair products run.
     */
    public boolean takesPairs(Backend b, long pairs) {
        if (pairs > Integer.getInteger("orbit.moe.pairsMax", PAIRS_MAX) || !b.moePairs(gate) || !b.moePairs(down) || (up != null && !b.moePairs(up))) {
            return false;
        }
        for (Linear[] projection : linears) {
            if (projection.length > 0 && !pairAdapters(projection)) {
                return false;
            }
        }
        return true;
    }

    /** Whether every enabled adapter on one projection's experts is a LoRA the pair products can run: all experts' or none. */
    private static boolean pairAdapters(Linear[] experts) {
        if (ExpertLora.of(experts) != null) {
            return true;
        }
        for (Linear l : experts) {
            Linear.AdapterHook h = l.adapter();
            if (h != null && h.enabled()) {
                return false;
            }
        }
        return true;
    }

    /**
     * The forward of a few tokens per (token, expert) pair over a choice already made (ids i32 [N, k] and weights f32
     * [N, k], the caller's), where {@link #takesPairs} holds (separate gate and up): each pair's gate, up and down
     * products through its expert and its LoRA, read from the ids on the backend ({@link Backend#moeExpertMatmulPairs};
     * gate, up, their LoRA's B and the SwiGLU in one call where the backend fuses them and the SwiGLU has no limit,
     * {@link Backend#moeSwigluPairs}, and down with its LoRA's B, {@link Backend#moeExpertMatmulPairsLora}), and the pairs
     * weighted back into their tokens ({@link Backend#moeCombinePairs}; down, its LoRA's B and that in one call where the
     * backend fuses them, {@link Backend#moeDownCombinePairs}). No host read, so a decode step can be captured. With
     * {@code accumulate} the pairs are weighted into out as it is: the bits of the output and an add, one launch fewer.
     */
    public void forwardPairs(Backend b, Tensor x, Tensor ids, Tensor weights, Tensor out, boolean accumulate) {
        if (fused != null) {
            throw new IllegalStateException("gpt-oss's fused experts take GroupedMoe's per-pair form");
        }
        TensorAllocator a = b.allocator();
        int k = ids.size(1);
        int inter = gate.rows();
        int p = x.size(0) * k;
        ExpertLora gateLora = ExpertLora.of(linears[0]);
        ExpertLora upLora = ExpertLora.of(linears[1]);
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
        Tensor g = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);     // [P, I]: act
        if (limit != Float.POSITIVE_INFINITY || !b.moeSwigluPairs(x, k, gate, up, ids, gateA == null ? null : gateLora.pairTerm(gateA),
                upA == null ? null : upLora.pairTerm(upA), g)) {
            Tensor u = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, inter); // [P, I]
            b.moeExpertMatmulPairs(x, k, gate, ids, 1f, g, false);
            b.moeExpertMatmulPairs(x, k, up, ids, 1f, u, false);
            if (gateA != null) {
                gateLora.addPairsB(b, gateA, ids, g);
            }
            if (upA != null) {
                upLora.addPairsB(b, upA, ids, u);
            }
            activation(b, g, u, g);                                                  // act, in place
            a.release(u);
        }
        release(a, gateA, upA);
        ExpertLora downLora = ExpertLora.of(linears[2]);
        Tensor downA = downLora == null ? null : downLora.pairsA(b, g, 1, ids);    // [P, r]
        if (b.moeDownCombinePairs(g, down, ids, downA == null ? null : downLora.pairTerm(downA), weights, out, accumulate)) {
            release(a, downA, g);
            return;
        }
        Tensor ys = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, x.size(1)); // [P, hidden]
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
    }

    /**
     * dout [N, hidden] -> dx [N, hidden], overwritten unless {@code accumulate} (then added into it), and the routing
     * weights' gradient dWeight f32 [N, k] (overwritten); {@code weights} are the forward's. The experts' adapters
     * accumulate their gradients.
     */
    public void backward(Backend b, Tape t, Tensor weights, Tensor dout, Tensor dx, Tensor dWeight, int chunk, boolean accumulate) {
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        int h = dout.size(1);
        int k = weights.size(1);
        int inter = down.cols();
        int p = n * k;
        Tensor dys = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, h);        // [P, hidden] = w · dout[token]
        b.moeGather(dout, t.order, k, weights, dys);
        b.moeWeightGrad(dout, t.ys, t.position, dWeight);
        Tensor dact = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);   // [P, I]
        b.moeExpertMatmulTransposed(dys, down, t.offsets, dact, chunk);
        adaptersBackward(b, linears[2], t.offsets, t.act, dys, dact);
        a.release(dys);
        Tensor dxs = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, h);        // [P, hidden]
        if (fused != null) {
            Tensor dgu = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, 2L * inter);   // [P, 2I]
            b.clampedSwigluBackward(t.g, dact, fused.alpha(), fused.limit(), dgu);
            a.release(dact);
            b.moeExpertMatmulTransposed(dgu, gate, t.offsets, dxs, chunk);
            adaptersBackward(b, linears[0], t.offsets, t.xs, dgu, dxs);
            a.release(dgu);
        } else {
            Tensor dg = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);     // [P, I]
            Tensor du = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, inter);     // [P, I]
            if (limit == Float.POSITIVE_INFINITY) {
                b.swigluBackward(t.g, t.u, dact, dg, du);
            } else {
                b.limitedSwigluBackward(t.g, t.u, dact, limit, dg, du);
            }
            a.release(dact);
            b.moeExpertMatmulTransposed(dg, gate, t.offsets, dxs, chunk);
            adaptersBackward(b, linears[0], t.offsets, t.xs, dg, dxs);
            a.release(dg);
            b.moeExpertMatmulAccumulate(du, up, t.offsets, 1f, dxs, true, chunk);     // dxs += du · W_up
            adaptersBackward(b, linears[1], t.offsets, t.xs, du, dxs);
            a.release(du);
        }
        b.moeCombineGrouped(dxs, t.position, null, dx, accumulate);
        a.release(dxs);
    }

    /** Each active expert's enabled adapter adds its delta into y's rows of that expert, from x's rows. */
    private static void adaptersForward(Backend b, Linear[] experts, GroupOffsets groups, Tensor x, Tensor y) {
        ExpertLora lora = ExpertLora.of(experts);
        if (lora != null) {
            lora.forward(b, groups, x, y);
            return;
        }
        int[] offsets = null;
        for (int e = 0; e < experts.length; e++) {
            Linear.AdapterHook hook = experts[e].adapter();
            if (hook != null && hook.enabled() && offsets == null) {
                offsets = groups.host();
            }
            if (hook != null && hook.enabled() && offsets[e + 1] > offsets[e]) {
                hook.forward(b, x.slice(0, offsets[e], offsets[e + 1]), y.slice(0, offsets[e], offsets[e + 1]));
            }
        }
    }

    /** Each active expert's enabled adapter: its share of dx's rows, and its own parameter gradients. */
    private static void adaptersBackward(Backend b, Linear[] experts, int[] offsets, Tensor x, Tensor dy, Tensor dx) {
        ExpertLora lora = ExpertLora.of(experts);
        if (lora != null) {
            lora.backward(b, offsets, x, dy, dx);
            return;
        }
        for (int e = 0; e < experts.length; e++) {
            Linear.AdapterHook hook = experts[e].adapter();
            if (hook != null && hook.enabled() && offsets[e + 1] > offsets[e]) {
                long s = offsets[e];
                long end = offsets[e + 1];
                hook.backward(b, x.slice(0, s, end), dy.slice(0, s, end), dx.slice(0, s, end));
            }
        }
    }

    static void release(TensorAllocator a, Tensor... ts) {
        for (Tensor t : ts) {
            if (t != null) {
                a.release(t);
            }
        }
    }
}
