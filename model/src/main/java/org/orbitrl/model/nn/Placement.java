package org.orbitrl.model.nn;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;

/**
 * Puts frozen base weights where a backend's kernels read them: for a host backend they stay as
 * they are (zero-copy views of the mapped checkpoint); for a device backend each is copied once
 * into device memory, accounted as {@link MemoryCategory#BASE_WEIGHTS}.
 */
public final class Placement {
    private Placement() {
    }

    /** {@code t} in {@code allocator}'s memory. */
    public static Tensor tensor(TensorAllocator allocator, Tensor t) {
        return t == null ? null : allocator.upload(MemoryCategory.BASE_WEIGHTS, t);
    }

    /** A quantized weight with its codes, scales and zero points in {@code allocator}'s memory. */
    public static QuantizedTensor quantized(TensorAllocator allocator, QuantizedTensor w) {
        Tensor codes = tensor(allocator, w.codes());
        Tensor scales = tensor(allocator, w.scales());
        Tensor zeros = tensor(allocator, w.zeros());
        if (codes == w.codes() && scales == w.scales() && zeros == w.zeros()) {
            return w;
        }
        return new QuantizedTensor(w.format(), w.rows(), w.cols(), codes, scales, zeros, w.globalScale());
    }

    /**
     * One projection of a layer's routed experts in {@code allocator}'s memory. In device memory, experts quantized
     * in one format and shape are placed back to back: their codes, scales and zero points each in one allocation of
     * E pieces, each expert a view of its piece, so the experts also read as one stacked matrix
     * ({@link org.orbitrl.kernels.ExpertWeights#stacked}) for the grouped tensor-core kernels. Anything else (host
     * memory, full-precision experts, a mix, an expert this rank does not hold: a null entry, kept) is placed expert by
     * expert as {@link #weight} does.
     */
    public static Weight[] experts(TensorAllocator allocator, Weight[] experts) {
        Weight[] out = new Weight[experts.length];
        QuantizedTensor first = experts.length > 1 && experts[0] instanceof Weight.Quantized q ? q.w() : null;
        boolean stack = first != null && !allocator.hostMemory();
        for (int e = 0; stack && e < experts.length; e++) {
            stack = stacksWith(experts[e], first);
        }
        if (!stack) {
            for (int e = 0; e < experts.length; e++) {
                out[e] = experts[e] == null ? null : weight(allocator, experts[e]);
            }
            return out;
        }
        int n = experts.length;
        Tensor codes = stackOf(allocator, first.codes(), n);
        Tensor scales = stackOf(allocator, first.scales(), n);
        Tensor zeros = first.zeros() == null ? null : stackOf(allocator, first.zeros(), n);
        for (int e = 0; e < n; e++) {
            out[e] = intoPiece(allocator, ((Weight.Quantized) experts[e]).w(), codes, scales, zeros, e, n);
        }
        return out;
    }

    /**
     * {@link #experts(TensorAllocator, Weight[])} for experts made one at a time ({@code source.apply(e)}, asked once each,
     * in order, and not kept): on a device each is copied into its piece of the stack as soon as it is made, so a
     * layer's experts quantized on load are never all held on the host at once. The stack's layout is the first
     * expert's; an expert that does not stack with it (another format or shape) is placed alone, and the experts then
     * no longer read as one matrix. Every expert must be held (no null).
     */
    public static Weight[] experts(TensorAllocator allocator, int count, java.util.function.IntFunction<Weight> source) {
        Weight[] out = new Weight[count];
        Weight firstWeight = count > 0 ? source.apply(0) : null;
        if (count < 2 || allocator.hostMemory() || !(firstWeight instanceof Weight.Quantized fq)) {
            for (int e = 0; e < count; e++) {
                Weight w = e == 0 ? firstWeight : source.apply(e);
                out[e] = weight(allocator, java.util.Objects.requireNonNull(w, "expert " + e));
            }
            return out;
        }
        QuantizedTensor first = fq.w();
        Tensor codes = stackOf(allocator, first.codes(), count);
        Tensor scales = stackOf(allocator, first.scales(), count);
        Tensor zeros = first.zeros() == null ? null : stackOf(allocator, first.zeros(), count);
        for (int e = 0; e < count; e++) {
            Weight w = java.util.Objects.requireNonNull(e == 0 ? firstWeight : source.apply(e), "expert " + e);
            if (!stacksWith(w, first)) {
                out[e] = weight(allocator, w);
                continue;
            }
            out[e] = intoPiece(allocator, ((Weight.Quantized) w).w(), codes, scales, zeros, e, count);
        }
        return out;
    }

