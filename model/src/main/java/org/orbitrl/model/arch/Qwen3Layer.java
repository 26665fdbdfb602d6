package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.DecodeLayer;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.parallel.RankGroups;

import java.util.List;

/**
 * One Qwen3 decoder layer: RMSNorm, Qwen3 attention, residual add and RMSNorm, then a dense SwiGLU MLP or a sparse MoE
 * block, and the residual add; forward (with or without a tape), and backward from the tape. Under tensor parallelism
 * the row-parallel outputs and the column-parallel input gradients are summed over the group; under expert parallelism
 * the MoE block dispatches its tokens to the ranks that hold their experts.
 */
final class Qwen3Layer {
    final Tensor inputNorm;   // [hidden]
    final Tensor postNorm;    // [hidden]
    final Qwen3Attention attention;
    final DenseMlp mlp;       // null on MoE layers
    final SparseMoe moe;      // null on dense layers

    private DecodeLayer decodeWeights; // the frozen weights as the whole-layer decode form takes them, made on first use

    /** What every layer of one model shares: its shape, its rope table and its parallel groups (null: one rank). */
    record Shared(DecoderConfig config, RopeTable rope, RankGroups parallel) {
        boolean tensorParallel() {
            return parallel != null && parallel.layout().tp() > 1;
        }

        boolean expertParallel() {
            return parallel != null && parallel.layout().ep() > 1;
        }
    }

    /** One layer's saved activations. */
    static final class Tape {
        Tensor normed1;  // [N, hidden]
        Tensor mid;      // [N, hidden] residual after attention
        Tensor normed2;  // [N, hidden]
        final Qwen3Attention.Tape attention = new Qwen3Attention.Tape();
        DenseMlp.Tape mlp;
        SparseMoe.Tape moe;
        ExpertDispatch.Tape dispatch;

        /** Releases the layer's saved activations once its backward has been issued (the layer input is the caller's). */
        void release(TensorAllocator a) {
            for (Tensor t : new Tensor[]{normed1, mid, normed2}) {
                if (t != null) {
                    a.release(t);
                }
            }
            normed1 = mid = normed2 = null;
            attention.release(a);
            if (mlp != null) {
                mlp.release(a);
            }
            if (moe != null) {
                moe.release(a);
            }
            if (dispatch != null) {
                dispatch.release(a);
                dispatch = null;
            }
        }
    }

    Qwen3Layer(Tensor inputNorm, Tensor postNorm, Qwen3Attention attention, DenseMlp mlp, SparseMoe moe) {
        this.inputNorm = inputNorm;
        this.postNorm = postNorm;
        this.attention = attention;
        this.mlp = mlp;
        this.moe = moe;
    }

    /** The same frozen weights with fresh, adapter-free projections. */
    Qwen3Layer view(DecoderConfig c) {
        return new Qwen3Layer(inputNorm, postNorm, attention.view(c), mlp == null ? null : mlp.view(), moe == null ? null : moe.view());
    }

    /**
     * The layer's weights for a backend's whole-layer decode form ({@link Backend#decodeLayer}); null on a dense layer,
     * with an adapter enabled on any projection or the router, or with weights that are not dense.
     */
    DecodeLayer decodeWeights(DecoderConfig c) {
        GroupedMoe g = moe == null ? null : moe.decodeExperts();
        if (g == null || !attention.plainDense() || !(moe.router.weight() instanceof Weight.Dense)) {
            return null;
        }
        if (decodeWeights == null) {
            Qwen3Attention at = attention;
            decodeWeights = new DecodeLayer(inputNorm, dense(at.q), dense(at.k), dense(at.v), at.qNorm, at.kNorm, dense(at.o), postNorm,
                    dense(moe.router), moe.topK(), moe.normTopK(), g.gate(), g.up(), g.down(), c.heads(), c.kvHeads(), c.headDim(),
                    c.rmsEps(), at.spec());
        }
        return decodeWeights;
    }

    private static Tensor dense(Linear l) {
        return ((Weight.Dense) l.weight()).w();
    }

