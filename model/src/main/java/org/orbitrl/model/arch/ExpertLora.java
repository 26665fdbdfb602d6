package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.adapter.LoraLinear;
import org.orbitrl.model.nn.Linear;

/**
 * The LoRA of one expert projection (gate, up or down) of every expert, run over the expert-grouped
 * rows with the grouped products of {@link Backend#moeExpertMatmul}: {@code y += s·(x·A_eᵀ)·B_eᵀ} on
 * expert e's rows, two grouped products for all experts (the second accumulating into y, {@link
 * Backend#moeExpertMatmulAccumulate}) instead of a few launches and temporaries per expert. Backward accumulates each expert's A and B gradients from its rows with two
 * grouped weight-gradient products ({@link Backend#moeExpertWeightGrad}) and accumulates
 * {@code s·(dy·B_e)·A_e} into dx. Built per call from the layers' current hooks; null when some
 * expert's hook is not an enabled LoRA of the common rank and scale (the hooks then run one by one).
 */
final class ExpertLora {
    private final ExpertWeights a;   // E x [r, in]
    private final ExpertWeights b;   // E x [out, r]
    private final Tensor[] gradA;    // E x [r, in]
    private final Tensor[] gradB;    // E x [out, r]
    private final float scale;

    private ExpertLora(ExpertWeights a, ExpertWeights b, Tensor[] gradA, Tensor[] gradB, float scale) {
        this.a = a;
        this.b = b;
        this.gradA = gradA;
        this.gradB = gradB;
        this.scale = scale;
    }

    /** The projection's LoRA over all experts, or null (see the class comment). */
    static ExpertLora of(Linear[] layers) {
        if (layers.length == 0 || layers[0].adapter() == null || !(layers[0].adapter().resolved() instanceof LoraLinear first)) {
            return null;
        }
        Tensor[] as = new Tensor[layers.length];
        Tensor[] bs = new Tensor[layers.length];
        Tensor[] gas = new Tensor[layers.length];
        Tensor[] gbs = new Tensor[layers.length];
        for (int e = 0; e < layers.length; e++) {
            Linear.AdapterHook h = layers[e].adapter();   // a slot's hook: enabled only while its slots are
            if (h == null || !h.enabled() || !(h.resolved() instanceof LoraLinear l) || !l.enabled() || l.rank() != first.rank()
                    || l.scale() != first.scale()) {
                return null;
            }
            as[e] = l.a();
            bs[e] = l.b();
            gas[e] = l.gradA();
            gbs[e] = l.gradB();
        }
        int r = first.rank();
        return new ExpertLora(new ExpertWeights(r, as[0].size(1), as, new QuantizedTensor[as.length]),
                new ExpertWeights(bs[0].size(0), r, bs, new QuantizedTensor[bs.length]), gas, gbs, first.scale());
    }

