package org.orbitrl.model.nn;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantizedTensor;

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
