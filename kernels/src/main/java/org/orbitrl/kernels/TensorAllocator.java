package org.orbitrl.kernels;

/**
 * Where tensors come from. Every allocation names its {@link MemoryCategory}, so the arena
 * that implements this for a job (module {@code memory}) can account and enforce the plan.
 */
public interface TensorAllocator {

    /** A zero-filled contiguous tensor. */
    Tensor allocate(MemoryCategory category, DType dtype, long... shape);

    // The four methods below move values between host memory and this allocator's memory. Host
    // allocators keep their defaults (their memory is host memory); a device allocator overrides them.

    /** True when this allocator's tensors are host memory the host may read and write directly. */
    default boolean hostMemory() {
        return true;
    }

    /** A tensor of this allocator's memory holding {@code host}'s values: {@code host} itself where that is already so. */
    default Tensor upload(MemoryCategory category, Tensor host) {
        return host;
    }

    /**
     * {@code t}'s values readable on the host: {@code t} itself for host memory, else a host copy
     * taken after all work issued on it has finished. Meant for small values the host must act on.
     */
    default Tensor toHost(Tensor t) {
        return t;
    }

    /** Copies {@code src} (host memory or this allocator's) into {@code dst} (this allocator's), same shape. */
    default void copy(Tensor src, Tensor dst) {
        dst.copyFrom(src);
    }

    /** Sets every element of {@code t} (this allocator's memory) to zero. */
    default void zero(Tensor t) {
        t.fill(0);
    }

    /**
     * An allocator with no accounting over an automatic (GC-managed) arena: for tests, tools
     * and short-lived host buffers. Memory lives until the tensor is unreachable.
     */
    static TensorAllocator heap() {
        return (category, dtype, shape) -> Tensor.allocate(java.lang.foreign.Arena.ofAuto(), dtype, shape);
    }
}