    /** y [P, out] += s·(x·Aᵀ)·Bᵀ per expert's rows of x [P, in]. */
    void forward(Backend bk, GroupOffsets offsets, Tensor x, Tensor y) {
        TensorAllocator al = bk.allocator();
        Tensor xa = al.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, x.size(0), a.rows());   // [P, r]
        offsets.matmul(bk, x, a, xa, 0);
        offsets.matmulAccumulate(bk, xa, b, scale, y);
        al.release(xa);
    }

    /** Whether two LoRAs' A factors have one shape (rank and inputs) over as many experts: their products can share a call. */
    static boolean sameShape(ExpertLora first, ExpertLora second) {
        return first.a.rows() == second.a.rows() && first.a.cols() == second.a.cols() && first.a.experts() == second.a.experts();
    }

    /**
     * {@link #forward} of two LoRAs that read the same x (the gate's and the up's, {@link #sameShape}): both A products in
     * one call ({@link Backend#moeExpertMatmulShared}), then each B product accumulating into its y.
     */
    static void forward(Backend bk, GroupOffsets offsets, Tensor x, ExpertLora first, Tensor y1, ExpertLora second, Tensor y2) {
        TensorAllocator al = bk.allocator();
        int p = x.size(0);
        Tensor xa1 = al.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, first.a.rows());    // [P, r]
        Tensor xa2 = al.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, p, second.a.rows());   // [P, r]
        offsets.matmulShared(bk, x, new ExpertWeights[]{first.a, second.a}, new Tensor[]{xa1, xa2}, 0);
        offsets.matmulAccumulate(bk, xa1, first.b, first.scale, y1);
        offsets.matmulAccumulate(bk, xa2, second.b, second.scale, y2);
        al.release(xa1);
        al.release(xa2);
    }

    /**
     * The pairs' products with A for the per-pair form of {@link #forward} in a decode step ({@link Backend#moeExpertMatmulPairs},
     * nothing read on the host): xa [P, r] row p = x[p / xDiv]·A_eᵀ with e = ids[p] (the caller releases it); then
     * {@link #addPairsB} adds s·xa·B_eᵀ into y, or the backend fuses that term into the projection ({@link #pairTerm}).
     */
    Tensor pairsA(Backend bk, Tensor x, int xDiv, Tensor ids) {
        Tensor xa = bk.allocator().allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, ids.numel(), a.rows());   // [P, r]
        bk.moeExpertMatmulPairs(x, xDiv, a, ids, 1f, xa, false);
        return xa;
    }

    /**
     * {@link #pairsA} of two LoRAs that read the same x (the gate's and the up's) in one backend call ({@link
     * Backend#moeExpertMatmulPairsShared}): their xa [P, r] each (the caller releases them).
     */
    static Tensor[] pairsA(Backend bk, Tensor x, int xDiv, Tensor ids, ExpertLora first, ExpertLora second) {
        TensorAllocator al = bk.allocator();
        Tensor[] xa = {al.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, ids.numel(), first.a.rows()),
                al.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, ids.numel(), second.a.rows())};
        bk.moeExpertMatmulPairsShared(x, xDiv, new ExpertWeights[]{first.a, second.a}, ids, xa);
        return xa;
    }

    /** y [P, out] row p += s·xa[p]·B_eᵀ, xa from {@link #pairsA}. */
    void addPairsB(Backend bk, Tensor xa, Tensor ids, Tensor y) {
        bk.moeExpertMatmulPairs(xa, 1, b, ids, scale, y, true);
    }

    /** The term {@link Backend#moeSwigluPairs} or {@link Backend#moeExpertMatmulPairsLora} adds for this LoRA, xa from {@link #pairsA}. */
    Backend.PairLora pairTerm(Tensor xa) {
        return new Backend.PairLora(xa, b, scale);
    }

    /** Accumulates each expert's A and B gradients and adds the adapter's share into dx [P, in]. */
    void backward(Backend bk, int[] offsets, Tensor x, Tensor dy, Tensor dx) {
        if (gradA[0] == null) {
            throw new IllegalStateException("a backward pass through experts' LoRA made without gradient buffers (a rollout"
                    + " slot's)");
        }
        TensorAllocator al = bk.allocator();
        int p = offsets[offsets.length - 1];
        Tensor xa = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, a.rows());    // [P, r] recomputed
        Tensor dyB = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, a.rows());   // [P, r] = dy · B
        bk.moeExpertMatmul(x, a, offsets, xa, 0);
        bk.moeExpertMatmulTransposed(dy, b, offsets, dyB, 0);
        bk.moeExpertWeightGrad(dy, xa, offsets, scale, gradB);    // dB_e += s · dy_eᵀ · xa_e
        bk.moeExpertWeightGrad(dyB, x, offsets, scale, gradA);    // dA_e += s · (dy·B)_eᵀ · x_e
        al.release(xa);
        bk.moeExpertMatmulAccumulate(dyB, a, offsets, scale, dx, true);   // dx += s · (dy·B) · A
        al.release(dyB);
    }
}
