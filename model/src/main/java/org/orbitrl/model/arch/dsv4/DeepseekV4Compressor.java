package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.MemoryCategory;
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
    /** The entries' first allocation (rows), doubled as they grow ({@link StateRows#capacityFor}). */
    static final int ENTRIES_FIRST = 16;

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
     * own (a fork copies them). The open window's rows and the entries are {@link StateRows}: in device memory on a
     * device backend, each step's rows copied in behind the ones kept, the entries pooled on the host and appended
     * there a window at a time (only the new entries cross, not every entry again).
     */
    static final class State {
        private StateRows kv;            // the open window's raw projections [rows, width]
        private StateRows gate;
        private StateRows entries;       // [count, d]
        float[] overlapKv;               // [rate, d] first half of the last full window, or null
        float[] overlapGate;             // [rate, d] with ape added, or null

        /** Rows in the open window. */
        int bufRows() {
            return kv == null ? 0 : kv.rows();
        }

        /** Entries emitted so far. */
        int count() {
            return entries == null ? 0 : entries.rows();
        }

        /** The entries [count, d] as a value the state holds (null: none yet), the same node until a window closes. */
        Node entries() {
            return entries == null ? null : entries.value();
        }

        /** Whether the open window's rows (if any) live in device memory. */
        boolean openRowsOnDevice() {
            return kv == null || kv.rows() == 0 || kv.onDevice() && gate.onDevice();
        }

        /** Copies this state into {@code c} (a fork's), values copied in {@code a}'s memory; the arrays are shared. */
        void copyInto(State c, org.orbitrl.kernels.TensorAllocator a) {
            c.kv = kv == null ? null : kv.copy(a);
            c.gate = gate == null ? null : gate.copy(a);
            c.entries = entries == null ? null : entries.copy(a);
            c.overlapKv = overlapKv;
            c.overlapGate = overlapGate;
        }

        /** Releases the state's values in {@code a}'s memory. */
        void release(org.orbitrl.kernels.TensorAllocator a) {
            for (StateRows r : new StateRows[] {kv, gate, entries}) {
                if (r != null) {
                    r.release(a);
                }
            }
        }

        /** Floats the state holds. */
        long floats() {
            long f = entryFloats();
            for (StateRows r : new StateRows[] {kv, gate}) {
                f += r == null ? 0 : r.floats();
            }
            return f + (overlapKv == null ? 0 : overlapKv.length + overlapGate.length);
        }

        /** Floats of the emitted entries. */
        long entryFloats() {
            return entries == null ? 0 : entries.floats();
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
     * Adds new projected rows kv, gate [len, width] of a sequence without a decode state (a training or one-shot run,
     * taped or not) and returns its entries [M, d].
     */
    Node compress(GradTape t, Node kv, Node gate, RopeTable rope) {
        int w = width();
        int windows = kv.size() / w / rate;
        if (windows == 0) {
            return new Node(new float[0]);
        }
        Node pooled = pool(t, kv, gate, windows, null, null);
        return entries(t, pooled, windows, 0, rope);
    }

    /**
     * Adds a cached sequence's new projected rows, rows [start, start+len) of kv and gate [N, width], to its state and
     * returns its entries so far [M, d] (M may be 0) as the state holds them (the caller does not release them).
     * The rows join the open window where the state keeps it (device memory on a device backend, rate rows at most);
     * when windows close, the open window's rows (keptKv and keptGate where {@link #advanceAll} read them already,
     * else read here) and the new ones are pooled on the host, the new entries appended to the state's and the rows of
     * the next window kept.
     */
    private Node advance(Backend b, Node kv, Node gate, int start, int len, State st, RopeTable rope, float[] keptKv,
                         float[] keptGate) {
        int w = width();
        open(b, st);
        int have = st.kv.rows();
        if (have + len < rate) {   // no window closes: the rows wait in the state, which holds rate rows at most
            st.kv.append(b, kv, start, len);
            st.gate.append(b, gate, start, len);
            return st.count() == 0 ? new Node(new float[0]) : st.entries();
        }
        int rows = have + len;
        float[] kvAllV = joined(keptKv != null ? keptKv : st.kv.hostValues(), kv, start, len, w);
        float[] gateAllV = joined(keptGate != null ? keptGate : st.gate.hostValues(), gate, start, len, w);
        int windows = rows / rate;
        int usable = windows * rate;
        Node pooled = pool(null, new Node(kvAllV), new Node(gateAllV), windows, st.overlapKv, st.overlapGate);
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
        st.kv.clear();
        st.gate.clear();
        if (rows > usable) {   // the next window's first rows
            st.kv.append(b, new Node(java.util.Arrays.copyOfRange(kvAllV, usable * w, rows * w)), 0, rows - usable);
            st.gate.append(b, new Node(java.util.Arrays.copyOfRange(gateAllV, usable * w, rows * w)), 0, rows - usable);
        }
        st.entries.append(b, entries(null, pooled, windows, st.count() * rate, rope), 0, windows);
        return st.entries();
    }

    /**
     * {@link #advance} for several cached sequences at once, sequence i's new rows [starts[i], starts[i]+lens[i]) of kv
     * and gate with state states[i]: the single rows that close no window join their open windows in one operation for
     * all of them ({@link StateRows#appendRows}), the others one by one. Each sequence's entries.
     */
    Node[] advanceAll(Backend b, Node kv, Node gate, int[] starts, int[] lens, State[] states, RopeTable rope) {
        int n = states.length;
        Node[] out = new Node[n];
        int[] waiting = new int[n];
        int[] closing = new int[n];
        int m = 0;
        int cl = 0;
        for (int i = 0; i < n; i++) {
            open(b, states[i]);
            if (lens[i] == 1 && states[i].kv.rows() + 1 < rate) {
                waiting[m++] = i;
            } else {
                closing[cl++] = i;
            }
        }
        float[][][] kept = keptRows(b, states, closing, cl);   // every closing window's kept rows, read back at once
        for (int j = 0; j < cl; j++) {
            int i = closing[j];
            out[i] = advance(b, kv, gate, starts[i], lens[i], states[i], rope, kept[0][j], kept[1][j]);
        }
        if (m > 0) {
            StateRows[] kvs = new StateRows[m];
            StateRows[] gates = new StateRows[m];
            int[] rows = new int[m];
            for (int j = 0; j < m; j++) {
                State st = states[waiting[j]];
                kvs[j] = st.kv;
                gates[j] = st.gate;
                rows[j] = starts[waiting[j]];
            }
            StateRows.appendRows(b, kvs, kv, rows);
            StateRows.appendRows(b, gates, gate, rows);
            for (int j = 0; j < m; j++) {
                State st = states[waiting[j]];
                out[waiting[j]] = st.count() == 0 ? new Node(new float[0]) : st.entries();
            }
        }
        return out;
    }

    /**
     * The kept rows of the open windows of states[closing[0..count)], kv and gate, on the host: where they are in device
     * memory, gathered into one tensor there by one operation ({@link org.orbitrl.kernels.Backend#copySpans}) and read
     * back by one copy (one wait for the device, not two a sequence).
     * Entries are null where a state keeps no rows on the device (read where it is, if at all).
     */
    private float[][][] keptRows(Backend b, State[] states, int[] closing, int count) {
        float[][][] kept = new float[2][count][];
        long rows = 0;
        for (int j = 0; j < count; j++) {
            State st = states[closing[j]];
            rows += st.kv.onDevice() ? st.kv.rows() : 0;
        }
        if (rows == 0 || count < 2) {
            return kept;
        }
        int w = width();
        org.orbitrl.kernels.TensorAllocator a = b.allocator();
        org.orbitrl.kernels.Tensor all = a.allocate(MemoryCategory.ACTIVATIONS, org.orbitrl.kernels.DType.F32, 2 * rows, w);
        java.util.List<org.orbitrl.kernels.Tensor> srcs = new java.util.ArrayList<>();
        java.util.List<org.orbitrl.kernels.Tensor> dsts = new java.util.ArrayList<>();
        long at = 0;
        for (int j = 0; j < count; j++) {
            State st = states[closing[j]];
            int r = st.kv.onDevice() ? st.kv.rows() : 0;
            if (r > 0) {
                srcs.add(st.kv.value().placed(a, r, w));
                dsts.add(all.slice(0, at, at + r));
                srcs.add(st.gate.value().placed(a, r, w));
                dsts.add(all.slice(0, rows + at, rows + at + r));
                at += r;
            }
        }
        b.copySpans(srcs.toArray(new org.orbitrl.kernels.Tensor[0]), dsts.toArray(new org.orbitrl.kernels.Tensor[0]));
        float[] v = a.toFloats(all);
        a.release(all);
        at = 0;
        for (int j = 0; j < count; j++) {
            State st = states[closing[j]];
            int r = st.kv.onDevice() ? st.kv.rows() : 0;
            if (r > 0) {
                kept[0][j] = java.util.Arrays.copyOfRange(v, (int) (at * w), (int) ((at + r) * w));
                kept[1][j] = java.util.Arrays.copyOfRange(v, (int) ((rows + at) * w), (int) ((rows + at + r) * w));
                at += r;
            }
        }
        return kept;
    }

    /** Makes a sequence's state's stores at its first rows. */
    private void open(Backend b, State st) {
        if (st.kv == null) {
            st.kv = StateRows.growing(width(), rate, MemoryCategory.KV_CACHE);
            st.gate = StateRows.growing(width(), rate, MemoryCategory.KV_CACHE);
            st.entries = StateRows.growing(dim, ENTRIES_FIRST, MemoryCategory.KV_CACHE);
            st.kv.allocateFirst(b);      // the open window's memory from the first token, whatever the rows that come
            st.gate.allocateFirst(b);
        }
    }

    /** The kept rows followed by rows [start, start+len) of x [*, w], on the host (x read back where it is on a device). */
    private static float[] joined(float[] old, Node x, int start, int len, int w) {
        float[] xv = x.v();
        float[] y = java.util.Arrays.copyOf(old, old.length + len * w);
        System.arraycopy(xv, start * w, y, old.length, len * w);
        return y;
    }

    /** Pooled windows [windows, d] RMS-normalised and rotated at each window's first position (the first at {@code first}). */
    private Node entries(GradTape t, Node pooled, int windows, int first, RopeTable rope) {
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
        return Rope.apply(t, normed, 1, dim, cos, sin, false);
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
