package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;

/**
 * gpt-oss sparse block: a router with bias, top-k of the raw router logits, softmax over the k
 * chosen logits, and the weighted sum of the chosen experts. Expert e is
 * {@code down(clampedSwiglu(gate_up(x) + b_gu)) + b_down} with a fused, row-interleaved
 * {@code gate_up} [2I, hidden] (row 2j is gate j, row 2j+1 up j) and {@code down} [hidden, I].
 * The router is frozen; the gradient flows through the routing weights into the input.
 *
 * <p>By default the block runs grouped in backend memory ({@link GroupedMoe} over {@link GroupedExperts#fused}):
 * the router's softmax over all experts, its top k renormalised (the softmax of the k chosen logits, the same
 * weights), the pairs grouped by expert, gate_up as one product a chunk of active experts with its bias added on the
 * grouped rows, the clamped SwiGLU, down and its bias, the weighted combination; nothing read on the host outside
 * training (so a decode step can be captured). It runs per expert, with the routing decision and the routing
 * weights' gradient on the host (the router logits, the experts' outputs and d out copied there through {@link
 * TensorAllocator#toHost}), when {@link #setGrouped} turns that off or an expert adapter transforms the base input
 * (OFT): the reference the grouped form is tested against.
 */
final class GptOssMoe {
    final Linear router;    // [experts, hidden] + bias [experts]
    final Linear[] gateUp;  // per expert [2I, hidden] + bias [2I]
    final Linear[] down;    // per expert [hidden, I] + bias [hidden]
    private final int topK;
    private final int inter;
    private final float alpha;
    private final float limit;
    private final Tensor gateUpBias;   // f32 [E, 2I], the stack the experts' gate_up biases are views of
    private final Tensor downBias;     // f32 [E, hidden]
    private final GroupedMoe grouped;  // the grouped form; null when an expert is missing
    private boolean useGrouped = true;
    private int chunk;                 // active experts a dequantization chunk in the grouped products (0: the fused kernels)

    /** The routing of N tokens, token-major [N*k]: chosen experts and their softmax weights. */
    record Routing(int[] expert, float[] weight, int topK) {
    }

    /** What backward needs. */
    static final class Tape {
        Tensor x;              // [N, hidden]
        Routing routing;
        ExpertGroups groups;
        Tensor[] xe;           // per expert [count, hidden] gathered input
        Tensor[] gu;           // per expert [count, 2I] gate_up output (with bias)
        Tensor[] act;          // per expert [count, I] input of down
        Tensor[] out;          // per expert [count, hidden] unweighted output (with bias)
        GroupedMoe.Tape grouped;   // non-null when the grouped form ran

        /** Releases the experts' saved rows (not x, the caller's input). */
        void release(TensorAllocator a) {
            if (grouped != null) {
                grouped.release(a);
                grouped = null;
            }
            for (Tensor[] per : new Tensor[][]{xe, gu, act, out}) {
                if (per != null) {
                    for (Tensor t : per) {
                        if (t != null) {
                            a.release(t);
                        }
                    }
                }
            }
            x = null;
            xe = gu = act = out = null;
        }
    }

    /**
     * @param gateUpBias f32 [E, 2I] in backend memory, the stack each expert's gate_up bias is a view of
     * @param downBias   f32 [E, hidden], likewise for down
     */
    GptOssMoe(Linear router, Linear[] gateUp, Linear[] down, int topK, float alpha, float limit, Tensor gateUpBias,
              Tensor downBias) {
        this.router = router;
        this.gateUp = gateUp;
        this.down = down;
        this.topK = topK;
        this.inter = down[0].in();
        this.alpha = alpha;
        this.limit = limit;
        this.gateUpBias = gateUpBias;
        this.downBias = downBias;
        this.grouped = GroupedMoe.fused(new ExpertRouter.Softmax(router, topK, true),
                GroupedExperts.fused(gateUp, down, new GroupedExperts.Fused(alpha, limit, gateUpBias, downBias)));
    }

    /** The same frozen weights with fresh, adapter-free linear layers (the grouped switch and the chunk carried over). */
    GptOssMoe view() {
        Linear[] gu = new Linear[gateUp.length];
        Linear[] d = new Linear[down.length];
        for (int e = 0; e < gu.length; e++) {
            gu[e] = gateUp[e].view();
            d[e] = down[e].view();
        }
        GptOssMoe m = new GptOssMoe(router.view(), gu, d, topK, alpha, limit, gateUpBias, downBias);
        m.useGrouped = useGrouped;
        m.chunk = chunk;
        return m;
    }

    /** Runs the block grouped in backend memory when it can (true, the default), or per expert with host routing. */
    void setGrouped(boolean on) {
        this.useGrouped = on;
    }

    /** Quantized experts dequantized {@code c} at a time in the grouped products (0: the backend's fused kernels). */
    void setExpertChunk(int c) {
        this.chunk = Math.max(0, c);
    }

    /** The stacked biases: gate_up's f32 [E, 2I] and down's f32 [E, hidden]. */
    Tensor[] biases() {
        return new Tensor[]{gateUpBias, downBias};
    }

    int experts() {
        return gateUp.length;
    }

