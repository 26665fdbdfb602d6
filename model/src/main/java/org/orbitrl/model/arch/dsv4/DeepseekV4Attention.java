package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.spec.AttentionKind;

/**
 * DeepSeek V4 attention: low-rank queries ({@code wq_a}, weighted RMSNorm, {@code wq_b}, then an
 * unweighted per-head RMSNorm), one shared K=V head ({@code wkv} + RMSNorm), interleaved partial
 * rope on the trailing channels, a per-head sink logit, and the grouped low-rank output
 * projection ({@code wo_a} per head group, then {@code wo_b}). Keys are the sliding window of
 * raw tokens plus, on compressed layers, the compressor's entries: all causally closed ones
 * (heavily compressed) or the lightning indexer's top-k (compressed sparse). Because V = K
 * carries rope, the output's rope channels are rotated back at the query position.
 */
final class DeepseekV4Attention {
    final Linear qA;        // [qLoraRank, hidden]
    final float[] qNorm;    // [qLoraRank]
    final Linear qB;        // [heads*headDim, qLoraRank]
    final Linear kv;        // [headDim, hidden]
    final float[] kvNorm;   // [headDim]
    final GroupedOutput oA; // wo_a: [groups*oLoraRank, heads*headDim/groups]
    final Linear oB;        // [hidden, groups*oLoraRank]
    final float[] sinks;    // [heads]
    final DeepseekV4Compressor compressor;   // null on sliding layers
    final DeepseekV4Indexer indexer;         // non-null on compressed-sparse layers
    final AttentionKind kind;
    private final DeepseekV4Config c;

    /**
     * One sequence's state of this layer: the last window-1 K=V rows and the compressors' states. Its values are the
     * state's own (a fork copies them): on a device backend they stay in device memory between steps, each replaced
     * value released as its successor is made.
     */
    static final class State {
        StateRows window;   // [rows, headDim], the latest positions; null before the first token
        final DeepseekV4Compressor.State comp = new DeepseekV4Compressor.State();
        final DeepseekV4Compressor.State index = new DeepseekV4Compressor.State();

        int windowRows() {
            return window == null ? 0 : window.rows();
        }

        /** Appends rows [from, from+count) of k [N, d] to the window, which keeps the latest {@code keep}. */
        void advanceWindow(Backend b, Node k, int from, int count, int d, int keep) {
            if (keep > 0) {
                window(d, keep).append(b, k, from, count);
            }
        }

        /** The window's rows (made at the first ask), which keep the latest {@code keep} (at least 1) of width d. */
        StateRows window(int d, int keep) {
            if (window == null) {
                window = StateRows.window(d, keep, org.orbitrl.kernels.MemoryCategory.KV_CACHE);
            }
            return window;
        }

        /** Copies this state into {@code c} (a fork's), values copied in {@code a}'s memory. */
        void copyInto(State c, org.orbitrl.kernels.TensorAllocator a) {
            c.window = window == null ? null : window.copy(a);
            comp.copyInto(c.comp, a);
            index.copyInto(c.index, a);
        }

        /** Releases the state's values in {@code a}'s memory (the state is not used afterwards). */
        void release(org.orbitrl.kernels.TensorAllocator a) {
            if (window != null) {
                window.release(a);
                window = null;
            }
            comp.release(a);
            index.release(a);
        }
    }

    /** The segments with a decode state, in order: their rows and the compressor state {@code which} picks. */
    record Cached(int[] starts, int[] lens, DeepseekV4Compressor.State[] states) {
    }

    static Cached cached(Seg[] segs, java.util.function.Function<State, DeepseekV4Compressor.State> which) {
        int m = 0;
        for (Seg s : segs) {
            m += s.state() != null ? 1 : 0;
        }
        int[] starts = new int[m];
        int[] lens = new int[m];
        DeepseekV4Compressor.State[] states = new DeepseekV4Compressor.State[m];
        for (int si = 0, j = 0; si < segs.length; si++) {
            if (segs[si].state() != null) {
                starts[j] = segs[si].start();
                lens[j] = segs[si].len();
                states[j++] = which.apply(segs[si].state());
            }
        }
        return new Cached(starts, lens, states);
    }

    /** One sequence's part of the batch: rows [start, start+len) at positions [pos0, pos0+len). */
    record Seg(int start, int len, int pos0, State state) {
    }

