package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.model.nn.Linear;

/**
 * The KV compressor of a compressed attention layer (and of the lightning indexer): every
 * {@code rate} source tokens become one entry, the softmax-gated (gate + {@code ape}) sum of the
 * tokens' projected KV per channel, RMS-normalised and rotated at its window's first position
 * with the compressed branches' rope. With {@code overlap} (compressed-sparse layers) the
 * projections are 2·d wide: entry w pools the first half of window w-1 with the second half of
 * window w over 2·rate slots. Tokens of an unfinished window wait in the cache's buffer.
 */
final class DeepseekV4Compressor {
    final Linear wkv;    // [width, hidden]
    final Linear wgate;  // [width, hidden]
    final float[] ape;   // [rate, width]
    final float[] norm;  // [d]
    final int rate;
    final int dim;       // d, the entry width
    final boolean overlap;
    private final float eps;

    /**
     * One sequence's compressor state: the open window's raw rows, the emitted entries, the overlap. Its values are its
     * own (a fork copies them); the open window's rows stay where the projections ran (device memory on a device
     * backend), and the entries, pooled on the host, keep one device copy made at their first use there.
     */
    static final class State {
        final java.util.List<Node> kvRows = new java.util.ArrayList<>();    // the open window's raw projections,
        final java.util.List<Node> gateRows = new java.util.ArrayList<>();  // as they came ([rows, width] each)
        int bufRows;                     // rows in the open window
        Node entries;                    // [count, d], or null
        int count;
        float[] overlapKv;               // [rate, d] first half of the last full window, or null
        float[] overlapGate;             // [rate, d] with ape added, or null

        /** Copies this state into {@code c} (a fork's), values copied in {@code a}'s memory; the arrays are shared. */
        void copyInto(State c, org.orbitrl.kernels.TensorAllocator a) {
            for (Node n : kvRows) {
                c.kvRows.add(Ops.stateCopy(a, n));
            }
            for (Node n : gateRows) {
                c.gateRows.add(Ops.stateCopy(a, n));
            }
            c.bufRows = bufRows;
            c.entries = Ops.stateCopy(a, entries);
            c.count = count;
            c.overlapKv = overlapKv;
            c.overlapGate = overlapGate;
        }

        /** Releases the state's values in {@code a}'s memory. */
        void release(org.orbitrl.kernels.TensorAllocator a) {
            dropRows(a);
            if (entries != null) {
                entries.release(a);
                entries = null;
            }
        }

        private void dropRows(org.orbitrl.kernels.TensorAllocator a) {
            for (java.util.List<Node> rows : java.util.List.of(kvRows, gateRows)) {
                for (Node n : rows) {
                    if (a != null) {
                        n.release(a);
                    }
                }
                rows.clear();
            }
            bufRows = 0;
        }

        /** Floats the state holds. */
        long floats() {
            long f = entries == null ? 0 : entries.size();
            for (java.util.List<Node> rows : java.util.List.of(kvRows, gateRows)) {
                for (Node n : rows) {
                    f += n.size();
                }
            }
            return f + (overlapKv == null ? 0 : overlapKv.length + overlapGate.length);
        }

        /** Floats of the emitted entries. */
        long entryFloats() {
            return entries == null ? 0 : entries.size();
        }
    }

    DeepseekV4Compressor(Linear wkv, Linear wgate, float[] ape, float[] norm, int rate, int dim, boolean overlap,
                         float eps) {
        this.wkv = wkv;
        this.wgate = wgate;
        this.ape = ape;
        this.norm = norm;
        this.rate = rate;
        this.dim = dim;
        this.overlap = overlap;
        this.eps = eps;
    }

    DeepseekV4Compressor view() {
        return new DeepseekV4Compressor(wkv.view(), wgate.view(), ape, norm, rate, dim, overlap, eps);
    }

    int width() {
        return overlap ? 2 * dim : dim;
    }

