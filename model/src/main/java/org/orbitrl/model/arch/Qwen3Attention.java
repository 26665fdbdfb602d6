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
import org.orbitrl.model.nn.Weight;

import java.util.List;
import java.util.stream.Stream;

/**
 * Qwen3 attention: q/k/v projections, a per-head RMSNorm on q and k, rotary embedding
 * (rotate-half), grouped-query causal attention, output projection.
 */
final class Qwen3Attention {
    final Linear q;
    final Linear k;
    final Linear v;
    final Linear o;
    final Tensor qNorm; // [headDim]
    final Tensor kNorm; // [headDim]
    /** q, k and v's dense base weights (frozen: worked out once, asked for at every decode step). */
    private final Tensor[] frozenQkv;
    private final int layer;
    private final int heads;
    private final int kvHeads;
    private final int headDim;
    private final float eps;
    private final AttentionSpec spec;

    /** What backward needs. Attention probabilities are not stored: backward recomputes them. */
    static final class Tape {
        Tensor x;      // [N, hidden] normed input
        Tensor qRaw;   // [N, Hq*D] before the q norm
        Tensor kRaw;   // [N, Hkv*D] before the k norm
        Tensor q3;     // [N, Hq, D] after norm and rope
        Tensor k3;     // [N, Hkv, D] after norm and rope
        Tensor v3;     // [N, Hkv, D]
        Tensor attn;   // [N, Hq*D] the input of o_proj
        Tensor lse;    // [N, Hq] the attention's statistics where the backend keeps them (else null)

        /** Releases what forward allocated for backward (not x, the caller's input). */
        void release(TensorAllocator a) {
            for (Tensor t : new Tensor[]{qRaw, kRaw, q3, k3, v3, attn, lse}) {
                if (t != null) {
                    a.release(t);
                }
            }
            qRaw = kRaw = q3 = k3 = v3 = attn = lse = null;
        }
    }

    Qwen3Attention(int layer, DecoderConfig c, Linear q, Linear k, Linear v, Linear o, Tensor qNorm, Tensor kNorm) {
        this.layer = layer;
        this.q = q;
        this.k = k;
        this.v = v;
        this.o = o;
        this.qNorm = qNorm;
        this.kNorm = kNorm;
        this.heads = c.heads();
        this.kvHeads = c.kvHeads();
        this.headDim = c.headDim();
        this.eps = c.rmsEps();
        this.spec = new AttentionSpec((float) (1.0 / Math.sqrt(c.headDim())), c.windows()[layer], null);
        this.frozenQkv = Stream.of(q, k, v).filter(l -> l.weight() instanceof Weight.Dense)
                .map(l -> ((Weight.Dense) l.weight()).w()).toArray(Tensor[]::new);
    }

    /** Whether q, k, v and o are dense, without bias and without an enabled adapter (a backend's whole-layer decode form). */
    boolean plainDense() {
        return plain(q) && plain(k) && plain(v) && plain(o);
    }

    /**
     * q, k and v's dense base weights, those that are dense: frozen, and read by a decode step's first products whatever
     * adapter the layer has (the bytes a step may ask the device's cache for ahead, {@link Backend#prefetchFrozen}). The
     * array is shared: not to be changed.
     */
    Tensor[] frozenQkv() {
        return frozenQkv;
    }

    /** A dense weight without a bias or an enabled adapter. */
    private static boolean plain(Linear l) {
        return l.weight() instanceof Weight.Dense && l.bias() == null && (l.adapter() == null || !l.adapter().enabled());
    }

    AttentionSpec spec() {
        return spec;
    }

    /** The same frozen weights with fresh, adapter-free linear layers. */
    Qwen3Attention view(DecoderConfig c) {
        return new Qwen3Attention(layer, c, q.view(), k.view(), v.view(), o.view(), qNorm, kNorm);
    }

    /**
     * x [N, hidden] (normed input) -> out [N, hidden]. Tokens are the segments' new tokens in order;
     * positions i32 [N] hold each token's absolute position. A segment without a cache attends to
     * its own tokens only (training); with one, to the cached past too (its keys are appended).
     */
    void forward(Backend b, Tensor x, Tensor positions, List<CausalLM.Segment> batch, RopeTable rope, Tensor out,
                 Tape tape) {
        forward(b, x, positions, batch, rope, out, tape, null);
    }