    DeepseekV4Attention(DeepseekV4Config c, AttentionKind kind, Linear qA, float[] qNorm, Linear qB, Linear kv,
                        float[] kvNorm, GroupedOutput oA, Linear oB, float[] sinks, DeepseekV4Compressor compressor,
                        DeepseekV4Indexer indexer) {
        this.c = c;
        this.kind = kind;
        this.qA = qA;
        this.qNorm = qNorm;
        this.qB = qB;
        this.kv = kv;
        this.kvNorm = kvNorm;
        this.oA = oA;
        this.oB = oB;
        this.sinks = sinks;
        this.compressor = compressor;
        this.indexer = indexer;
    }

    DeepseekV4Attention view() {
        return new DeepseekV4Attention(c, kind, qA.view(), qNorm, qB.view(), kv.view(), kvNorm, oA, oB.view(), sinks,
                compressor == null ? null : compressor.view(), indexer == null ? null : indexer.view());
    }

    private RopeTable rope() {
        return kind == AttentionKind.SLIDING ? c.mainRope() : c.compressRope();
    }

    /** x [N, hidden] (normed block input) -> [N, hidden]; positions [N]. */
    Node forward(GradTape t, Backend b, Node x, int[] positions, Seg[] segs) {
        int n = positions.length;
        int heads = c.heads();
        int d = c.headDim();
        float eps = c.rmsEps();
        RopeTable rope = rope();
        Node qr = Ops.rmsNorm(t, b, Ops.linear(t, b, qA, x, n), c.qLoraRank(), qNorm, eps);  // [N, qLoraRank]
        Node q = Ops.rmsNorm(t, b, Ops.linear(t, b, qB, qr, n), d, null, eps);               // [N, heads*d]
        q = Rope.apply(t, b, q, heads, d, rope, positions, false, true);
        Node k = Ops.rmsNorm(t, b, Ops.linear(t, b, kv, x, n), d, kvNorm, eps);               // [N, d]
        k = Rope.apply(t, b, k, 1, d, rope, positions, false, true);
        Node[] comp = compressor == null ? null : compressor.project(t, b, x, n);           // [N, width] x2
        int[][] picks = indexer == null ? null : indexer.select(b, x, qr, positions, segs, compressor.rate, c);
        Node[] entriesOf = new Node[segs.length];
        if (compressor != null) {
            int w = compressor.width();
            Cached cached = cached(segs, st -> st.comp);
            Node[] advanced = cached.states().length == 0 ? new Node[0]
                    : compressor.advanceAll(b, comp[0], comp[1], cached.starts(), cached.lens(), cached.states(), c.compressRope());
            for (int si = 0, j = 0; si < segs.length; si++) {
                Seg s = segs[si];
                entriesOf[si] = s.state() != null ? advanced[j++]
                        : compressor.compress(t, Ops.rows(t, null, comp[0], w, s.start(), s.len()),
                                Ops.rows(t, null, comp[1], w, s.start(), s.len()), c.compressRope());
            }
        }
        Node o = t == null ? decodeStep(b, q, k, entriesOf, picks, segs) : null;
        if (o == null) {
            o = bySequence(t, b, q, k, entriesOf, picks, segs);
        }
        o = Rope.apply(t, b, o, heads, d, rope, positions, true, true);
        Node g = oA.forward(t, b, o, n);                                                      // [N, groups*oLoraRank]
        return Ops.linear(t, b, oB, g, n);
    }

