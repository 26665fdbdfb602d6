package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

/**
 * How a grouped MoE block ({@link GroupedMoe}) picks each token's experts, all on the backend: the frozen router's
 * logits, the choice (ids i32 [N, k]) and the routing weights (f32 [N, k]), and in backward the router-logit gradient from
 * the routing weights' gradient. {@link Softmax} is Qwen3-MoE's, {@link SigmoidGroups} DeepSeek-V3's and Kimi-K2's.
 */
sealed interface ExpertRouter {
    /** The router's linear layer [E, hidden]. */
    Linear linear();

    /** Experts a token. */
    int topK();

    /** The choice for x [N, hidden] with what {@link #logitGrad} needs ({@link Routed#saved}). */
    Routed route(Backend b, Tensor x);

    /** A decode step's choice (weights and ids alone), in one backend call where the backend fuses it. */
    default Routed routeDecode(Backend b, Tensor x) {
        Routed r = route(b, x);
        r.releaseSaved(b.allocator());
        return new Routed(r.weights(), r.ids());
    }

    /**
     * A decode step's choice from its residual before the norm: {@code sum = x + delta}, {@code normed} its norm ({@link
     * Backend#addRmsNorm}), then {@link #routeDecode} of normed; in one backend call where the backend fuses the three.
     */
    default Routed routeDecodeAfterAdd(Backend b, Tensor x, Tensor delta, Tensor sum, Tensor normWeight, float eps, Tensor normed) {
        b.addRmsNorm(x, delta, sum, normWeight, eps, normed);
        return routeDecode(b, normed);
    }

    /** dLogits f32 [N, E] (overwritten) from dWeight f32 [N, k], the gradient of the routing weights of {@code r}. */
    void logitGrad(Backend b, Routed r, Tensor dWeight, Tensor dLogits);

    /** A choice: weights f32 [N, k], ids i32 [N, k], and the router's tensors that its backward reads. */
    record Routed(Tensor weights, Tensor ids, Tensor... saved) {
        void releaseSaved(TensorAllocator a) {
            for (Tensor t : saved) {
                a.release(t);
            }
        }

        void release(TensorAllocator a) {
            releaseSaved(a);
            a.release(weights);
            a.release(ids);
        }
    }

    /** Router logits of x [N, hidden]: f32 [N, E], an activation of the caller's. */
    private static Tensor logits(Backend b, Linear router, Tensor x) {
        Tensor logits = b.allocator().allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, x.size(0), router.out()); // [N, E]
        router.forward(b, x, logits);
        return logits;
    }

    /**
     * Qwen3-MoE's router: softmax over the experts, the k largest (ties to the lower expert), renormalised to sum 1 when
     * {@code normTopK} ({@link Backend#moeTopk}); saves the probabilities [N, E] and the chosen ones [N, k].
     */
    record Softmax(Linear linear, int topK, boolean normTopK) implements ExpertRouter {
        @Override
        public Routed route(Backend b, Tensor x) {
            TensorAllocator a = b.allocator();
            int n = x.size(0);
            Tensor probs = logits(b, linear, x);                                       // [N, E]
            b.softmax(probs);
            Tensor chosen = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, topK);    // [N, k]
            Tensor weights = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, topK);   // [N, k]
            Tensor ids = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I32, n, topK);       // [N, k]
            b.moeTopk(probs, topK, normTopK, chosen, weights, ids);
            return new Routed(weights, ids, probs, chosen);
        }

        /** In one call where the backend has one ({@link Backend#moeRouterTopk}: a dense router without bias or adapter). */
        @Override
        public Routed routeDecode(Backend b, Tensor x) {
            Routed r = fused(b, x.size(0), (w, weights, ids) -> b.moeRouterTopk(x, w, topK, normTopK, weights, ids));
            return r != null ? r : ExpertRouter.super.routeDecode(b, x);
        }

        /** In one call where the backend has one ({@link Backend#addRmsNormRouterTopk}), as {@link #routeDecode}. */
        @Override
        public Routed routeDecodeAfterAdd(Backend b, Tensor x, Tensor delta, Tensor sum, Tensor normWeight, float eps,
                                          Tensor normed) {
            Routed r = fused(b, x.size(0), (w, weights, ids) ->
                    b.addRmsNormRouterTopk(x, delta, sum, normWeight, eps, normed, w, topK, normTopK, weights, ids));
            return r != null ? r : ExpertRouter.super.routeDecodeAfterAdd(b, x, delta, sum, normWeight, eps, normed);
        }

        /** A backend call that writes n tokens' choice from the dense router w, or declines (false, nothing written). */
        private interface FusedCall {
            boolean run(Tensor w, Tensor weights, Tensor ids);
        }

        /** The choice of {@code call} where the router is dense without bias or adapter and the backend takes it; else null. */
        private Routed fused(Backend b, int n, FusedCall call) {
            if (linear.bias() != null || (linear.adapter() != null && linear.adapter().enabled())
                    || !(linear.weight() instanceof Weight.Dense d)) {
                return null;
            }
            TensorAllocator a = b.allocator();
            Tensor weights = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, topK);   // [N, k]
            Tensor ids = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I32, n, topK);       // [N, k]
            if (call.run(d.w(), weights, ids)) {
                return new Routed(weights, ids);
            }
            a.release(weights);
            a.release(ids);
            return null;
        }

        @Override
        public void logitGrad(Backend b, Routed r, Tensor dWeight, Tensor dLogits) {
            b.moeRouterBackward(r.saved()[0], r.saved()[1], r.weights(), r.ids(), dWeight, normTopK, dLogits);
        }
    }

    /**
     * DeepSeek-V3's and Kimi-K2's router ({@link Backend#moeSigmoidTopk}): sigmoid scores, the choice on the scores plus
     * {@code e_score_correction_bias} (null: none) within the {@code topkGroup} best of {@code nGroup} groups, the chosen
     * scores renormalised when {@code normTopK} and times {@code scaling}; saves the scores [N, E].
     */
    record SigmoidGroups(Linear linear, Tensor bias, int topK, int nGroup, int topkGroup, boolean normTopK, float scaling)
            implements ExpertRouter {
        @Override
        public Routed route(Backend b, Tensor x) {
            TensorAllocator a = b.allocator();
            int n = x.size(0);
            Tensor scores = logits(b, linear, x);                                      // [N, E], the scores in place
            Tensor weights = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, topK);   // [N, k]
            Tensor ids = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I32, n, topK);       // [N, k]
            b.moeSigmoidTopk(scores, bias, nGroup, topkGroup, topK, normTopK, scaling, scores, weights, ids);
            return new Routed(weights, ids, scores);
        }

        @Override
        public void logitGrad(Backend b, Routed r, Tensor dWeight, Tensor dLogits) {
            b.moeSigmoidRouterBackward(r.saved()[0], r.ids(), dWeight, normTopK, scaling, dLogits);
        }
    }
}
