package org.orbitrl.model;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.lang.foreign.Arena;
import java.util.Arrays;

/**
 * The device memory of a {@link StrictBackend}: tensors of an arena confined to the device thread,
 * so the host can neither read nor write them except through {@link #toHost}, {@link #upload},
 * {@link #copy} and {@link #zero}, which, like a device allocator's, require the device side to be
 * contiguous. Counts the host reads taken through {@link #toHost} and their bytes, and the bytes uploaded.
 */
public final class StrictAllocator implements TensorAllocator {
    private final StrictBackend backend;
    private final Arena arena;
    private int hostReads;
    private long hostReadBytes;
    private long uploadBytes;
    private int allocations;
    private int uploads;
    private int copies;
    private java.util.Map<String, Integer> sites;   // allocation sites counted while on (see countSites)
    private final java.util.Map<java.lang.foreign.MemorySegment, MemoryCategory> categories = new java.util.IdentityHashMap<>();
    private final java.util.Map<MemoryCategory, Long> live = new java.util.EnumMap<>(MemoryCategory.class);

    StrictAllocator(StrictBackend backend) {
        this.backend = backend;
        this.arena = backend.on(Arena::ofConfined);
    }

    @Override
    public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        allocations++;
        if (sites != null) {
            sites.merge(site(), 1, Integer::sum);
        }
        Tensor t = backend.on(() -> Tensor.allocate(arena, dtype, shape));
        categories.put(t.segment(), category);
        live.merge(category, t.byteSize(), Long::sum);
        return t;
    }

    /** As a device allocator's: not zero-filled, and poisoned under {@link TensorAllocator#poisonUninitialized}. */
    @Override
    public Tensor allocateUninitialized(MemoryCategory category, DType dtype, long... shape) {
        Tensor t = allocate(category, dtype, shape);
        if (TensorAllocator.poisonUninitialized()) {
            backend.on(() -> {
                TensorAllocator.poison(t);
                return null;
            });
        }
        return t;
    }

    /** True for tensors of this allocator's memory (views included). */
    public boolean owns(Tensor t) {
        return t.segment().scope().equals(arena.scope());
    }

    @Override
    public boolean hostMemory() {
        return false;
    }

    @Override
    public Tensor upload(MemoryCategory category, Tensor host) {
        if (owns(host)) {
            return host;
        }
        Tensor dev = allocate(category, host.dtype(), host.shape());
        copy(host, dev);
        copies--;   // counted as an upload, not a copy
        uploads++;
        uploadBytes += dev.byteSize();
        return dev;
    }

    @Override
    public Tensor toHost(Tensor t) {
        if (!owns(t)) {
            return t;
        }
        t.requireContiguous("device copy source");
        hostReads++;
        hostReadBytes += t.byteSize();
        return backend.on(() -> {
            Tensor h = Tensor.allocate(Arena.ofAuto(), t.dtype(), t.shape());
            h.copyFrom(t);
            return h;
        });
    }

    @Override
    public void copy(Tensor src, Tensor dst) {
        if (!Arrays.equals(src.shape(), dst.shape())) {
            throw new IllegalArgumentException("copy of " + src + " into " + dst + ": shapes differ");
        }
        if (owns(src)) {
            src.requireContiguous("device copy source");
        }
        if (owns(dst)) {
            dst.requireContiguous("device copy destination");
        }
        copies++;
        backend.on(() -> {
            dst.copyFrom(src);
            return null;
        });
    }

    @Override
    public void zero(Tensor t) {
        if (owns(t)) {
            t.requireContiguous("zero");
        }
        backend.on(() -> t.fill(0));
    }

    /** Poisons a released whole tensor of this memory when release poisoning is on (see {@link TensorAllocator#release}). */
    @Override
    public void release(Tensor t) {
        if (owns(t) && TensorAllocator.isWhole(t)) {
            MemoryCategory c = categories.get(t.segment());
            if (c == MemoryCategory.ACTIVATIONS || c == MemoryCategory.LOGITS) {   // as the CUDA backend frees
                categories.remove(t.segment());
                live.merge(c, -t.byteSize(), Long::sum);
            }
        }
        if (TensorAllocator.poisonReleased() && owns(t) && TensorAllocator.isWhole(t)) {
            backend.on(() -> {
                TensorAllocator.poison(t);
                return null;
            });
        }
    }

    /**
     * Frees a whole allocation of any category: out of the live count of its category, poisoned when release poisoning
     * is on; a view or a tensor of other memory is an error, as on the CUDA backend.
     */
    @Override
    public void free(Tensor t) {
        if (!owns(t) || !TensorAllocator.isWhole(t)) {
            throw new IllegalArgumentException("free: " + t + " is not a whole allocation of this memory");
        }
        MemoryCategory c = categories.remove(t.segment());
        if (c == null) {
            throw new IllegalArgumentException("free: " + t + " was freed already");
        }
        live.merge(c, -t.byteSize(), Long::sum);
        if (TensorAllocator.poisonReleased()) {
            backend.on(() -> {
                TensorAllocator.poison(t);
                return null;
            });
        }
    }

    /** Bytes of {@code c} allocated and not freed (nor released, for the per-step categories). */
    public long liveBytes(MemoryCategory c) {
        return live.getOrDefault(c, 0L);
    }

    /** How many device tensors were copied to the host through {@link #toHost}. */
    public int hostReads() {
        return hostReads;
    }

    /** Bytes of the device tensors copied to the host through {@link #toHost}. */
    public long hostReadBytes() {
        return hostReadBytes;
    }

    /**
     * Counts allocations by their first caller outside the allocator and the tensor classes from now on (null: stops);
     * returns the counts so far.
     */
    public java.util.Map<String, Integer> countSites(boolean on) {
        java.util.Map<String, Integer> was = sites;
        sites = on ? new java.util.TreeMap<>() : null;
        return was;
    }

    private static String site() {
        return StackWalker.getInstance().walk(frames -> frames
                .filter(f -> !f.getClassName().startsWith("org.orbitrl.model.Strict") && !f.getClassName().startsWith("org.orbitrl.kernels.")
                        && !f.getClassName().endsWith(".Ops") && !f.getClassName().endsWith(".Node"))
                .findFirst().map(f -> f.getClassName().substring(f.getClassName().lastIndexOf('.') + 1) + "." + f.getMethodName()
                        + ":" + f.getLineNumber()).orElse("?"));
    }

    /** How many tensors were allocated in this memory (uploads included). */
    public int allocations() {
        return allocations;
    }

    /** How many host tensors were copied into this memory through {@link #upload}. */
    public int uploads() {
        return uploads;
    }

    /** How many {@link #copy} calls were made (uploads not counted). */
    public int copies() {
        return copies;
    }

    /** Bytes of the host tensors copied into this memory through {@link #upload}. */
    public long uploadBytes() {
        return uploadBytes;
    }

    void closeArena() {
        arena.close();
    }
}