    /**
     * The attention [N, heads*d] of a decode step whose every sequence has one new token and a state, all in one call
     * ({@link Backend#sinkDecodeAttention}): each query over its window's rows, its own key and the entries it sees (on
     * a heavily compressed layer the closed ones, on a compressed-sparse one the indexer's choice), with no mask and
     * no per-sequence copies; then each window advances. Null, doing nothing, where the backend declines (exact mode,
     * the host backends) or a sequence brings more than one token: the caller then attends sequence by sequence (as
     * it does with {@code -Dorbit.v4.decodeBatch=off}, read at each call, for comparisons).
     */
    private Node decodeStep(Backend b, Node q, Node k, Node[] entriesOf, int[][] picks, Seg[] segs) {
        int n = segs.length;
        if (!Ops.keepsValues(b) || !q.onDevice() || !k.onDevice() || "off".equals(System.getProperty("orbit.v4.decodeBatch"))) {
            return null;
        }
        for (Seg s : segs) {
            if (s.len() != 1 || s.state() == null) {
                return null;
            }
        }
        int heads = c.heads();
        int d = c.headDim();
        org.orbitrl.kernels.TensorAllocator a = b.allocator();
        org.orbitrl.kernels.Tensor[] windows = new org.orbitrl.kernels.Tensor[n];
        org.orbitrl.kernels.Tensor[] entries = new org.orbitrl.kernels.Tensor[n];
        int[][] chosen = new int[n][];
        for (int si = 0; si < n; si++) {
            Seg s = segs[si];
            State st = s.state();
            int past = st.windowRows();
            windows[si] = past == 0 ? null : st.window.value().placed(a, past, d);
            int m = entriesOf[si] == null ? 0 : entriesOf[si].size() / d;
            if (m == 0) {
                continue;
            }
            entries[si] = entriesOf[si].placed(a, m, d);
            int p = s.pos0();
            if (kind == AttentionKind.HEAVILY_COMPRESSED) {
                int closed = Math.min(m, (p + 1) / compressor.rate);
                chosen[si] = closed == m ? null : java.util.stream.IntStream.range(0, closed).toArray();
            } else {
                chosen[si] = java.util.Arrays.stream(picks[s.start()]).filter(e -> e >= 0 && e < m).sorted().distinct().toArray();
            }
        }
        org.orbitrl.kernels.Tensor out = Ops.alloc(b, n, heads, d);
        org.orbitrl.kernels.Tensor sinkT = Ops.constant(b, sinks, new long[]{heads});
        if (!b.sinkDecodeAttention(q.placed(a, n, heads, d), windows, k.placed(a, n, d), entries, chosen, sinkT,
                (float) (1 / Math.sqrt(d)), out)) {
            a.release(out);
            return null;
        }
        if (c.slidingWindow() > 1) {   // a window of one position keeps no rows
            StateRows[] kept = new StateRows[n];
            int[] rows = new int[n];
            for (int si = 0; si < n; si++) {   // every window's new row in one operation
                kept[si] = segs[si].state().window(d, c.slidingWindow() - 1);
                rows[si] = segs[si].start();
            }
            StateRows.appendRows(b, kept, k, rows);
        }
        return Ops.made(b, out);
    }

    /** The attention [N, heads*d], each sequence's queries over its own keys under a mask in turn; windows advance. */
    private Node bySequence(GradTape t, Backend b, Node q, Node k, Node[] entriesOf, int[][] picks, Seg[] segs) {
        int heads = c.heads();
        int d = c.headDim();
        Node[] outs = new Node[segs.length];
        for (int si = 0; si < segs.length; si++) {
            Seg s = segs[si];
            State st = s.state();
            Node qs = Ops.rows(t, b, q, heads * d, s.start(), s.len());
            Node ks = Ops.rows(t, b, k, d, s.start(), s.len());
            int past = st == null ? 0 : st.windowRows();
            Node entries = entriesOf[si];
            int m = entries == null ? 0 : entries.size() / d;
            int keys = past + s.len() + m;
            float[] mask = new float[s.len() * keys];            // [len, keys] additive bias
            int pastKeys = past;
            Ops.forRows(s.len(), keys, i -> {
                int p = s.pos0() + i;
                for (int j = 0; j < pastKeys + s.len(); j++) {
                    int kp = s.pos0() - pastKeys + j;
                    boolean visible = kp <= p && p - kp < c.slidingWindow();
                    mask[i * keys + j] = visible ? 0f : Float.NEGATIVE_INFINITY;
                }
                int first = i * keys + pastKeys + s.len();   // the entries' columns
                if (kind == AttentionKind.HEAVILY_COMPRESSED) {
                    for (int e = 0; e < m; e++) {
                        mask[first + e] = e < (p + 1) / compressor.rate ? 0f : Float.NEGATIVE_INFINITY;
                    }
                } else if (m > 0) {
                    java.util.Arrays.fill(mask, first, first + m, Float.NEGATIVE_INFINITY);
                    for (int sel : picks[s.start() + i]) {
                        if (sel >= 0 && sel < m) {
                            mask[first + sel] = 0f;
                        }
                    }
                }
            });
            Node keyRows = Ops.concatRows(t, b, d, past == 0 ? null : st.window.value(), ks, entries);
            outs[si] = DeepseekV4SinkAttention.attend(t, b, qs, keyRows, mask, sinks, heads, d, (float) (1 / Math.sqrt(d)));
            if (st != null) {   // the window's next rows: the last window-1 of the window and the new keys
                st.advanceWindow(b, k, s.start(), s.len(), d, c.slidingWindow() - 1);
            }
        }
        return Ops.concatRows(t, b, heads * d, outs);                                      // [N, heads*d]
    }
}
