package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * The hyper-connections' collapse and expansion ({@link DeepseekV4HyperConnection}) on a device backend, the streams
 * [N, hc, H] kept in its memory. Each forward is one call where the backend has it ({@link
 * Backend#hyperConnectionCollapse}, {@link Backend#hyperConnectionExpand}); otherwise, and in every backward, they are
 * written with the backend's MoE row operations: a token's hc streams are its hc "pairs" (rows r·hc + j of the
 * streams), so the collapse is {@link Backend#moeCombineGrouped} with the pre mixes as the weights, and the expansion's
 * terms are {@link Backend#moeGather}s of f and of each stream weighted by the post and comb mixes; the mixes' gradients
 * are {@link Backend#moeWeightGrad}'s dot products. Either way each output element is formed as the host's loops form
 * it (the products, then their sums in the same order). The mixes [N, (2+hc)·hc] are where their map made them (the
 * device's, {@link Backend#hyperConnectionMix}, or the host's, uploaded once); their gradients come back to the host.
 */
final class HyperConnectionOps {
    private HyperConnectionOps() {
    }

    /**
     * y [N, H] = Σ_j pre[r, j] · streams[r, j] with pre the first hc columns of w [N, width]: in one call where the backend
     * has it ({@link Backend#hyperConnectionCollapse}), else as a weighted combine of each token's stream rows.
     */
    static Node collapse(GradTape t, Backend b, Node w, int width, Node streams, int hc, int hidden) {
        TensorAllocator a = b.allocator();
        int n = streams.size() / (hc * hidden);
        Tensor y = alloc(a, n, hidden);
        Tensor[] composed = new Tensor[2];   // pre and the pairs, where the composed form made them
        if (!b.hyperConnectionCollapse(w.placed(a, n, width), streams.placed(a, n, hc, hidden), y)) {
            composed[0] = columns(b, w, n, width, 0, hc);
            composed[1] = iota(a, n * hc);
            b.moeCombineGrouped(streams.placed(a, (long) n * hc, hidden), composed[1], composed[0], y, false);
        }
        Node yn = Node.onDevice(a, y);
        if (t == null) {
            Ops.release(a, composed);
            return yn;
        }
        t.record(yn, () -> {
            Tensor pre = composed[0] != null ? composed[0] : columns(b, w, n, width, 0, hc);
            Tensor pairs = composed[1] != null ? composed[1] : iota(a, n * hc);
            Tensor dy = yn.gradPlaced(a, n, hidden);
            Tensor dpre = alloc(a, n, hc);
            b.moeWeightGrad(dy, streams.placed(a, (long) n * hc, hidden), pairs, dpre);
            addColumns(w.grad(), a.toFloats(dpre), n, width, 0, 1, hc);
            Tensor ds = alloc(a, (long) n * hc, hidden);
            b.moeGather(dy, pairs, hc, pre, ds);
            streams.accDevice(b, ds);
            Ops.release(a, dpre, pre, pairs);
        });
        return yn;
    }

    /**
     * New streams [N, hc, H]: out[r, k] = post[r, k] · f[r] + Σ_j comb[r, j, k] · streams[r, j] (j ascending), in one
     * call where the backend has it ({@link Backend#hyperConnectionExpand}), else as gathers of f and of each stream
     * weighted by the mixes' columns.
     */
    static Node expand(GradTape t, Backend b, Node w, int mixes, Node f, Node streams, int hc, int hidden) {
        TensorAllocator a = b.allocator();
        int n = f.size() / hidden;
        Tensor y = alloc(a, (long) n * hc, hidden);
        Tensor post = null;
        Tensor[] comb = null;
        Tensor pairs = null;
        if (!b.hyperConnectionExpand(w.placed(a, n, mixes), f.placed(a, n, hidden), streams.placed(a, n, hc, hidden),
                y.reshape(n, hc, hidden))) {
            post = columns(b, w, n, mixes, hc, hc);
            comb = combColumns(b, w, n, mixes, hc);
            pairs = iota(a, n * hc);
            Tensor ft = f.placed(a, n, hidden);
            Tensor s = streams.placed(a, n, hc, hidden);
            b.moeGather(ft, pairs, hc, post, y);
            Tensor sj = alloc(a, n, hidden);
            Tensor term = alloc(a, (long) n * hc, hidden);
            for (int j = 0; j < hc; j++) {
                b.copy(s.select(1, j), sj);
                b.moeGather(sj, pairs, hc, comb[j], term);
                b.add(y, term, y);
            }
            Ops.release(a, sj, term);
        }
        Node yn = Node.onDevice(a, y);
        if (t == null) {
            Ops.release(a, post, pairs);
            if (comb != null) {
                Ops.release(a, comb);
            }
            return yn;
        }
        Tensor[] composed = {post, pairs};
        Tensor[][] combMade = {comb};
        t.record(yn, () -> {
            Tensor postT = composed[0] != null ? composed[0] : columns(b, w, n, mixes, hc, hc);
            Tensor pairsT = composed[1] != null ? composed[1] : iota(a, n * hc);
            Tensor[] combT = combMade[0] != null ? combMade[0] : combColumns(b, w, n, mixes, hc);
            Tensor dy = yn.gradPlaced(a, (long) n * hc, hidden);
            Tensor df = alloc(a, n, hidden);
            b.moeCombineGrouped(dy, pairsT, postT, df, false);                 // Σ_k post[r, k] · dy[r, k]
            Tensor dpost = alloc(a, n, hc);
            b.moeWeightGrad(f.placed(a, n, hidden), dy, pairsT, dpost);     // ⟨f[r], dy[r, k]⟩
            f.accDevice(b, df);
            float[] dw = w.grad();
            addColumns(dw, a.toFloats(dpost), n, mixes, hc, 1, hc);
            Tensor ds = alloc(a, n, hc, hidden);
            Tensor dsj = alloc(a, n, hidden);
            Tensor dcomb = alloc(a, n, hc);
            Tensor sk = alloc(a, n, hidden);
            Tensor s3 = streams.placed(a, n, hc, hidden);
            for (int j = 0; j < hc; j++) {
                b.copy(s3.select(1, j), sk);
                b.moeWeightGrad(sk, dy, pairsT, dcomb);                      // ⟨streams[r, j], dy[r, k]⟩
                addColumns(dw, a.toFloats(dcomb), n, mixes, 2 * hc + j * hc, 1, hc);
                b.moeCombineGrouped(dy, pairsT, combT[j], dsj, false);        // Σ_k comb[r, j, k] · dy[r, k]
                b.copy(dsj, ds.select(1, j));
            }
            Ops.release(a, dsj, dcomb, sk, dpost, postT, pairsT);
            Ops.release(a, combT);
            streams.accDevice(b, ds);
        });
        return yn;
    }

    /** comb[j] [n, hc] (over k) for each stream j: the mixes' columns 2·hc + j·hc .. (see {@link #columns}). */
    private static Tensor[] combColumns(Backend b, Node w, int n, int mixes, int hc) {
        Tensor[] comb = new Tensor[hc];
        for (int j = 0; j < hc; j++) {
            comb[j] = columns(b, w, n, mixes, 2 * hc + j * hc, hc);   // comb[r, j, k] over k
        }
        return comb;
    }

    /** The embedding rows e [N, H] repeated into hc streams [N, hc, H] in the backend's memory (e released). */
    static Node streams(Backend b, Tensor e, int n, int hc, int hidden) {
        TensorAllocator a = b.allocator();
        Tensor pairs = iota(a, n * hc);
        Tensor y = alloc(a, (long) n * hc, hidden);
        b.moeGather(e, pairs, hc, null, y);
        Ops.release(a, pairs, e);
        return Node.onDevice(a, y.reshape(n, (long) hc * hidden));
    }

    /**
     * Columns [first, first + count) of each row of the mixes w [n, width] as an f32 [n, count] tensor of b's memory: a
     * strided copy there where w is (the device's map made it), else the host's columns uploaded.
     */
    private static Tensor columns(Backend b, Node w, int n, int width, int first, int count) {
        TensorAllocator a = b.allocator();
        if (w.onDevice()) {
            Tensor c = alloc(a, n, count);
            b.copy(w.placed(a, n, width).slice(1, first, first + count), c);
            return c;
        }
        float[] v = w.v();
        float[] c = new float[n * count];
        for (int r = 0; r < n; r++) {
            System.arraycopy(v, r * width + first, c, r * count, count);
        }
        return Ops.device(a, c, n, count);
    }

    /** The inverse of {@link #columns}: adds d [n, count] into those columns of g [n, width]. */
    private static void addColumns(float[] g, float[] d, int n, int width, int first, int step, int count) {
        for (int r = 0; r < n; r++) {
            for (int i = 0; i < count; i++) {
                g[r * width + first + i * step] += d[r * count + i];
            }
        }
    }

    /**
     * 0, 1, ..., n - 1 as an i32 tensor of a's memory: each stream row is its own pair. A fresh tensor the caller
     * releases, copied on the device from the longest one uploaded so far for {@code a} (so that a step uploads none
     * once the longest has been seen).
     */
    private static Tensor iota(TensorAllocator a, int n) {
        Tensor t = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I32, n);
        synchronized (IOTAS) {   // the copy too: another thread's longer upload releases this one
            Tensor longest = IOTAS.get(a);
            if (longest == null || longest.numel() < n) {
                int[] v = new int[Math.max(n, 1024)];
                for (int i = 0; i < v.length; i++) {
                    v[i] = i;
                }
                Tensor old = IOTAS.put(a, longest = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(v, v.length)));
                if (old != null) {
                    a.release(old);
                }
            }
            if (a.hostMemory()) {
                t.copyFrom(longest.slice(0, 0, n));
            } else {
                a.copy(longest.slice(0, 0, n), t);
            }
        }
        return t;
    }

    private static final java.util.Map<TensorAllocator, Tensor> IOTAS = new java.util.WeakHashMap<>();

    private static Tensor alloc(TensorAllocator a, long... shape) {
        return a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, shape);
    }
}
