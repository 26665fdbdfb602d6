package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.MoeRoutingHostOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.arch.DenseMlp;
import org.orbitrl.model.arch.GroupedExperts;
import org.orbitrl.model.nn.Linear;

import java.util.ArrayList;
import java.util.List;

/**
 * DeepSeek V4's MoE block: router scores {@code sqrt(softplus(x·Wᵀ))} (or the sigmoid, by
 * {@code scoring_func}); the k experts are the
 * top-k of score + {@code e_score_correction_bias}, or on hash layers the fixed
 * {@code tid2eid[token id]} row; weights are the chosen scores renormalised to sum 1 times
 * {@code routed_scaling_factor}. Routed and shared experts are SwiGLU with the V4 clamp
 * (gate ≤ limit, |up| ≤ limit). The routing choice is discrete; gradients flow through the
 * routing weights into the router logits and on to the block input.
 *
 * <p>The choice is made on the host (its hash layers' table, its scores). By default the block then runs in backend
 * memory ({@link #forwardGrouped}): the routed experts grouped over that choice ({@link GroupedExperts}: the pairs
 * grouped by expert, one set of grouped products for all experts, quantized experts dequantized {@link #setExpertChunk
 * C} at a time into one reused buffer, the experts' LoRA over all their rows at once) and the shared expert there too,
 * the input copied there once and the output back once, forward and backward (which runs the block's forward again
 * rather than holding its rows in backend memory until then). {@link #setGrouped}{@code (false)}, an
 * expert with a bias, or an enabled adapter that transforms the base input (OFT) run each active expert on its own
 * rows and the rest on the host instead.
 */
final class DeepseekV4Moe {
    final Linear router;          // [experts, hidden]
    final float[] bias;           // [experts] selection bias, null on hash layers
    final int[] tid2eid;          // [vocab, k] on hash layers, else null; every entry an expert
    final DenseMlp[] experts;
    final DenseMlp shared;
    private final int topK;
    private final float scaling;
    private final float limit;
    private final boolean sigmoid;   // element-wise sigmoid scores instead of sqrt(softplus)
    private final GroupedExperts grouped;   // null when an expert has a bias
    private boolean useGrouped = true;
    private int chunk;               // quantized experts dequantized at a time in the grouped products (0: fused)

    DeepseekV4Moe(Linear router, float[] bias, int[] tid2eid, DenseMlp[] experts, DenseMlp shared, int topK,
                  float scaling, float limit, boolean sigmoid) {
        this.router = router;
        this.bias = bias;
        this.tid2eid = tid2eid;
        this.experts = experts;
        this.shared = shared;
        this.topK = topK;
        this.scaling = scaling;
        this.limit = limit;
        this.sigmoid = sigmoid;
        this.grouped = GroupedExperts.of(experts, limit);
    }

    /** The same frozen weights with fresh, adapter-free linear layers; the same grouping and chunk. */
    DeepseekV4Moe view() {
        DenseMlp[] ex = new DenseMlp[experts.length];
        for (int e = 0; e < ex.length; e++) {
            ex[e] = experts[e].view();
        }
        DeepseekV4Moe v = new DeepseekV4Moe(router.view(), bias, tid2eid, ex, shared.view(), topK, scaling, limit, sigmoid);
        v.useGrouped = useGrouped;
        v.chunk = chunk;
        return v;
    }

    /** Runs the routed experts grouped in backend memory (true, the default) or each on its own rows (false). */
    void setGrouped(boolean on) {
        useGrouped = on;
    }

    /** Quantized routed experts dequantized {@code c} at a time in the grouped products (0: the fused kernels). */
    void setExpertChunk(int c) {
        chunk = Math.max(0, c);
    }

    /** Whether this forward runs the routed experts grouped. */
    boolean groupedHere(Backend b) {
        return useGrouped && grouped != null && grouped.supports(b);
    }

    static float softplus(float x) {
        return x > 20f ? x : (float) Math.log1p(Math.exp(x));
    }

    /** The score of a logit, rounded as {@link Backend#moeScoreTopk} rounds it. */
    private float score(float x) {
        return sigmoid ? (float) (1.0 / (1.0 + Math.exp(-x))) : MoeRoutingHostOps.sqrtSoftplus(x);
    }

    /** d score / d x. */
    private float scoreGrad(float x) {
        float sig = 1f / (1f + (float) Math.exp(-x));
        if (sigmoid) {
            return sig * (1 - sig);
        }
        return (x > 20f ? 1f : sig) / (2f * (float) Math.sqrt(softplus(x)));
    }

