package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;

/**
 * The lightning indexer of a compressed-sparse layer: its own compressor at
 * {@code index_head_dim} keys the compressed windows; queries {@code wq_b(q_residual)} rotated at
 * the token positions score each causally closed entry as
 * {@code Σ_h w_{t,h} · relu(q_{t,h}·k_s) · index_head_dim^-½}, {@code w = weights_proj(x) · heads^-½},
 * and each query keeps the top {@code index_topk} of its closed entries. The choice is discrete:
 * nothing here is differentiated. A query's choice is made over its closed entries alone, as a
 * decode step makes it (the entries a step holds are those it has closed): ties among equal scores
 * (the ReLU's exact zeros) then fall the same way whether the query is decoded or sits in a
 * forward that holds later entries too, so that rollout's decode and the training forward keep
 * the same entries. (Transformers' one-shot forward partitions all of the forward's entries, the
 * unclosed at -inf, and can break such a tie differently from its own decode.)
 */
final class DeepseekV4Indexer {
    /**
     * {@code -Dorbit.v4.indexerScores=always}: the scores made and read even where every query keeps all of its closed
     * entries (read at each call; a check and a timing aid, the choice is the same). {@code needed} (the default) skips
     * them there.
     */
    static final String SCORES_PROPERTY = "orbit.v4.indexerScores";

    final DeepseekV4Compressor compressor;
    final Linear qB;           // [heads*dim, qLoraRank]
    final Linear weightsProj;  // [heads, hidden]
    private final int heads;
    private final int dim;
    private final int topK;

    DeepseekV4Indexer(DeepseekV4Compressor compressor, Linear qB, Linear weightsProj, int heads, int dim, int topK) {
        this.compressor = compressor;
        this.qB = qB;
        this.weightsProj = weightsProj;
        this.heads = heads;
        this.dim = dim;
        this.topK = topK;
    }

    DeepseekV4Indexer view() {
        return new DeepseekV4Indexer(compressor.view(), qB.view(), weightsProj.view(), heads, dim, topK);
    }

    /**
     * Per row of the batch, the chosen compressed-entry indices (at most top-k, all causally closed). Where no query has
     * more closed entries than top-k, each keeps all of them whatever their scores, so the scores are not made (nor the
     * queries and weights they read, nor their copy to the host): below {@code rate · index_topk} positions (2048 at
     * V4's released 4 and 512) a step's indexer is its compressor alone. {@value #SCORES_PROPERTY}{@code =always}
     * makes the scores there too (the same choice).
     */
    int[][] select(Backend b, Node x, Node qr, int[] positions, DeepseekV4Attention.Seg[] segs, int rate,
                   DeepseekV4Config c) {
        boolean alwaysScore = switch (System.getProperty(SCORES_PROPERTY, "needed")) {
            case "needed" -> false;
            case "always" -> true;
            case String v -> throw new IllegalArgumentException("-D" + SCORES_PROPERTY + "=" + v + ": expected needed or always");
        };
        try (Scratch ignored = Scratch.open(b.allocator())) {   // its values end with the choice, taped forward or not
            return choose(b, x, qr, positions, segs, rate, c, alwaysScore);
        }
    }

