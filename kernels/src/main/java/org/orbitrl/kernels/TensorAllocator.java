package org.orbitrl.kernels;

/**
 * Where tensors come from. Every allocation names its {@link MemoryCategory}, so the arena
 * that implements this for a job (module {@code memory}) can account and enforce the plan.
 */
public interface TensorAllocator {

    /** A zero-filled contiguous tensor. */
    Tensor allocate(MemoryCategory category, DType dtype, long... shape);

    /**
     * A contiguous tensor whose values are undefined until written: for an output that the next operation on it writes
     * whole (a backend operation's {@code y = ...}), where zero-filling it would cost a device a launch of its own (and
     * a captured step a node at every replay). An allocator whose fill costs nothing zero-fills it as {@link #allocate}
     * does; under {@link #poisonUninitialized} it holds {@link #poison}'s values instead.
     */
    default Tensor allocateUninitialized(MemoryCategory category, DType dtype, long... shape) {
        Tensor t = allocate(category, dtype, shape);
        if (poisonUninitialized() && hostMemory()) {
            poison(t);
        }
        return t;
    }

    // The four methods below move values between host memory and this allocator's memory. Host
    // allocators keep their defaults (their memory is host memory); a device allocator overrides them.

    /** True when this allocator's tensors are host memory the host may read and write directly. */
    default boolean hostMemory() {
        return true;
    }

    /** A tensor of this allocator's memory holding {@code host}'s values: {@code host} itself where that is already so. */
    default Tensor upload(MemoryCategory category, Tensor host) {
        if (CaptureCheck.active()) {
            CaptureCheck.check("upload of " + host);
        }
        return host;
    }

    /**
     * {@code t}'s values readable on the host: {@code t} itself for host memory, else a host copy
     * taken after all work issued on it has finished. Meant for small values the host must act on.
     */
    default Tensor toHost(Tensor t) {
        if (CaptureCheck.active()) {
            CaptureCheck.check("host read of " + t);
        }
        return t;
    }

    /**
     * An f32 tensor of this allocator's memory holding {@code values}, shaped as given (a copy: the caller may reuse the
     * array). A device allocator stages the array through page-locked memory.
     */
    default Tensor uploadFloats(MemoryCategory category, float[] values, long... shape) {
        return upload(category, Tensor.of(values, shape));
    }

    /** The values of f32 tensor {@code t} (this allocator's memory or the host's) as a new array, row-major. */
    default float[] toFloats(Tensor t) {
        return toHost(t).toFloatArray();
    }

    /** Copies {@code src} (host memory or this allocator's) into {@code dst} (this allocator's), same shape. */
    default void copy(Tensor src, Tensor dst) {
        dst.copyFrom(src);
    }

    /**
     * A host tensor that {@link #copyToHostAsync} copies into without waiting and {@link #upload} reads back in order
     * with the allocator's work: page-locked host memory on a device, kept until {@link #freePinnedHost}; on a host
     * allocator (the default) an ordinary host tensor.
     */
    default Tensor allocatePinnedHost(DType dtype, long... shape) {
        return Tensor.allocate(java.lang.foreign.Arena.ofAuto(), dtype, shape);
    }

    /** Frees a tensor of {@link #allocatePinnedHost} once the work issued before the call is done (the default: nothing). */
    default void freePinnedHost(Tensor t) {
    }

    /**
     * Copies {@code src} (this allocator's memory) into {@code dst} (a tensor of {@link #allocatePinnedHost}, same shape
     * and dtype) in order with the work issued before it, without waiting for it: the host may read {@code dst} only
     * after {@link #awaitCopies}, while {@link #upload} of {@code dst} reads it in order without that. The default:
     * {@link #copy}, done on return.
     */
    default void copyToHostAsync(Tensor src, Tensor dst) {
        copy(src, dst);
    }

    /** Waits until every {@link #copyToHostAsync} issued so far is done (the default: nothing is in flight). */
    default void awaitCopies() {
    }

    /** Sets every element of {@code t} (this allocator's memory) to zero. */
    default void zero(Tensor t) {
        t.fill(0);
    }

    /**
     * Frees now the allocation {@code t} was allocated as, when {@code t} is a whole allocation of
     * this allocator in a per-step category ({@link MemoryCategory#ACTIVATIONS},
     * {@link MemoryCategory#LOGITS}); does nothing for anything else (a view that does not cover
     * its whole allocation, a tensor of another allocator or of another category, one already
     * released). Work issued on {@code t} before the call is ordered before the free; {@code t} and
     * every view of it must not be used afterwards. Releasing twice is safe, and so is a tensor
     * that later becomes unreachable.
     *
     * <p>Host memory is left to the garbage collector; with the system property
     * {@code orbit.poisonReleased=true} (the test JVMs set it) a released whole host tensor is
     * filled with {@link #poison poison values}, so that a use after release shows in the results.
     */
    default void release(Tensor t) {
        if (poisonReleased() && hostMemory() && isWhole(t)) {
            poison(t);
        }
    }

    /**
     * Frees now the whole allocation {@code t} of any category, for memory whose holder ends before the allocator does
     * (a sequence's decode state, freed with the sequence). Work issued on {@code t} before the call is ordered before
     * the free; {@code t} and its views must not be used afterwards. A device allocator throws for a tensor that is not
     * one of its whole allocations. Host memory is left to the garbage collector (the default), poisoned as
     * {@link #release} poisons it.
     */
    default void free(Tensor t) {
        if (poisonReleased() && hostMemory() && isWhole(t)) {
            poison(t);
        }
    }

    /** True when released host tensors are poisoned (system property {@code orbit.poisonReleased}). */
    static boolean poisonReleased() {
        return Boolean.getBoolean("orbit.poisonReleased");
    }

    /**
     * True when {@link #allocateUninitialized}'s tensors are filled with {@link #poison}'s values (system property
     * {@code orbit.poisonUninitialized}; the test JVMs set it), so that an element nothing wrote reaches what reads it as
     * NaN (an invalid index) instead of a zero that may pass for a value.
     */
    static boolean poisonUninitialized() {
        return Boolean.getBoolean("orbit.poisonUninitialized");
    }

    /** True when {@code t} starts at its segment's start and covers all of it (a whole host allocation). */
    static boolean isWhole(Tensor t) {
        return t.byteOffset() == 0 && t.byteSize() > 0 && t.byteSize() == t.segment().byteSize();
    }

    /**
     * Fills host tensor {@code t} with values no computation should see: NaN for floating-point
     * dtypes, the most negative value (an invalid index) for integer ones.
     */
    static void poison(Tensor t) {
        t.fill(t.dtype().isFloatingPoint() ? Float.NaN : -2147483648f);
    }

    /**
     * An allocator with no accounting over an automatic (GC-managed) arena: for tests, tools
     * and short-lived host buffers. Memory lives until the tensor is unreachable.
     */
    static TensorAllocator heap() {
        return (category, dtype, shape) -> Tensor.allocate(java.lang.foreign.Arena.ofAuto(), dtype, shape);
    }
}