    /**
     * x [N, hidden] -> [N, hidden]; ids [N] are the tokens' ids (hash routing). {@code inference}: a forward no backward
     * follows (untaped, and not a training step's first forward, which its recomputed forward must equal bit for bit):
     * its routed experts may run per pair.
     */
    Node forward(GradTape t, Backend b, Node x, int[] ids, boolean inference) {
        if (t != null && inference) {
            throw new IllegalArgumentException("a taped forward is a training forward, not an inference one");
        }
        if (groupedHere(b)) {
            return forwardGrouped(t, b, x, ids, inference);
        }
        int n = ids.length;
        int h = router.in();
        int e = experts.length;
        Node logits = Ops.linear(t, b, router, x, n);   // [N, E]
        float[] scores = scores(logits.v());
        int[] idx = choose(scores, ids, n, e);           // [N, k]
        Node w = routeWeights(t, logits, scores, idx, n, e);    // [N*k]
        Node routed = routedPerExpert(t, b, x, idx, w, n, h, e);
        return Ops.add(t, b, routed, mlp(t, b, shared, x, n));
    }

    private float[] scores(float[] logits) {
        float[] scores = new float[logits.length];
        int e = experts.length;
        Ops.forRows(logits.length / e, e, r -> {
            for (int i = r * e; i < (r + 1) * e; i++) {
                scores[i] = score(logits[i]);
            }
        });
        return scores;
    }

    /** The k experts of each token [N, k]: its hash row, or the top-k of score + bias (ties to the lower expert). */
    private int[] choose(float[] scores, int[] ids, int n, int e) {
        int[] idx = new int[n * topK];
        Ops.forRows(n, (long) topK * e, r -> {
            if (tid2eid != null) {
                System.arraycopy(tid2eid, ids[r] * topK, idx, r * topK, topK);
            } else {
                boolean[] taken = new boolean[e];
                for (int j = 0; j < topK; j++) {
                    int best = -1;
                    float bv = Float.NEGATIVE_INFINITY;
                    for (int c = 0; c < e; c++) {
                        float v = scores[r * e + c] + bias[c];
                        if (!taken[c] && (best < 0 || v > bv)) {
                            best = c;
                            bv = v;
                        }
                    }
                    taken[best] = true;
                    idx[r * topK + j] = best;
                }
            }
        });
        return idx;
    }

