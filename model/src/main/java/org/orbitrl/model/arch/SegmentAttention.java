package org.orbitrl.model.arch;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.nn.Linear;

import java.util.List;

/**
 * The steps grouped-query attention layers share around their own projections and norms: causal
 * attention of a batch of segments (over their own tokens, or appended to and read from their
 * caches), the output projection, and the backward of both down to the rope inputs and through the
 * q/k/v projections. Tokens are the segments' new tokens in order.
 */
final class SegmentAttention {
    private SegmentAttention() {
    }

    /**
     * Attends q [N, Hq, D] over k [N, Hkv, D] / v [N, Hkv, Dv] segment by segment into out
     * [N, Hq, Dv]. A segment without a cache attends to its own tokens (training); one with a cache
     * appends its keys (and values, unless {@code valuesInKeys}: then v is a view of k and the cache
     * stores k only) and attends over the cached past too.
     */
    static void attend(Backend b, int layer, List<CausalLM.Segment> batch, Tensor q, Tensor k, Tensor v,
                       boolean valuesInKeys, AttentionSpec spec, Tensor out) {
        attend(b, layer, batch, q, k, v, valuesInKeys, spec, out, null);
    }

    /**
     * As above; {@code lse} [N, Hq] f32 (null: none, and never with a cached segment): the backend's softmax statistics
     * of each segment ({@link Backend#attentionWithStats}) for {@link #backward}. Returns whether every segment's were
     * kept (false when lse is null).
     */
    static boolean attend(Backend b, int layer, List<CausalLM.Segment> batch, Tensor q, Tensor k, Tensor v,
                          boolean valuesInKeys, AttentionSpec spec, Tensor out, Tensor lse) {
        int start = 0;
        boolean kept = lse != null;
        for (CausalLM.Segment s : batch) {
            int t = s.tokens().length;
            SequenceCache cache = s.cache();
            Tensor qSeg = q.slice(0, start, start + t);
            Tensor oSeg = out.slice(0, start, start + t);
            if (cache == null && lse != null) {
                kept &= b.attentionWithStats(qSeg, k.slice(0, start, start + t), v.slice(0, start, start + t), oSeg, 0, spec,
                        lse.slice(0, start, start + t));
            } else if (cache == null) {
                b.attention(qSeg, k.slice(0, start, start + t), v.slice(0, start, start + t), oSeg, 0, spec);
            } else {
                if (lse != null) {
                    throw new IllegalArgumentException("attention statistics are kept for a training forward, not over a cache");
                }
                int past = cache.length();
                cache.write(b, layer, k.slice(0, start, start + t), valuesInKeys ? null : v.slice(0, start, start + t));
                cache.attend(b, layer, qSeg, oSeg, past, past + t, spec);
            }
            start += t;
        }
        return kept;
    }

