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
 * gpt-oss attention: q/k/v/o projections with biases, rotary embedding (rotate-half, YaRN),
 * grouped-query causal attention whose softmax denominator includes a learned per-head sink, over
 * the whole past (full layers) or the last {@code sliding_window} positions (sliding layers).
 */
final class GptOssAttention {
    final Linear q;
    final Linear k;
    final Linear v;
    final Linear o;
    final Tensor sinks;  // f32 [Hq]
    private final int layer;
    private final int heads;
    private final int kvHeads;
    private final int headDim;
    private final AttentionSpec spec;

    /** What backward needs. Attention probabilities are recomputed by the backward kernel. */
    static final class Tape {
        Tensor x;      // [N, hidden] normed input
        Tensor q3;     // [N, Hq, D] after rope
        Tensor k3;     // [N, Hkv, D] after rope
        Tensor v3;     // [N, Hkv, D]
        Tensor attn;   // [N, Hq*D] the input of o_proj
        Tensor lse;    // [N, Hq] the attention's statistics where the backend keeps them (else null)
    }

    GptOssAttention(int layer, GptOssConfig c, Linear q, Linear k, Linear v, Linear o, Tensor sinks) {
        this.layer = layer;
        this.q = q;
        this.k = k;
        this.v = v;
        this.o = o;
        this.sinks = sinks;
        this.heads = c.heads();
        this.kvHeads = c.kvHeads();
        this.headDim = c.headDim();
        this.spec = new AttentionSpec((float) (1.0 / Math.sqrt(c.headDim())),
                c.isSliding(layer) ? c.slidingWindow() : 0, sinks);
    }

    /** The same frozen weights with fresh, adapter-free linear layers. */
    GptOssAttention view(GptOssConfig c) {
        return new GptOssAttention(layer, c, q.view(), k.view(), v.view(), o.view(), sinks);
    }

    AttentionSpec spec() {
        return spec;
    }

    /**
     * x [N, hidden] (normed input) -> out [N, hidden]. Tokens are the segments' new tokens in order,
     * positions i32 [N] their absolute positions. A segment without a cache attends to its own
     * tokens only (training); with one, to the cached past too (its keys are appended).
     */
    void forward(Backend b, Tensor x, Tensor positions, List<CausalLM.Segment> batch, RopeTable rope, Tensor out,
                 Tape tape) {
        forward(b, x, positions, batch, rope, out, tape, null);
    }

    /**
     * As above; with {@code decode} (a decode step over paged pools, never with a tape) the rope and the cache write are
     * one backend step and the attention of the whole batch another, over the caches in place.
     */
    void forward(Backend b, Tensor x, Tensor positions, List<CausalLM.Segment> batch, RopeTable rope, Tensor out,
                 Tape tape, PagedDecode decode) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        Tensor qs = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) heads * headDim);   // [N, Hq*D]
        Tensor ks = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        Tensor vs = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        Linear.forwardShared(b, x, new Linear[]{q, k, v}, new Tensor[]{qs, ks, vs});
        if (decode != null && tape == null) {   // no head norms: rope and the cache write, then the batch's attention
            SegmentAttention.decode(b, decode, layer, qs, ks, vs, heads, kvHeads, headDim, null, null, 0f, positions, rope, spec,
                    o, out);
            return;
        }
        Tensor q3 = qs.reshape(n, heads, headDim);
        Tensor k3 = ks.reshape(n, kvHeads, headDim);
        Tensor v3 = vs.reshape(n, kvHeads, headDim);
        b.rope(q3, positions, rope);
        b.rope(k3, positions, rope);
        SegmentAttention.Attended att = SegmentAttention.attendAndProject(b, layer, batch, q3, k3, v3, spec, o, out, tape != null);
        Tensor attnFlat = att.attn(); // [N, Hq*D]
        if (tape == null) {   // nothing is kept: each at its last use (a cache copied the keys and values)
            for (Tensor t : new Tensor[]{qs, ks, vs, attnFlat}) {
                a.release(t);
            }
        }
        if (tape != null) {
            tape.x = x;
            tape.q3 = q3;
            tape.k3 = k3;
            tape.v3 = v3;
            tape.attn = attnFlat;
            tape.lse = att.lse();
        }
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten). Segments must have had no cached past. */
    void backward(Backend b, Tape tape, Tensor positions, int[] segmentLengths, RopeTable rope, Tensor dout, Tensor dx) {
        int n = dout.size(0);
        SegmentAttention.Grads g = SegmentAttention.backward(b, o, tape.attn, tape.lse, tape.q3, tape.k3, tape.v3, segmentLengths,
                spec, positions, rope, dout);
        SegmentAttention.inputGradient(b, tape.x, q, g.dq().reshape(n, (long) heads * headDim),
                k, g.dk().reshape(n, (long) kvHeads * headDim), v, g.dv().reshape(n, (long) kvHeads * headDim), dx);
        TensorAllocator a = b.allocator();
        a.release(g.dq());
        a.release(g.dk());
        a.release(g.dv());
    }
}