    /**
     * The whole block in backend memory, one step of the tape: x's backend copy (shared with the block's other readers)
     * through the frozen router, the choice and its weights made there ({@link Backend#moeScoreTopk}, a hash layer's
     * experts uploaded from {@code tid2eid}), the routed experts over the choice, the shared expert (its products and
     * the limited SwiGLU there), their sum. An untaped forward reads nothing back: an inference forward's routed experts
     * run per (token, expert) pair where the backend asks for it ({@link GroupedExperts#forwardPairs}), else grouped, as
     * a training step's untaped forward (recompute) runs them, so that its recomputed forward has the same bits. A taped
     * forward runs them grouped ({@link GroupedExperts}) and reads the logits, the choice and its weights back for its
     * backward. Nothing else stays in backend memory until the backward: V4's tape holds every layer at once, and the
     * experts' grouped rows of one layer are T·k·(2·hidden + 3·I) f32 (1.4 GB at 4096 tokens of V4-Flash), so the
     * backward runs the experts' and the shared expert's forward again (the same products on the same operands, the
     * same bits) before theirs. It sends the output gradient there once, runs the shared expert's backward, the
     * experts' (their activation gradient and the routing weights' gradient, read back), the routing weights' gradient
     * into the router logits on the host, the router's backward there, and reads the input gradient back once. The
     * adapters on the router, the experts and the shared expert accumulate their gradients as everywhere.
     */
    private Node forwardGrouped(GradTape t, Backend b, Node x, int[] ids, boolean inference) {
        TensorAllocator a = b.allocator();
        int n = ids.length;
        int h = router.in();
        int e = experts.length;
        Tensor xt = x.placed(a, n, h);
        Tensor lt = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, e);
        router.forward(b, xt, lt);
        Tensor fixed = tid2eid == null ? null : a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(hashRows(ids), n, topK));
        Tensor st = t == null ? lt : a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, e);   // the scores (in place: inference)
        Tensor idsT = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I32, n, topK);
        Tensor wt = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, topK);
        b.moeScoreTopk(lt, !sigmoid, bias == null ? null : Ops.constant(b, bias, new long[]{e}), fixed, topK, scaling, st, wt,
                idsT);
        Ops.release(a, fixed);
        Tensor out = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);
        if (t == null) {
            Ops.release(a, forwardOnDevice(b, xt, idsT, wt, out, null, inference));
            Ops.release(a, lt, idsT, wt);
            return Ops.made(b, out);
        }
        float[] logits = a.toFloats(lt);
        float[] scores = a.toFloats(st);
        int[] idx = a.toHost(idsT).toIntArray();
        float[] w = a.toFloats(wt);
        Ops.release(a, lt, st);
        Ops.release(a, forwardOnDevice(b, xt, idsT, wt, out, null, false));
        Ops.release(a, idsT, wt);
        Node y = Ops.made(b, out);
        float[] sums = chosenSums(scores, idx, n, e);
        int is = shared.gate().out();
        t.record(y, () -> {
            GroupedExperts.Tape gt = new GroupedExperts.Tape();
            Tensor again = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);
            Tensor idsAgain = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(idx, n, topK));
            Tensor wt2 = Ops.device(a, w, n, topK);
            Tensor[] f = forwardOnDevice(b, xt, idsAgain, wt2, again, gt, false);     // g, u, act
            Ops.release(a, again, idsAgain);
            Tensor g = f[0];
            Tensor u = f[1];
            Tensor act = f[2];
            Tensor dy = y.gradPlaced(a, n, h);
            Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);
            Tensor dact = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, is);
            shared.down().backward(b, act, dy, dact);
            Tensor dg = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, is);
            Tensor du = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, is);
            b.limitedSwigluBackward(g, u, dact, limit, dg, du);
            Ops.release(a, dact, g, u, act);
            shared.gate().backward(b, xt, dg, dx);
            Tensor part = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);
            shared.up().backward(b, xt, du, part);
            b.add(dx, part, dx);
            Ops.release(a, dg, du);
            Tensor dw = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, topK);
            grouped.backward(b, gt, wt2, dy, dx, dw, chunk, true);
            gt.release(a);
            float[] dl = new float[n * e];
            logitGrad(a.toFloats(dw), logits, scores, idx, sums, n, e, dl);
            Ops.release(a, dw, wt2);
            Tensor dlt = Ops.device(a, dl, n, e);
            router.backward(b, xt, dlt, part);
            b.add(dx, part, dx);
            Ops.release(a, dlt, part);
            Ops.sendGrad(b, x, dx);
        });
        return y;
    }

    /** The hash layer's experts of each token [N, k]: its {@code tid2eid} row. */
    private int[] hashRows(int[] ids) {
        int[] idx = new int[ids.length * topK];
        for (int r = 0; r < ids.length; r++) {
            System.arraycopy(tid2eid, ids[r] * topK, idx, r * topK, topK);
        }
        return idx;
    }

    /**
     * out [N, hidden] = the routed experts over the choice (ids i32 [N, k], weights f32 [N, k], the caller's) plus the
     * shared expert, all of x's device copy xt; {@code tape} (null: none) keeps what the experts' backward reads; {@code
     * pairs}: an inference forward, whose experts run per pair where the backend asks for it. Returns the shared
     * expert's gate, up and SwiGLU output [N, I_shared], the caller's to release.
     */
    private Tensor[] forwardOnDevice(Backend b, Tensor xt, Tensor ids, Tensor w, Tensor out, GroupedExperts.Tape tape,
                                     boolean pairs) {
        TensorAllocator a = b.allocator();
        int n = xt.size(0);
        int h = xt.size(1);
        int is = shared.gate().out();
        if (pairs && tape == null && grouped.takesPairs(b, (long) n * topK)) {
            grouped.forwardPairs(b, xt, ids, w, out, false);
        } else {
            grouped.forward(b, xt, ids, w, out, tape, chunk, false);
        }
        Tensor g = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, is);
        Tensor u = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, is);
        shared.gate().forward(b, xt, g);
        shared.up().forward(b, xt, u);
        Tensor act = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, is);
        b.limitedSwiglu(g, u, limit, act);
        Tensor ys = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);
        shared.down().forward(b, act, ys);
        b.add(out, ys, out);
        a.release(ys);
        return new Tensor[]{g, u, act};
    }

    /** Each active expert on its own rows: gathered, its SwiGLU MLP, weighted back into the tokens (on the host). */
    private Node routedPerExpert(GradTape t, Backend b, Node x, int[] idx, Node w, int n, int h, int e) {
        List<Node> outs = new ArrayList<>();
        List<int[]> slotsOf = new ArrayList<>();
        for (int ex = 0; ex < e; ex++) {
            int cnt = 0;
            for (int v : idx) {
                cnt += v == ex ? 1 : 0;
            }
            if (cnt == 0) {
                continue;
            }
            int[] slots = new int[cnt];
            int[] toks = new int[cnt];
            int c = 0;
            for (int s = 0; s < idx.length; s++) {
                if (idx[s] == ex) {
                    slots[c] = s;
                    toks[c++] = s / topK;
                }
            }
            Node xe = Ops.gather(t, x, h, toks);
            outs.add(mlp(t, b, experts[ex], xe, cnt));
            slotsOf.add(slots);
        }
        return combine(t, n, h, outs, slotsOf, w);
    }

    private Node mlp(GradTape t, Backend b, DenseMlp m, Node x, int rows) {
        Node g = Ops.linear(t, b, m.gate(), x, rows);
        Node u = Ops.linear(t, b, m.up(), x, rows);
        return Ops.linear(t, b, m.down(), Ops.swiglu(t, b, g, u, limit), rows);
    }

    /** Normalised, scaled weights [N*k] of the chosen experts; their row sums (plus 1e-20) into sums [N]. */
    private float[] weights(float[] scores, int[] idx, int n, int e, float[] sums) {
        System.arraycopy(chosenSums(scores, idx, n, e), 0, sums, 0, n);
        float[] w = new float[n * topK];
        Ops.forRows(n, topK, r -> {
            for (int j = 0; j < topK; j++) {
                w[r * topK + j] = scores[r * e + idx[r * topK + j]] / sums[r] * scaling;
            }
        });
        return w;
    }

    /** Each row's sum of its chosen scores (j ascending) plus 1e-20: the weights' denominators [N]. */
    private float[] chosenSums(float[] scores, int[] idx, int n, int e) {
        float[] sums = new float[n];
        for (int r = 0; r < n; r++) {
            float s = 0;
            for (int j = 0; j < topK; j++) {
                s += scores[r * e + idx[r * topK + j]];
            }
            sums[r] = s + 1e-20f;
        }
        return sums;
    }

    /** dl [N, E] += the router logits' gradient from the weights' gradient dw [N*k]. */
    private void logitGrad(float[] dw, float[] logits, float[] scores, int[] idx, float[] sums, int n, int e, float[] dl) {
        Ops.forRows(n, topK, r -> {
            float dot = 0;
            for (int j = 0; j < topK; j++) {
                dot += dw[r * topK + j] * scores[r * e + idx[r * topK + j]];
            }
            for (int j = 0; j < topK; j++) {
                int c = idx[r * topK + j];
                float ds = scaling * (dw[r * topK + j] / sums[r] - dot / (sums[r] * sums[r]));
                dl[r * e + c] += ds * scoreGrad(logits[r * e + c]);
            }
        });
    }

    /** Normalised, scaled weights [N*k] of the chosen experts, differentiable in the router logits. */
    private Node routeWeights(GradTape t, Node logits, float[] scores, int[] idx, int n, int e) {
        float[] sums = new float[n];
        Node wn = new Node(weights(scores, idx, n, e, sums));
        if (t != null) {
            t.record(wn, () -> logitGrad(wn.gradOrNull(), logits.v(), scores, idx, sums, n, e, logits.grad()));
        }
        return wn;
    }

    /** out[token] = Σ over its routing slots of weight[slot] · expert output row. */
    private static Node combine(GradTape t, int n, int h, List<Node> outs, List<int[]> slotsOf, Node w) {
        int k = w.size() / n;
        float[] wv = w.v();
        float[] y = new float[n * h];
        for (int i = 0; i < outs.size(); i++) {
            int[] slots = slotsOf.get(i);
            float[] ye = outs.get(i).v();
            for (int r = 0; r < slots.length; r++) {
                int tok = slots[r] / k;
                float wt = wv[slots[r]];
                for (int c = 0; c < h; c++) {
                    y[tok * h + c] += wt * ye[r * h + c];
                }
            }
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dw = w.grad();
                for (int i = 0; i < outs.size(); i++) {
                    int[] slots = slotsOf.get(i);
                    Node o = outs.get(i);
                    float[] dye = o.grad();
                    float[] ov = o.v();
                    for (int r = 0; r < slots.length; r++) {
                        int tok = slots[r] / k;
                        float wt = wv[slots[r]];
                        float dot = 0;
                        for (int c = 0; c < h; c++) {
                            dye[r * h + c] += wt * dy[tok * h + c];
                            dot += dy[tok * h + c] * ov[r * h + c];
                        }
                        dw[slots[r]] += dot;
                    }
                }
            });
        }
        return yn;
    }
}