    /** Top-k of the router logits (ties to the lower expert index), then softmax over the k values. */
    Routing route(Backend b, Tensor x) {
        int n = x.size(0);
        int e = experts();
        Tensor logits = b.allocator().allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, e); // [N, E]
        router.forward(b, x, logits);
        float[] lg = b.allocator().toHost(logits).toFloatArray(); // device->host: the routing decision
        int[] expert = new int[n * topK];
        float[] weight = new float[n * topK];
        boolean[] taken = new boolean[e];
        for (int t = 0; t < n; t++) {
            java.util.Arrays.fill(taken, false);
            for (int j = 0; j < topK; j++) {
                int best = -1;
                for (int c = 0; c < e; c++) {
                    if (!taken[c] && (best < 0 || lg[t * e + c] > lg[t * e + best])) {
                        best = c;
                    }
                }
                taken[best] = true;
                expert[t * topK + j] = best;
            }
            float max = lg[t * e + expert[t * topK]];
            double sum = 0;
            for (int j = 0; j < topK; j++) {
                sum += Math.exp(lg[t * e + expert[t * topK + j]] - max);
            }
            for (int j = 0; j < topK; j++) {
                weight[t * topK + j] = (float) (Math.exp(lg[t * e + expert[t * topK + j]] - max) / sum);
            }
        }
        return new Routing(expert, weight, topK);
    }

    /**
     * x [N, hidden] -> out [N, hidden]. {@code training}: a forward of a training step (its recomputed forward must equal
     * its first).
     */
    void forward(Backend b, Tensor x, Tensor out, Tape tape, boolean training) {
        if (useGrouped && grouped != null && grouped.supports(b)) {
            GroupedMoe.Tape gt = tape == null ? null : new GroupedMoe.Tape();
            grouped.forward(b, x, out, gt, chunk, training || tape != null, false);
            if (tape != null) {
                tape.x = x;
                tape.grouped = gt;
            }
            return;
        }
        Routing r = route(b, x);
        TensorAllocator a = b.allocator();
        a.zero(out);
        int e = experts();
        ExpertGroups groups = ExpertGroups.of(r.expert(), r.weight(), r.topK(), e);
        int h = x.size(1);
        if (tape != null) {
            tape.x = x;
            tape.routing = r;
            tape.groups = groups;
            tape.xe = new Tensor[e];
            tape.gu = new Tensor[e];
            tape.act = new Tensor[e];
            tape.out = new Tensor[e];
        }
        for (int ex = 0; ex < e; ex++) {
            int cnt = groups.count(ex);
            if (cnt == 0) {
                continue;
            }
            Tensor rows = a.upload(MemoryCategory.ACTIVATIONS, groups.tokens(ex));       // i32 [cnt]
            Tensor xe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);         // [cnt, hidden]
            b.gatherRows(x, rows, xe);
            Tensor gu = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, 2L * inter); // [cnt, 2I]
            gateUp[ex].forward(b, xe, gu);
            Tensor act = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, inter);    // [cnt, I]
            b.clampedSwiglu(gu, alpha, limit, act);
            Tensor ye = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);         // [cnt, hidden]
            down[ex].forward(b, act, ye);
            Tensor we = a.upload(MemoryCategory.ACTIVATIONS, groups.weights(ex));        // [cnt]
            b.scatterAddRows(ye, rows, we, out);
            a.release(rows);
            a.release(we);
            if (tape != null) {
                tape.xe[ex] = xe;
                tape.gu[ex] = gu;
                tape.act[ex] = act;
                tape.out[ex] = ye;
            } else {
                for (Tensor t : new Tensor[]{xe, gu, act, ye}) {
                    a.release(t);
                }
            }
        }
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten), through the experts and the routing weights. */
    void backward(Backend b, Tape tape, Tensor dout, Tensor dx) {
        if (tape.grouped != null) {
            grouped.backward(b, tape.grouped, dout, dx, chunk, false);
            return;
        }
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        int h = dout.size(1);
        int e = experts();
        Routing r = tape.routing;
        ExpertGroups groups = tape.groups;
        a.zero(dx);
        float[] dWeight = new float[n * topK];   // d loss / d routing weight, token-major
        float[] d = a.toHost(dout).toFloatArray(); // device->host: for the routing-weight gradient
        for (int ex = 0; ex < e; ex++) {
            int cnt = groups.count(ex);
            if (cnt == 0) {
                continue;
            }
            float[] dye = RoutedOutputGrad.of(groups, ex, d, a.toHost(tape.out[ex]).toFloatArray(), h, dWeight);
            Tensor dyeT = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dye, cnt, h));    // [cnt, hidden]
            Tensor dact = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, inter);   // [cnt, I]
            down[ex].backward(b, tape.act[ex], dyeT, dact);
            Tensor dgu = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, 2L * inter); // [cnt, 2I]
            b.clampedSwigluBackward(tape.gu[ex], dact, alpha, limit, dgu);
            Tensor dxe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);        // [cnt, hidden]
            gateUp[ex].backward(b, tape.xe[ex], dgu, dxe);
            Tensor rows = a.upload(MemoryCategory.ACTIVATIONS, groups.tokens(ex));       // i32 [cnt]
            b.scatterAddRows(dxe, rows, null, dx);
            for (Tensor t : new Tensor[]{dyeT, dact, dgu, dxe, rows}) {
                a.release(t);
            }
        }
        // routing weights = softmax over the chosen logits; unchosen logits get no gradient
        float[] dLogits = new float[n * e];
        for (int t = 0; t < n; t++) {
            float dot = 0;
            for (int j = 0; j < topK; j++) {
                dot += r.weight()[t * topK + j] * dWeight[t * topK + j];
            }
            for (int j = 0; j < topK; j++) {
                int s = t * topK + j;
                dLogits[t * e + r.expert()[s]] = r.weight()[s] * (dWeight[s] - dot);
            }
        }
        Tensor dl = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dLogits, n, e)); // [N, E]
        Tensor dxr = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
        router.backward(b, tape.x, dl, dxr);
        b.add(dx, dxr, dx);
        a.release(dl);
        a.release(dxr);
    }
}
