package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * Multi-query attention with per-head sink logits: for query i of head h,
 * {@code softmax([q·k_j·scale + mask_ij]_j ++ [sink_h])} drops the sink's share and weighs the
 * shared K=V rows. Rows whose keys are all masked cannot occur (a query always sees itself).
 * On a device backend that takes it ({@link Backend#sinkAttention}: the CUDA backend, whose exact mode
 * computes each query from the keys it sees alone, so that the blocks of queries below and the
 * decode step's shorter key list leave its bits as they are) the operands are copied there and the
 * products run there, forward and backward; otherwise (the host backends) it runs here on the host,
 * each query and head on its own.
 */
final class DeepseekV4SinkAttention {
    private DeepseekV4SinkAttention() {
    }

    /** q [T, heads, d], kv [S, d], mask [T, S] additive -> [T, heads, d]. */
    static Node attend(GradTape t, Backend b, Node q, Node kv, float[] mask, float[] sinks, int heads, int d, float scale) {
        if (!b.allocator().hostMemory() && b.takesDeepseekV4Attention()) {
            Node y = onBackend(t, b, q, kv, mask, sinks, heads, d, scale);
            if (y != null) {
                return y;
            }
        }
        return onHost(t, q, kv, mask, sinks, heads, d, scale);
    }

    /** Queries a block of the device's attention takes together (the keys it reads are those its queries see). */
    static final int QUERY_BLOCK = 256;

    /**
     * A block of queries [q0, q0 + rows) and the key rows its mask leaves visible to any of them: contiguous runs
     * [start[i], end[i]), {@code keys} rows in all.
     */
    record Block(int q0, int rows, int[] start, int[] end, int keys) {
        /** Whether the block reads every one of {@code s} keys. */
        boolean all(int s) {
            return keys == s;
        }
    }

    /**
     * The blocks of {@link #QUERY_BLOCK} queries of mask [T, S] with the keys each sees: a query sees its window of
     * raw keys and its chosen compressed entries, so a block reads a band and the entries, not every key.
     */
    static Block[] blocks(float[] mask, int tq, int s) {
        Block[] out = new Block[(tq + QUERY_BLOCK - 1) / QUERY_BLOCK];
        Ops.forRows(out.length, (long) QUERY_BLOCK * s, bi -> {
            int q0 = bi * QUERY_BLOCK;
            int rows = Math.min(QUERY_BLOCK, tq - q0);
            boolean[] seen = new boolean[s];
            for (int i = q0; i < q0 + rows; i++) {
                for (int j = 0; j < s; j++) {
                    seen[j] |= mask[i * s + j] != Float.NEGATIVE_INFINITY;
                }
            }
            int[] start = new int[s];
            int[] end = new int[s];
            int runs = 0;
            int keys = 0;
            for (int j = 0; j < s; j++) {
                if (seen[j]) {
                    if (runs > 0 && end[runs - 1] == j) {
                        end[runs - 1] = j + 1;
                    } else {
                        start[runs] = j;
                        end[runs++] = j + 1;
                    }
                    keys++;
                }
            }
            out[bi] = new Block(q0, rows, java.util.Arrays.copyOf(start, runs), java.util.Arrays.copyOf(end, runs), keys);
        });
        return out;
    }

    /** The block's mask rows over its keys [rows, keys], in the order of its runs (the mask itself where that is all). */
    private static float[] blockMask(float[] mask, int s, Block blk) {
        if (blk.all(s) && (long) blk.rows() * s == mask.length) {
            return mask;
        }
        float[] m = new float[blk.rows() * blk.keys()];
        for (int i = 0; i < blk.rows(); i++) {
            int o = i * blk.keys();
            for (int r = 0; r < blk.start().length; r++) {
                int len = blk.end()[r] - blk.start()[r];
                System.arraycopy(mask, (blk.q0() + i) * s + blk.start()[r], m, o, len);
                o += len;
            }
        }
        return m;
    }

    /** The block's key rows of kv [S, d] as one contiguous [keys, d] tensor (kv itself where it reads them all). */
    private static Tensor blockKeys(Backend b, Tensor kv, int s, Block blk) {
        if (blk.all(s)) {
            return kv;
        }
        Tensor k = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, blk.keys(), kv.size(1));
        int o = 0;
        for (int r = 0; r < blk.start().length; r++) {
            int len = blk.end()[r] - blk.start()[r];
            b.copy(kv.slice(0, blk.start()[r], blk.end()[r]), k.slice(0, o, o + len));
            o += len;
        }
        return k;
    }

    /**
     * {@link Backend#sinkAttention} on the operands in the backend's memory (where they are not already, copied there),
     * a block of queries at a time over the keys the block sees ({@link #blocks}: the masked keys add nothing to a
     * query's sums, so leaving them out changes no term); the blocks' masks are copied there again for the backward
     * rather than held. Null where the backend declines.
     */
    private static Node onBackend(GradTape t, Backend b, Node q, Node kv, float[] mask, float[] sinks, int heads, int d,
                                  float scale) {
        TensorAllocator a = b.allocator();
        int tq = q.size() / (heads * d);
        int s = kv.size() / d;
        boolean keep = Ops.keepsValues(b);
        Block[] blocks = blocks(mask, tq, s);
        Tensor qt = keep ? q.placed(a, tq, heads, d) : Ops.device(a, q.v(), tq, heads, d);
        Tensor kvt = keep ? kv.placed(a, s, d) : Ops.device(a, kv.v(), s, d);
        Tensor st = Ops.device(a, sinks, heads);
        Tensor out = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, tq, heads, d);
        for (Block blk : blocks) {
            Tensor kb = blockKeys(b, kvt, s, blk);
            Tensor mb = Ops.device(a, blockMask(mask, s, blk), blk.rows(), blk.keys());
            boolean taken = b.sinkAttention(qt.slice(0, blk.q0(), blk.q0() + blk.rows()), kb, mb, st, scale,
                    out.slice(0, blk.q0(), blk.q0() + blk.rows()));
            Ops.release(a, mb);
            if (kb != kvt) {
                a.release(kb);
            }
            if (!taken) {
                Ops.release(a, st, out);
                if (!keep) {
                    Ops.release(a, qt, kvt);
                }
                return null;
            }
        }
        a.release(st);
        Node y = Ops.made(b, out);
        if (!keep) {   // a layer's queries are large to hold in device memory when its values live on the host
            Ops.release(a, qt, kvt);
        }
        if (t != null) {
            t.record(y, () -> {
                Tensor bq = keep ? q.placed(a, tq, heads, d) : Ops.device(a, q.v(), tq, heads, d);
                Tensor bkv = keep ? kv.placed(a, s, d) : Ops.device(a, kv.v(), s, d);
                Tensor bs = Ops.device(a, sinks, heads);
                Tensor dy = y.gradPlaced(a, tq, heads, d);
                Tensor dq = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, tq, heads, d);
                Tensor dkv = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, s, d);
                boolean whole = blocks.length == 1 && blocks[0].all(s);
                if (!whole) {
                    a.zero(dkv);
                }
                for (Block blk : blocks) {
                    Tensor kb = blockKeys(b, bkv, s, blk);
                    Tensor mb = Ops.device(a, blockMask(mask, s, blk), blk.rows(), blk.keys());
                    Tensor dkb = whole ? dkv : a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, blk.keys(), d);
                    int q0 = blk.q0();
                    int q1 = q0 + blk.rows();
                    if (!b.sinkAttentionBackward(bq.slice(0, q0, q1), kb, mb, bs, scale, dy.slice(0, q0, q1),
                            dq.slice(0, q0, q1), dkb)) {
                        throw new IllegalStateException(b.name() + " took the sink attention's forward but not its backward");
                    }
                    if (!whole) {
                        int o = 0;
                        for (int r = 0; r < blk.start().length; r++) {
                            int len = blk.end()[r] - blk.start()[r];
                            Tensor into = dkv.slice(0, blk.start()[r], blk.end()[r]);
                            b.add(into, dkb.slice(0, o, o + len), into);
                            o += len;
                        }
                        a.release(dkb);
                    }
                    a.release(mb);
                    if (kb != bkv) {
                        a.release(kb);
                    }
                }
                a.release(bs);
                if (!keep) {
                    Ops.release(a, bq, bkv);
                }
                Ops.sendGrad(b, q, dq);
                Ops.sendGrad(b, kv, dkv);
            });
        }
        return y;
    }

    /** The host's computation: each query and head in turn, f32 sums in key and channel order. */
    private static Node onHost(GradTape t, Node qn, Node kvn, float[] mask, float[] sinks, int heads, int d, float scale) {
        float[] q = qn.v();
        float[] kv = kvn.v();
        int tq = q.length / (heads * d);
        int s = kv.length / d;
        float[] probs = new float[tq * heads * s];
        float[] y = new float[tq * heads * d];
        for (int i = 0; i < tq; i++) {
            for (int h = 0; h < heads; h++) {
                int qo = (i * heads + h) * d;
                int po = (i * heads + h) * s;
                float max = sinks[h];
                for (int j = 0; j < s; j++) {
                    float l = Float.NEGATIVE_INFINITY;
                    if (mask[i * s + j] != Float.NEGATIVE_INFINITY) {
                        float dot = 0;
                        for (int c = 0; c < d; c++) {
                            dot += q[qo + c] * kv[j * d + c];
                        }
                        l = dot * scale + mask[i * s + j];
                    }
                    probs[po + j] = l;
                    max = Math.max(max, l);
                }
                float sum = (float) Math.exp(sinks[h] - max);
                for (int j = 0; j < s; j++) {
                    float e = probs[po + j] == Float.NEGATIVE_INFINITY ? 0f : (float) Math.exp(probs[po + j] - max);
                    probs[po + j] = e;
                    sum += e;
                }
                for (int j = 0; j < s; j++) {
                    float p = probs[po + j] / sum;
                    probs[po + j] = p;
                    if (p != 0) {
                        for (int c = 0; c < d; c++) {
                            y[qo + c] += p * kv[j * d + c];
                        }
                    }
                }
            }
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dq = qn.grad();
                float[] dk = kvn.grad();
                float[] dp = new float[s];
                for (int i = 0; i < tq; i++) {
                    for (int h = 0; h < heads; h++) {
                        int qo = (i * heads + h) * d;
                        int po = (i * heads + h) * s;
                        float dot = 0;
                        for (int j = 0; j < s; j++) {
                            float v = 0;
                            for (int c = 0; c < d; c++) {
                                v += dy[qo + c] * kv[j * d + c];
                            }
                            dp[j] = v;
                            dot += probs[po + j] * v;
                        }
                        for (int j = 0; j < s; j++) {
                            float p = probs[po + j];
                            if (p == 0) {
                                continue;
                            }
                            float dl = p * (dp[j] - dot) * scale;
                            for (int c = 0; c < d; c++) {
                                dq[qo + c] += dl * kv[j * d + c];
                                dk[j * d + c] += dl * q[qo + c] + p * dy[qo + c];
                            }
                        }
                    }
                }
            });
        }
        return yn;
    }
}
