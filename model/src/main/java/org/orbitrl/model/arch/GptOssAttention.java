package org.orbitrl.model.arch;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
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
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        Tensor qs = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) heads * headDim);   // [N, Hq*D]
        Tensor ks = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        Tensor vs = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        q.forward(b, x, qs);
        k.forward(b, x, ks);
        v.forward(b, x, vs);
        Tensor q3 = qs.reshape(n, heads, headDim);
        Tensor k3 = ks.reshape(n, kvHeads, headDim);
        Tensor v3 = vs.reshape(n, kvHeads, headDim);
        b.rope(q3, positions, rope);
        b.rope(k3, positions, rope);
        Tensor attn = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, heads, headDim); // [N, Hq, D]
        int start = 0;
        for (CausalLM.Segment s : batch) {
            int t = s.tokens().length;
            SequenceCache cache = s.cache();
            Tensor qSeg = q3.slice(0, start, start + t);
            if (cache == null) {
                b.attention(qSeg, k3.slice(0, start, start + t), v3.slice(0, start, start + t),
                        attn.slice(0, start, start + t), 0, spec);
            } else {
                int past = cache.length();
                cache.write(layer, k3.slice(0, start, start + t), v3.slice(0, start, start + t));
                cache.attend(b, layer, qSeg, attn.slice(0, start, start + t), past, past + t, spec);
            }
            start += t;
        }
        Tensor attnFlat = attn.reshape(n, (long) heads * headDim);
        o.forward(b, attnFlat, out);
        if (tape != null) {
            tape.x = x;
            tape.q3 = q3;
            tape.k3 = k3;
            tape.v3 = v3;
            tape.attn = attnFlat;
        }
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten). Segments must have had no cached past. */
    void backward(Backend b, Tape tape, Tensor positions, int[] segmentLengths, RopeTable rope, Tensor dout, Tensor dx) {
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        Tensor dattn = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) heads * headDim);  // [N, Hq*D]
        o.backward(b, tape.attn, dout, dattn);
        Tensor dq = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, heads, headDim);     // [N, Hq, D]
        Tensor dk = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, kvHeads, headDim);   // [N, Hkv, D]
        Tensor dv = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, kvHeads, headDim);   // [N, Hkv, D]
        Tensor dattn3 = dattn.reshape(n, heads, headDim);
        int start = 0;
        for (int t : segmentLengths) {
            b.attentionBackward(tape.q3.slice(0, start, start + t), tape.k3.slice(0, start, start + t),
                    tape.v3.slice(0, start, start + t), dattn3.slice(0, start, start + t), 0, spec,
                    dq.slice(0, start, start + t), dk.slice(0, start, start + t), dv.slice(0, start, start + t));
            start += t;
        }
        b.ropeBackward(dq, positions, rope);
        b.ropeBackward(dk, positions, rope);
        Tensor tmp = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, q.in()); // [N, hidden]
        q.backward(b, tape.x, dq.reshape(n, (long) heads * headDim), dx);
        k.backward(b, tape.x, dk.reshape(n, (long) kvHeads * headDim), tmp);
        b.add(dx, tmp, dx);
        v.backward(b, tape.x, dv.reshape(n, (long) kvHeads * headDim), tmp);
        b.add(dx, tmp, dx);
    }
}
