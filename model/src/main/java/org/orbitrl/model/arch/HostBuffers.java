package org.orbitrl.model.arch;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

/**
 * Host tensors a model keeps from one training step to the next for the layer inputs it offloads
 * ({@link Trainable#setOffloadedInputs}): a step takes them as its forward moves each input out of the device and
 * gives them back when its tape is released, so the next step of the same shape copies into memory already mapped.
 * They are the allocator's page-locked host memory ({@link TensorAllocator#allocatePinnedHost}), which a device copies
 * into without the host waiting for it ({@link TensorAllocator#copyToHostAsync}) and reads back in order with its
 * work. A tape never released keeps its tensors; the next step then takes new ones. {@link #free} gives the kept ones
 * back to their allocators (a device allocator frees the rest when it closes).
 */
public final class HostBuffers {
    private final List<Tensor> free = new ArrayList<>();
    private final Map<Tensor, TensorAllocator> from = new IdentityHashMap<>();   // every tensor handed out, by allocator

    /**
     * A contiguous host tensor of {@code dtype} and {@code shape} for copies out of {@code a}'s memory: a free one of
     * {@code a}'s of as many elements, else a new one.
     */
    public synchronized Tensor take(TensorAllocator a, DType dtype, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        for (int i = 0; i < free.size(); i++) {
            Tensor t = free.get(i);
            if (t.dtype() == dtype && t.numel() == n && from.get(t) == a) {
                free.remove(i);
                Tensor view = t.reshape(shape);
                from.put(view, a);
                if (view != t) {
                    from.remove(t);
                }
                return view;
            }
        }
        Tensor t = a.allocatePinnedHost(dtype, shape);
        from.put(t, a);
        return t;
    }

    /** Gives {@code t}, taken from here, back for a later step. */
    public synchronized void give(Tensor t) {
        if (!from.containsKey(t)) {
            throw new IllegalArgumentException(t + " was not taken from these buffers");
        }
        free.add(t);
    }

    /** Bytes kept free for later steps. */
    public synchronized long freeBytes() {
        long b = 0;
        for (Tensor t : free) {
            b += t.byteSize();
        }
        return b;
    }

    /** Frees the tensors kept for later steps (after their allocators' work that still reads or writes them). */
    public synchronized void free() {
        for (Tensor t : free) {
            from.remove(t).freePinnedHost(t);
        }
        free.clear();
    }
}