    /** Expert e of {@code count} copied into its pieces of the stacks, as a weight viewing them. */
    private static Weight intoPiece(TensorAllocator allocator, QuantizedTensor q, Tensor codes, Tensor scales, Tensor zeros, int e,
                                    int count) {
        Tensor c = piece(codes, e, count);
        Tensor s = piece(scales, e, count);
        Tensor z = zeros == null ? null : piece(zeros, e, count);
        allocator.copy(q.codes(), c);
        allocator.copy(q.scales(), s);
        if (z != null) {
            allocator.copy(q.zeros(), z);
        }
        return Weight.of(new QuantizedTensor(q.format(), q.rows(), q.cols(), c, s, z, q.globalScale()));
    }

    /** Whether {@code w} is quantized as {@code first} is, in a layout of the same shapes (a piece of its stack). */
    private static boolean stacksWith(Weight w, QuantizedTensor first) {
        return w instanceof Weight.Quantized q && q.w().format() == first.format() && q.w().rows() == first.rows()
                && q.w().cols() == first.cols() && (q.w().zeros() == null) == (first.zeros() == null)
                && Float.floatToRawIntBits(q.w().globalScale()) == Float.floatToRawIntBits(first.globalScale())
                && sameLayout(q.w().codes(), first.codes()) && sameLayout(q.w().scales(), first.scales())
                && (first.zeros() == null || sameLayout(q.w().zeros(), first.zeros()));
    }

    private static boolean sameLayout(Tensor t, Tensor first) {
        return t.dtype() == first.dtype() && t.rank() > 0 && Arrays.equals(t.shape(), first.shape());
    }

    /** One allocation of {@code count} pieces shaped as {@code like}, stacked along dimension 0. */
    private static Tensor stackOf(TensorAllocator allocator, Tensor like, int count) {
        long[] shape = like.shape();
        shape[0] *= count;
        return allocator.allocate(MemoryCategory.BASE_WEIGHTS, like.dtype(), shape);
    }

    /** Piece e of {@code count} of a stack made by {@link #stackOf}. */
    private static Tensor piece(Tensor stack, int e, int count) {
        long rows = stack.dim(0) / count;
        return stack.slice(0, e * rows, (e + 1) * rows);
    }

    /** {@code w} with its tensors in {@code allocator}'s memory. */
    public static Weight weight(TensorAllocator allocator, Weight w) {
        return switch (w) {
            case Weight.Dense d -> {
                Tensor t = tensor(allocator, d.w());
                yield t == d.w() ? w : Weight.of(t);
            }
            case Weight.Quantized q -> {
                QuantizedTensor p = quantized(allocator, q.w());
                yield p == q.w() ? w : Weight.of(p);
            }
        };
    }

    /**
     * {@code l}'s weight and bias in {@code allocator}'s memory (a bias as f32, what the kernels add);
     * {@code l} itself where both already are.
     */
    public static Linear linear(TensorAllocator allocator, Linear l) {
        Weight w = weight(allocator, l.weight());
        Tensor bias = l.bias() == null ? null : tensor(allocator, l.bias().dtype() == DType.F32 ? l.bias() : l.bias().to(DType.F32));
        return w == l.weight() && bias == l.bias() ? l : new Linear(l.name(), w, bias);
    }
}