    /**
     * Layer {@code i}: x [N, hidden] -> a new residual stream [N, hidden]; one sequence's decode token takes the
     * backend's whole-layer form where it has one ({@link Backend#decodeLayer}).
     *
     * @param training a layer of a training step's forward (with or without its tape), never taking the decode forms
     * @param ahead    frozen weights the next launches after this layer read (the next layer's q, k and v; null: none), which
     *                 a decode step asks the device's cache for during its router ({@link Backend#prefetchFrozen})
     */
    Tensor forward(Backend b, Shared s, int i, Tensor x, Tensor positions, List<CausalLM.Segment> batch, Tape lt,
                   PagedDecode decode, boolean training, Tensor[] ahead) {
        TensorAllocator a = b.allocator();
        DecoderConfig config = s.config();
        int n = x.size(0);
        int h = config.hidden();
        if (decode != null && n == 1 && lt == null && !training && !s.tensorParallel() && !s.expertParallel()
                && b.decodesLayers()) {
            DecodeLayer w = decodeWeights(config);
            if (w != null) {   // one sequence's decode token: the whole layer in one backend call where it has one
                Tensor out = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [1, hidden]
                if (decode.layer(b, i, w, x, out, positions, s.rope())) {
                    return out;
                }
                a.release(out);
            }
        }
        Tensor delta = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);   // [N, hidden]
        Tensor normed1 = null;                                                    // [N, hidden]
        // a decode step (never taped): the input norm folded into q, k and v's products where the backend has that form
        if (decode == null || lt != null || training || !attention.decodeFromInput(b, x, inputNorm, positions, s.rope(), delta, decode)) {
            normed1 = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);
            b.rmsNorm(x, inputNorm, config.rmsEps(), normed1);
            attention.forward(b, normed1, positions, batch, s.rope(), delta, lt == null ? null : lt.attention, decode);
            if (lt == null) {
                a.release(normed1);
            }
        }
        if (s.tensorParallel()) {
            s.parallel().tp().allReduceSum(delta);   // row-parallel o_proj: sum the heads' partial outputs
        }
        Tensor mid = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        Tensor normed2 = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        if (moe != null && lt == null && !training && !s.expertParallel()) {
            // inference: mid = x + delta, normed2 its norm, and the block's output added into mid in place (as below, one
            // launch fewer; at a decode step the add, the norm and the router one launch where the backend fuses them)
            if (decode != null && ahead != null) {
                b.prefetchFrozen(ahead);   // the next layer's q/k/v, asked of the cache while the router (bound by latency) runs
            }
            boolean pairs = moe.forwardPairsAfterAdd(b, x, delta, mid, postNorm, config.rmsEps(), normed2);
            if (!pairs) {
                b.addRmsNorm(x, delta, mid, postNorm, config.rmsEps(), normed2);
            }
            a.release(delta);
            if (!pairs) {
                moe.forwardAdd(b, normed2, mid);
            }
            a.release(normed2);
            return mid;
        }
        b.addRmsNorm(x, delta, mid, postNorm, config.rmsEps(), normed2);          // mid = x + delta, normed2 its norm
        if (moe != null && s.expertParallel()) {
            ExpertDispatch.Tape dt = lt == null ? null : new ExpertDispatch.Tape();
            ExpertDispatch.forward(moe, b, s.parallel().ep(), normed2, delta, dt, training);
            if (lt != null) {
                lt.dispatch = dt;
            }
        } else if (moe != null) {
            SparseMoe.Tape mt = lt == null ? null : new SparseMoe.Tape();
            moe.forward(b, normed2, delta, mt, training);
            if (lt != null) {
                lt.moe = mt;
            }
        } else {
            DenseMlp.Tape dt = lt == null ? null : new DenseMlp.Tape();
            mlp.forward(b, normed2, delta, dt);
            if (s.tensorParallel()) {
                s.parallel().tp().allReduceSum(delta);   // row-parallel down_proj
            }
            if (lt != null) {
                lt.mlp = dt;
            }
        }
        if (lt == null) {
            a.release(normed2);
        }
        Tensor out = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.add(mid, delta, out);
        a.release(delta);
        if (lt == null) {
            a.release(mid);
        } else {
            lt.normed1 = normed1;
            lt.mid = mid;
            lt.normed2 = normed2;
        }
        return out;
    }

    /**
     * d residual-out [N, hidden] -> d residual-in [N, hidden], from the layer's tape, its input {@code x} [N, hidden], the
     * tokens' positions i32 [N] and the segments' lengths.
     */
    Tensor backward(Backend b, Shared s, Tape lt, Tensor x, Tensor positions, int[] lengths, Tensor dOut) {
        TensorAllocator a = b.allocator();
        DecoderConfig config = s.config();
        int n = dOut.size(0);
        int h = config.hidden();
        Tensor dNormed2 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        if (moe != null && s.expertParallel()) {
            ExpertDispatch.backward(moe, b, s.parallel().ep(), lt.dispatch, dOut, dNormed2);
        } else if (moe != null) {
            moe.backward(b, lt.moe, dOut, dNormed2);
        } else {
            mlp.backward(b, lt.mlp, dOut, dNormed2);
            if (s.tensorParallel()) {
                s.parallel().tp().allReduceSum(dNormed2);   // column-parallel gate/up: sum the input gradients
            }
        }
        Tensor dMid = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.rmsNormBackward(lt.mid, postNorm, config.rmsEps(), dNormed2, dMid);
        a.release(dNormed2);
        b.add(dMid, dOut, dMid);
        Tensor dNormed1 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        attention.backward(b, lt.attention, positions, lengths, s.rope(), dMid, dNormed1);
        if (s.tensorParallel()) {
            s.parallel().tp().allReduceSum(dNormed1);   // column-parallel q/k/v: sum the input gradients
        }
        Tensor dIn = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
        b.rmsNormBackward(x, inputNorm, config.rmsEps(), dNormed1, dIn);
        a.release(dNormed1);
        b.add(dIn, dMid, dIn);
        a.release(dMid);
        return dIn;
    }
}
