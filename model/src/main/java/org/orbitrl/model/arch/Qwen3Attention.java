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
    private final int layer;
    private final int heads;
    private final int kvHeads;
    private final int headDim;
    private final float eps;
    private final AttentionSpec spec;

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
        this.spec = AttentionSpec.causal(c.headDim());
    }

    /**
     * x [N, hidden] (normed input) -> out [N, hidden]. Tokens are the segments' new tokens in order;
     * positions i32 [N] hold each token's absolute position.
     */
    void forward(Backend b, Tensor x, Tensor positions, List<CausalLM.Segment> batch, RopeTable rope, Tensor out) {
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
        b.rmsNorm(qs.reshape((long) n * heads, headDim), qNorm, eps, qs.reshape((long) n * heads, headDim));
        b.rmsNorm(ks.reshape((long) n * kvHeads, headDim), kNorm, eps, ks.reshape((long) n * kvHeads, headDim));
        b.rope(q3, positions, rope);
        b.rope(k3, positions, rope);
        Tensor v3 = vs.reshape(n, kvHeads, headDim);
        Tensor attn = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, heads, headDim); // [N, Hq, D]
        int start = 0;
        for (CausalLM.Segment s : batch) {
            int t = s.tokens().length;
            KvCache cache = s.cache();
            int past = cache.length();
            cache.write(layer, k3.slice(0, start, start + t), v3.slice(0, start, start + t));
            b.attention(q3.slice(0, start, start + t), cache.keys(layer, past + t), cache.values(layer, past + t),
                    attn.slice(0, start, start + t), past, spec);
            start += t;
        }
        o.forward(b, attn.reshape(n, (long) heads * headDim), out);
    }
}