    /** Both projections of x [N, hidden]: {kv, gate}, each [N, width]. */
    Node[] project(GradTape t, Backend b, Node x, int n) {
        return new Node[] {Ops.linear(t, b, wkv, x, n), Ops.linear(t, b, wgate, x, n)};
    }

    /**
     * The rows [start, start+len) of a projection [N, width] as a cached sequence's state takes them ({@link
     * Ops#stateRows}: a value of its own, in device memory where the projection is), for {@link #compress}.
     */
    Node stateRows(Backend b, Node projection, int start, int len) {
        return Ops.stateRows(b, projection, width(), start, len);
    }

    /**
     * Adds a segment's new projected rows kv, gate [len, width] and returns every entry of the
     * sequence so far [M, d]; with a state, the buffer, entries and overlap advance. A state takes kv and gate as they
     * are ({@link #stateRows}: values of their own, which it keeps or releases): while no window closes they join the
     * open window's rows where they are (device memory on a device backend), with no copy; a closing window's rows are
     * joined on {@code b} and read on the host, where the pooling runs. The state's entries are returned as they are
     * held (the caller does not release them).
     */
    Node compress(GradTape t, Backend b, Node kv, Node gate, State st, RopeTable rope) {
        if (t != null && st != null) {
            throw new IllegalStateException("a taped compression carries no sequence state (training runs hold none)");
        }
        int w = width();
        int len = kv.size() / w;
        if (st != null && st.bufRows + len < rate) {   // no window closes: the rows wait in the state
            st.kvRows.add(kv);
            st.gateRows.add(gate);
            st.bufRows += len;
            return st.entries == null ? new Node(new float[0]) : st.entries;
        }
        Node kvAll = st == null || st.kvRows.isEmpty() ? kv : Ops.concatRows(null, b, w, join(st.kvRows, kv));
        Node gateAll = st == null || st.gateRows.isEmpty() ? gate : Ops.concatRows(null, b, w, join(st.gateRows, gate));
        int rows = kvAll.size() / w;
        int windows = rows / rate;
        int usable = windows * rate;
        int first = st == null ? 0 : st.count * rate;
        Node fresh = null;
        if (windows > 0) {
            Node pooled = pool(t, kvAll, gateAll, windows, st == null ? null : st.overlapKv,
                    st == null ? null : st.overlapGate);
            Node normed = Ops.rmsNorm(t, null, pooled, dim, norm, eps);
            int half = rope.rotaryDim() / 2;
            float[] cos = new float[windows * half];
            float[] sin = new float[windows * half];
            for (int i = 0; i < windows; i++) {
                for (int j = 0; j < half; j++) {
                    cos[i * half + j] = rope.cos(first + i * rate, j);
                    sin[i * half + j] = rope.sin(first + i * rate, j);
                }
            }
            fresh = Rope.apply(t, normed, 1, dim, cos, sin, false);
        }
        if (st == null) {
            return fresh == null ? new Node(new float[0]) : fresh;
        }
        org.orbitrl.kernels.TensorAllocator a = b == null ? null : b.allocator();
        Node restKv = Ops.stateRows(b, kvAll, w, usable, rows - usable);
        Node restGate = Ops.stateRows(b, gateAll, w, usable, rows - usable);
        float[] kvAllV = kvAll.v();
        float[] gateAllV = gateAll.v();
        st.dropRows(a);
        release(a, kv, gate);   // the state took them: joined into kvAll, gateAll (released with the caller's scratch)
        if (restKv != null) {
            st.kvRows.add(restKv);
            st.gateRows.add(restGate);
            st.bufRows = rows - usable;
        }
        if (overlap) {
            st.overlapKv = new float[rate * dim];
            st.overlapGate = new float[rate * dim];
            for (int j = 0; j < rate; j++) {
                int row = (windows - 1) * rate + j;
                for (int c = 0; c < dim; c++) {
                    st.overlapKv[j * dim + c] = kvAllV[row * w + c];
                    st.overlapGate[j * dim + c] = gateAllV[row * w + c] + ape[j * w + c];
                }
            }
        }
        float[] old = st.entries == null ? new float[0] : st.entries.v();
        float[] e = java.util.Arrays.copyOf(old, old.length + fresh.size());
        System.arraycopy(fresh.v(), 0, e, old.length, fresh.size());
        release(a, st.entries);
        st.entries = Scratch.unscoped(() -> new Node(e));
        st.count += windows;
        return st.entries;
    }

