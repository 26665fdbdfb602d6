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
 * Tokens are grouped by expert so each active expert runs one batched matmul over its tokens.
 * The router is frozen; the gradient flows through the routing weights into the input. The routing
 * decision and the gradient of the routing weights are taken on the host (the router logits, the
 * experts' outputs and d out are copied there through {@link TensorAllocator#toHost}); everything
 * else runs on the backend.
 */
final class GptOssMoe {
    final Linear router;    // [experts, hidden] + bias [experts]
    final Linear[] gateUp;  // per expert [2I, hidden] + bias [2I]
    final Linear[] down;    // per expert [hidden, I] + bias [hidden]
    private final int topK;
    private final int inter;
    private final float alpha;
    private final float limit;

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

        /** Releases the experts' saved rows (not x, the caller's input). */
        void release(TensorAllocator a) {
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

    GptOssMoe(Linear router, Linear[] gateUp, Linear[] down, int topK, float alpha, float limit) {
        this.router = router;
        this.gateUp = gateUp;
        this.down = down;
        this.topK = topK;
        this.inter = down[0].in();
        this.alpha = alpha;
        this.limit = limit;
    }

    /** The same frozen weights with fresh, adapter-free linear layers. */
    GptOssMoe view() {
        Linear[] gu = new Linear[gateUp.length];
        Linear[] d = new Linear[down.length];
        for (int e = 0; e < gu.length; e++) {
            gu[e] = gateUp[e].view();
            d[e] = down[e].view();
        }
        return new GptOssMoe(router.view(), gu, d, topK, alpha, limit);
    }

    int experts() {
        return gateUp.length;
    }

    /** Top-k of the router logits (ties to the lower expert index), then softmax over the k values. */
    Routing route(Backend b, Tensor x) {
        int n = x.size(0);
        int e = experts();
        Tensor logits = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, e); // [N, E]
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

    /** x [N, hidden] -> out [N, hidden]. */
    void forward(Backend b, Tensor x, Tensor out, Tape tape) {
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
