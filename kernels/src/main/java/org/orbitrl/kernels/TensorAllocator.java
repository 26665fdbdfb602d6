package org.orbitrl.kernels;

/**
 * Where tensors come from. Every allocation names its {@link MemoryCategory}, so the arena
 * that implements this for a job (module {@code memory}) can account and enforce the plan.
 */
public interface TensorAllocator {

    /** A zero-filled contiguous tensor. */
    Tensor allocate(MemoryCategory category, DType dtype, long... shape);

    /**
     * An allocator with no accounting over an automatic (GC-managed) arena: for tests, tools
     * and short-lived host buffers. Memory lives until the tensor is unreachable.
     */
    static TensorAllocator heap() {
        return (category, dtype, shape) -> Tensor.allocate(java.lang.foreign.Arena.ofAuto(), dtype, shape);
    }
}