    private int[][] choose(Backend b, Node x, Node qr, int[] positions, DeepseekV4Attention.Seg[] segs, int rate,
                           DeepseekV4Config c, boolean alwaysScore) {
        int n = positions.length;
        // no tape: nothing here is recorded for backward, and x and qr keep the device copies their other readers made
        Node[] proj = compressor.project(null, b, x, n);
        int[][] out = new int[n][];
        int width = compressor.width();
        // every segment's scores are asked for before any is read, into one tensor on a device, which is read back once
        DeepseekV4Attention.Cached cached = DeepseekV4Attention.cached(segs, st -> st.index);
        Node[] advanced = cached.states().length == 0 ? new Node[0]
                : compressor.advanceAll(b, proj[0], proj[1], cached.starts(), cached.lens(), cached.states(), c.compressRope());
        Node[] keysOf = new Node[segs.length];
        long total = 0;
        for (int si = 0, j = 0; si < segs.length; si++) {
            DeepseekV4Attention.Seg s = segs[si];
            keysOf[si] = s.state() != null ? advanced[j++]
                    : compressor.compress(null, Ops.rows(null, null, proj[0], width, s.start(), s.len()),
                            Ops.rows(null, null, proj[1], width, s.start(), s.len()), c.compressRope());
            total += (long) s.len() * (keysOf[si].size() / dim);
        }
        int[][] closedOf = new int[segs.length][];
        int[] closedAll = new int[n];
        boolean within = true;
        for (int si = 0; si < segs.length; si++) {
            DeepseekV4Attention.Seg s = segs[si];
            int m = keysOf[si].size() / dim;
            closedOf[si] = new int[s.len()];
            for (int i = 0; i < s.len(); i++) {
                closedOf[si][i] = Math.min(m, (positions[s.start() + i] + 1) / rate);
                closedAll[s.start() + i] = closedOf[si][i];
                within &= closedOf[si][i] <= topK;
            }
        }
        if (within && !alwaysScore) {   // every query keeps every closed entry (DeepseekV4TopK.select's order at k = n)
            for (int si = 0; si < segs.length; si++) {
                for (int i = 0; i < segs[si].len(); i++) {
                    out[segs[si].start() + i] = java.util.stream.IntStream.range(0, closedOf[si][i]).toArray();
                }
            }
            return out;
        }
        TensorAllocator a = b.allocator();
        Tensor shared = total > 0 && !a.hostMemory() && b.takesDeepseekV4Attention()
                ? a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, total) : null;
        Scores[] pending = new Scores[segs.length];
        Node q = Ops.linear(null, b, qB, qr, n);                       // [N, heads*dim]
        q = Rope.apply(null, b, q, heads, dim, c.compressRope(), positions, false, true);
        Node w = Ops.linear(null, b, weightsProj, x, n);               // [N, heads], read only where the host scores
        float qScale = (float) (1 / Math.sqrt(dim));
        float wScale = (float) (1 / Math.sqrt(heads));
        // on a device the weights are scaled and the closed counts uploaded once for every segment, each segment's
        // scores one launch over its own rows and entries
        boolean batched = shared != null && q.onDevice() && w.onDevice();
        Tensor qAll = batched ? q.placed(a, n, heads, dim) : null;
        Tensor wAll = batched ? Ops.alloc(b, n, heads) : null;
        Tensor cAll = batched ? a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(closedAll, n)) : null;
        if (batched) {
            b.scale(w.placed(a, n, heads), wScale, wAll);
        }
        long at = 0;
        for (int si = 0; si < segs.length; si++) {
            DeepseekV4Attention.Seg s = segs[si];
            int m = keysOf[si].size() / dim;
            int[] closed = closedOf[si];
            Tensor into = shared == null || m == 0 ? null : shared.slice(0, at, at + (long) s.len() * m).reshape(s.len(), m);
            int end = s.start() + s.len();
            if (into != null && batched && b.indexerScores(qAll.slice(0, s.start(), end), keysOf[si].placed(a, m, dim),
                    wAll.slice(0, s.start(), end), cAll.slice(0, s.start(), end), qScale, into)) {
                pending[si] = new Scores(null, null, m, closed, true);
            } else {
                pending[si] = scores(b, q, s.start(), s.len(), keysOf[si], m, w, wScale, closed, qScale, into);
            }
            at += (long) s.len() * m;
        }
        Ops.release(a, wAll, cAll);
        float[] all = shared == null ? null : a.toFloats(shared);   // one wait for the device, one copy
        if (shared != null) {
            a.release(shared);
        }
        float[][] scoresOf = new float[segs.length][];
        int[] segOf = new int[n];   // each query row's segment (rows outside every segment: -1)
        java.util.Arrays.fill(segOf, -1);
        long work = 0;
        for (int si = 0, off = 0; si < segs.length; si++) {
            DeepseekV4Attention.Seg s = segs[si];
            int m = pending[si].entries();
            scoresOf[si] = pending[si].shared ? java.util.Arrays.copyOfRange(all, off, off + s.len() * m) : pending[si].read(a);
            off += s.len() * m;
            java.util.Arrays.fill(segOf, s.start(), s.start() + s.len(), si);
            work += (long) s.len() * m;
        }
        // each query's choice its own, over its closed entries only; every query of every sequence in parallel
        Ops.forRows(n, n == 0 ? 0 : work * 8 / n, row -> {
            int si = segOf[row];
            if (si < 0) {
                return;
            }
            int m = pending[si].entries();
            int i = row - segs[si].start();
            int close = pending[si].closed()[i];
            float[] score = java.util.Arrays.copyOfRange(scoresOf[si], i * m, i * m + close);
            out[row] = DeepseekV4TopK.select(score, Math.min(topK, close));
        });
        return out;
    }

    /**
     * A segment's scores [len, M]: on the host already, or in device memory until {@link #read} (which copies them back
     * and releases the device's tensor).
     */
    static final class Scores {
        private float[] host;
        private Tensor device;
        private final int entries;
        private final int[] closed;
        final boolean shared;   // written into the caller's tensor, which the caller reads

        Scores(float[] host, Tensor device, int entries, int[] closed) {
            this(host, device, entries, closed, false);
        }

        Scores(float[] host, Tensor device, int entries, int[] closed, boolean shared) {
            this.host = host;
            this.device = device;
            this.entries = entries;
            this.closed = closed;
            this.shared = shared;
        }

        int entries() {
            return entries;
        }

        int[] closed() {
            return closed;
        }

        float[] read(TensorAllocator a) {
            if (host == null) {
                host = a.toFloats(device);
                a.release(device);
                device = null;
            }
            return host;
        }
    }

    /**
     * The scores [len, M] of a segment's queries (rows start.. of q [N, heads·dim]) against its M entries:
     * {@code Σ_h relu(q_h·k_m) · qScale · wq[i, h]} for the closed entries, -inf for the others, where wq is the
     * segment's rows of the weights w [N, heads] times {@code wScale}. On a device backend that takes it ({@link
     * Backend#indexerScores}: the CUDA backend, in exact mode too) the weights are scaled and the products run there, and
     * the scores come back; otherwise here, each query and entry in turn.
     */
    Scores scores(Backend b, Node qn, int start, int len, Node keyNode, int m, Node w, float wScale, int[] closed,
                  float qScale) {
        return scores(b, qn, start, len, keyNode, m, w, wScale, closed, qScale, null);
    }

    /**
     * As {@link #scores(Backend, Node, int, int, Node, int, Node, float, int[], float)}; where the device takes them and
     * {@code into} [len, M] (of its memory) is given, the scores are written there, for the caller to read (a
     * {@link Scores#shared} result, which holds nothing of its own).
     */
    Scores scores(Backend b, Node qn, int start, int len, Node keyNode, int m, Node w, float wScale, int[] closed,
                  float qScale, Tensor into) {
        if (m == 0) {   // no entries yet: nothing to score, nothing read back
            return new Scores(new float[0], null, 0, closed);
        }
        TensorAllocator a = b.allocator();
        if (!a.hostMemory() && b.takesDeepseekV4Attention()) {
            int rows = qn.size() / (heads * dim);
            Tensor qt = qn.onDevice() ? qn.placed(a, rows, heads, dim).slice(0, start, start + len)
                    : Ops.device(a, java.util.Arrays.copyOfRange(qn.v(), start * heads * dim, (start + len) * heads * dim),
                    len, heads, dim);
            Tensor kt = keyNode.placed(a, m, dim);   // the node's device copy, made once and kept with it
            Tensor wt = Ops.alloc(b, len, heads);
            b.scale(w.placed(a, rows, heads).slice(0, start, start + len), wScale, wt);
            Tensor ct = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(closed, len));
            Tensor st = into != null ? into : a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, len, m);
            boolean taken = b.indexerScores(qt, kt, wt, ct, qScale, st);
            Ops.release(a, wt, ct);
            if (!qn.onDevice()) {
                a.release(qt);
            }
            if (taken) {
                return into != null ? new Scores(null, null, m, closed, true) : new Scores(null, st, m, closed);
            }
            if (into == null) {
                a.release(st);
            }
        }
        float[] q = qn.v();
        float[] keys = keyNode.v();
        float[] wv = w.v();
        float[] wq = new float[len * heads];   // the weights times heads^-1/2, as the host's sum takes them
        for (int i = 0; i < wq.length; i++) {
            wq[i] = wv[start * heads + i] * wScale;
        }
        float[] score = new float[len * m];
        java.util.Arrays.fill(score, Float.NEGATIVE_INFINITY);
        for (int i = 0; i < len; i++) {
            int row = start + i;
            for (int e = 0; e < closed[i]; e++) {
                float acc = 0;
                for (int h = 0; h < heads; h++) {
                    float dot = 0;
                    for (int k = 0; k < dim; k++) {
                        dot += q[(row * heads + h) * dim + k] * keys[e * dim + k];
                    }
                    acc += Math.max(dot, 0f) * qScale * wq[i * heads + h];
                }
                score[i * m + e] = acc;
            }
        }
        return new Scores(score, null, m, closed);
    }
}