    private static Node[] join(java.util.List<Node> rows, Node last) {
        Node[] parts = rows.toArray(new Node[rows.size() + 1]);
        parts[rows.size()] = last;
        return parts;
    }

    private static void release(org.orbitrl.kernels.TensorAllocator a, Node... ns) {
        for (Node n : ns) {
            if (n != null && a != null) {
                n.release(a);
            }
        }
    }

    /** The gated pooling of the first {@code windows} full windows of kv, gate [rows, width] -> [windows, d]. */
    private Node pool(GradTape t, Node kv, Node gate, int windows, float[] priorKv, float[] priorGate) {
        int w = width();
        int slots = overlap ? 2 * rate : rate;
        float[] kvv = kv.v();
        float[] gatev = gate.v();
        float[] y = new float[windows * dim];
        float[] probs = new float[windows * dim * slots];   // softmax weights, for backward
        int[] src = new int[windows * dim * slots];          // flat index into kv/gate, -1: prior, -2: empty
        // a window's entries read only its own slots; each written element is the window's own, so the results do not
        // depend on the threads (and in the backward each source element belongs to one window's slot)
        Ops.forRows(windows, (long) dim * slots * 8, win -> {
            float[] logit = new float[slots];
            float[] val = new float[slots];
            for (int c = 0; c < dim; c++) {
                int base = (win * dim + c) * slots;
                float max = Float.NEGATIVE_INFINITY;
                for (int s = 0; s < slots; s++) {
                    int j;
                    int ch;
                    int row;
                    if (overlap && s < rate) {
                        j = s;
                        ch = c;
                        row = (win - 1) * rate + j;
                        if (win == 0) {
                            if (priorKv == null) {
                                src[base + s] = -2;
                                logit[s] = Float.NEGATIVE_INFINITY;
                                val[s] = 0;
                            } else {
                                src[base + s] = -1;
                                logit[s] = priorGate[j * dim + c];
                                val[s] = priorKv[j * dim + c];
                            }
                            max = Math.max(max, logit[s]);
                            continue;
                        }
                    } else {
                        j = overlap ? s - rate : s;
                        ch = overlap ? dim + c : c;
                        row = win * rate + j;
                    }
                    src[base + s] = row * w + ch;
                    logit[s] = gatev[row * w + ch] + ape[j * w + ch];
                    val[s] = kvv[row * w + ch];
                    max = Math.max(max, logit[s]);
                }
                float sum = 0;
                for (int s = 0; s < slots; s++) {
                    float e = logit[s] == Float.NEGATIVE_INFINITY ? 0f : (float) Math.exp(logit[s] - max);
                    probs[base + s] = e;
                    sum += e;
                }
                float acc = 0;
                for (int s = 0; s < slots; s++) {
                    probs[base + s] /= sum;
                    acc += probs[base + s] * val[s];
                }
                y[win * dim + c] = acc;
            }
        });
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dkv = kv.grad();
                float[] dg = gate.grad();
                Ops.forRows(windows, (long) dim * slots, win -> {
                    for (int i = win * dim; i < (win + 1) * dim; i++) {
                        float out = y[i];
                        for (int s = 0; s < slots; s++) {
                            int k = src[i * slots + s];
                            if (k < 0) {
                                continue;
                            }
                            float p = probs[i * slots + s];
                            dkv[k] += p * dy[i];
                            dg[k] += p * dy[i] * (kvv[k] - out);
                        }
                    }
                });
            });
        }
        return yn;
    }
}