    /**
     * As above; with {@code decode} (a decode step over one paged pool, never with a tape) the norms, rope and cache
     * write are one backend step, and the attention another.
     */
    void forward(Backend b, Tensor x, Tensor positions, List<CausalLM.Segment> batch, RopeTable rope, Tensor out,
                 Tape tape, PagedDecode decode) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        Tensor qs = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) heads * headDim);   // [N, Hq*D]
        Tensor ks = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        Tensor vs = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        Linear.forwardShared(b, x, new Linear[]{q, k, v}, new Tensor[]{qs, ks, vs});
        if (decode != null) {   // a decode step (never taped): norms, rope and the cache write in one backend step
            SegmentAttention.decode(b, decode, layer, qs, ks, vs, heads, kvHeads, headDim, qNorm, kNorm, eps, positions, rope,
                    spec, o, out);
            return;
        }
        Tensor q3 = qs;
        Tensor k3 = ks;
        if (tape != null) {
            tape.qRaw = qs;
            tape.kRaw = ks;
            q3 = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) heads * headDim);
            k3 = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim);
        }
        b.rmsNorm(qs.reshape((long) n * heads, headDim), qNorm, eps, q3.reshape((long) n * heads, headDim));
        b.rmsNorm(ks.reshape((long) n * kvHeads, headDim), kNorm, eps, k3.reshape((long) n * kvHeads, headDim));
        q3 = q3.reshape(n, heads, headDim);
        k3 = k3.reshape(n, kvHeads, headDim);
        b.rope(q3, positions, rope);
        b.rope(k3, positions, rope);
        Tensor v3 = vs.reshape(n, kvHeads, headDim);
        SegmentAttention.Attended att = SegmentAttention.attendAndProject(b, layer, batch, q3, k3, v3, spec, o, out, tape != null);
        Tensor attnFlat = att.attn();   // [N, Hq*D]
        if (tape == null) {
            a.release(q3);
            a.release(k3);
            a.release(vs);
            a.release(attnFlat);
        } else {
            tape.x = x;
            tape.q3 = q3;
            tape.k3 = k3;
            tape.v3 = v3;
            tape.attn = attnFlat;
            tape.lse = att.lse();
        }
    }

    /**
     * A decode step's attention from the block's input x [N, hidden] before its norm ({@code inputNorm}, eps the model's):
     * the norm folded into q, k and v's products where the backend has that form for the call ({@link
     * Backend#rmsNormMatmulShared}) and q, k and v are dense weights without a bias or an enabled adapter, then the
     * decode's steps as {@link #forward} takes them. False, with nothing done, otherwise (the caller norms x).
     */
    boolean decodeFromInput(Backend b, Tensor x, Tensor inputNorm, Tensor positions, RopeTable rope, Tensor out,
                            PagedDecode decode) {
        if (!plain(q) || !plain(k) || !plain(v)) {
            return false;
        }
        Tensor[] ws = {((Weight.Dense) q.weight()).w(), ((Weight.Dense) k.weight()).w(), ((Weight.Dense) v.weight()).w()};
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        Tensor qs = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) heads * headDim);   // [N, Hq*D]
        Tensor ks = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        Tensor vs = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        if (!b.rmsNormMatmulShared(x, inputNorm, eps, ws, new Tensor[]{qs, ks, vs})) {
            a.release(qs);
            a.release(ks);
            a.release(vs);
            return false;
        }
        SegmentAttention.decode(b, decode, layer, qs, ks, vs, heads, kvHeads, headDim, qNorm, kNorm, eps, positions, rope,
                spec, o, out);
        return true;
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten). Segments must have had no cached past. */
    void backward(Backend b, Tape tape, Tensor positions, int[] segmentLengths, RopeTable rope, Tensor dout, Tensor dx) {
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        SegmentAttention.Grads g = SegmentAttention.backward(b, o, tape.attn, tape.lse, tape.q3, tape.k3, tape.v3, segmentLengths,
                spec, positions, rope, dout);
        Tensor dq = g.dq();   // [N, Hq, D]
        Tensor dk = g.dk();   // [N, Hkv, D]
        Tensor dqRaw = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) heads * headDim);   // [N, Hq*D]
        Tensor dkRaw = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, (long) kvHeads * headDim); // [N, Hkv*D]
        b.rmsNormBackward(tape.qRaw.reshape((long) n * heads, headDim), qNorm, eps,
                dq.reshape((long) n * heads, headDim), dqRaw.reshape((long) n * heads, headDim));
        b.rmsNormBackward(tape.kRaw.reshape((long) n * kvHeads, headDim), kNorm, eps,
                dk.reshape((long) n * kvHeads, headDim), dkRaw.reshape((long) n * kvHeads, headDim));
        a.release(dq);
        a.release(dk);
        SegmentAttention.inputGradient(b, tape.x, q, dqRaw, k, dkRaw, v, g.dv().reshape(n, (long) kvHeads * headDim), dx);
        a.release(dqRaw);
        a.release(dkRaw);
        a.release(g.dv());
    }
}