    /**
     * A decode step's attention over paged pools ({@link PagedDecode}): the projections' raw outputs qs [N, Hq*D], ks
     * and vs [N, Hkv*D] (released here) normed per head (qNorm, kNorm, or null) and roped, keys and values written,
     * the batch's attention, then {@code o} into out [N, hidden].
     */
    static void decode(Backend b, PagedDecode decode, int layer, Tensor qs, Tensor ks, Tensor vs, int heads, int kvHeads,
                       int headDim, Tensor qNorm, Tensor kNorm, float eps, Tensor positions, RopeTable rope, AttentionSpec spec,
                       Linear o, Tensor out) {
        TensorAllocator a = b.allocator();
        int n = qs.size(0);
        Tensor q = qs.reshape(n, heads, headDim);
        Tensor k = ks.reshape(n, kvHeads, headDim);
        Tensor v = vs.reshape(n, kvHeads, headDim);
        Tensor attn = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, heads, headDim); // [N, Hq, D]
        boolean fused = decode.prepareAndAttend(b, layer, q, k, v, qNorm, kNorm, eps, positions, rope, attn, spec);
        Tensor q3 = fused ? null : a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, heads, headDim); // [N, Hq, D]
        if (!fused) {
            decode.prepare(b, layer, q, k, v, qNorm, kNorm, eps, positions, rope, q3);
        }
        a.release(qs);
        a.release(ks);
        a.release(vs);
        if (!fused) {
            decode.attend(b, layer, q3, attn, spec);
            a.release(q3);
        }
        o.forward(b, attn.reshape(n, (long) heads * headDim), out);
        a.release(attn);
    }

    /** The o_proj input [N, Hq*Dv] and the attention's statistics [N, Hq] (null where the backend kept none). */
    record Attended(Tensor attn, Tensor lse) {
    }

    /**
     * {@link #attend} with separate values, then {@code o}: q3 [N, Hq, D] -> out [N, hidden]. Returns the o_proj input
     * (what backward needs) and, with {@code keepStats} (a training forward whose tape the backward reads), the
     * backend's softmax statistics where it keeps them ({@link Backend#keepsAttentionStats}).
     */
    static Attended attendAndProject(Backend b, int layer, List<CausalLM.Segment> batch, Tensor q3, Tensor k3, Tensor v3,
                                     AttentionSpec spec, Linear o, Tensor out, boolean keepStats) {
        int n = q3.size(0);
        int heads = q3.size(1);
        int dv = v3.size(2);
        TensorAllocator a = b.allocator();
        Tensor attn = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, heads, dv); // [N, Hq, Dv]
        Tensor lse = keepStats && b.keepsAttentionStats() ? a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, heads) : null;
        if (!attend(b, layer, batch, q3, k3, v3, false, spec, attn, lse) && lse != null) {
            a.release(lse);
            lse = null;
        }
        Tensor attnFlat = attn.reshape(n, (long) heads * dv);
        o.forward(b, attnFlat, out);
        return new Attended(attnFlat, lse);
    }

    /** The query, key and value gradients [N, H, D] of {@link #backward}, rope undone on dq and dk. */
    record Grads(Tensor dq, Tensor dk, Tensor dv) {
    }

    /**
     * From dout [N, hidden] back through o_proj (input {@code attn} [N, Hq*D]), attention segment by
     * segment (no cached past), and rope: the gradients of the projected q [N, Hq, D], k and v
     * [N, Hkv, D] as they were before rope; {@code lse} [N, Hq] the statistics {@link #attendAndProject} kept (null:
     * none).
     */
    static Grads backward(Backend b, Linear o, Tensor attn, Tensor lse, Tensor q3, Tensor k3, Tensor v3, int[] segmentLengths,
                          AttentionSpec spec, Tensor positions, RopeTable rope, Tensor dout) {
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        int heads = q3.size(1);
        int kvHeads = k3.size(1);
        int d = q3.size(2);
        Tensor dattn = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) heads * d);  // [N, Hq*D]
        o.backward(b, attn, dout, dattn);
        Tensor dq = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, heads, d);     // [N, Hq, D]
        Tensor dk = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, kvHeads, d);   // [N, Hkv, D]
        Tensor dv = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, kvHeads, d);   // [N, Hkv, D]
        Tensor dattn3 = dattn.reshape(n, heads, d);
        Tensor attn3 = attn.reshape(n, heads, d);
        int start = 0;
        for (int t : segmentLengths) {
            if (lse != null) {
                b.attentionBackward(q3.slice(0, start, start + t), k3.slice(0, start, start + t),
                        v3.slice(0, start, start + t), attn3.slice(0, start, start + t), lse.slice(0, start, start + t),
                        dattn3.slice(0, start, start + t), 0, spec,
                        dq.slice(0, start, start + t), dk.slice(0, start, start + t), dv.slice(0, start, start + t));
            } else {
                b.attentionBackward(q3.slice(0, start, start + t), k3.slice(0, start, start + t),
                        v3.slice(0, start, start + t), dattn3.slice(0, start, start + t), 0, spec,
                        dq.slice(0, start, start + t), dk.slice(0, start, start + t), dv.slice(0, start, start + t));
            }
            start += t;
        }
        a.release(dattn);
        b.ropeBackward(dq, positions, rope);
        b.ropeBackward(dk, positions, rope);
        return new Grads(dq, dk, dv);
    }

    /** dx [N, hidden] (overwritten) = the input gradients of the q, k and v projections of x, summed. */
    static void inputGradient(Backend b, Tensor x, Linear q, Tensor dq, Linear k, Tensor dk, Linear v, Tensor dv,
                              Tensor dx) {
        int n = x.size(0);
        Tensor tmp = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, q.in()); // [N, hidden]
        q.backward(b, x, dq, dx);
        k.backward(b, x, dk, tmp);
        b.add(dx, tmp, dx);
        v.backward(b, x, dv, tmp);
        b.add(dx, tmp, dx);
        b.allocator().release(tmp);
    }
}
