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
 * gives them back when its tape is released, so the next step copies into memory already mapped. They are the
 * allocator's page-locked host memory ({@link TensorAllocator#allocatePinnedHost}), which a device copies into without
 * the host waiting for it ({@link TensorAllocator#copyToHostAsync}) and reads back in order with its work.
 *
 * <p>A take is served by the smallest kept buffer of the same allocator and dtype that holds it (a view of its first
 * elements: steps of fewer tokens reuse a longer step's buffers); where none does, the kept buffers of that allocator
 * and dtype too small for it are freed (the steps have grown past them) and a new one is made, so that what is kept
 * stays about one step's worth. A tape never released keeps its buffers until the allocator closes. {@link #free}
 * gives the kept ones back to their allocators.
 */
public final class HostBuffers {
    /** One page-locked allocation and the allocator that made it. */
    private record Buffer(Tensor base, TensorAllocator allocator) {
        long elements() {
            return base.numel();
        }
    }

    private final List<Buffer> kept = new ArrayList<>();
    private final Map<Tensor, Buffer> out = new IdentityHashMap<>();   // handed out: the view -> its buffer

    /** A contiguous host tensor of {@code dtype} and {@code shape} for copies out of {@code a}'s memory (see above). */
    public synchronized Tensor take(TensorAllocator a, DType dtype, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        Buffer best = null;
        for (Buffer b : kept) {
            if (b.allocator() == a && b.base().dtype() == dtype && b.elements() >= n
                    && (best == null || b.elements() < best.elements())) {
                best = b;
            }
        }
        if (best == null) {
            for (int i = kept.size() - 1; i >= 0; i--) {   // outgrown: freed rather than kept beside the new one
                Buffer b = kept.get(i);
                if (b.allocator() == a && b.base().dtype() == dtype) {
                    kept.remove(i);
                    a.freePinnedHost(b.base());
                }
            }
            best = new Buffer(a.allocatePinnedHost(dtype, n), a);
        } else {
            kept.remove(best);
        }
        Tensor view = Tensor.wrap(best.base().segment().asSlice(best.base().byteOffset(), n * dtype.bytes()), dtype, shape);
        out.put(view, best);
        return view;
    }

    /** Gives {@code t}, taken from here and not given back since, back for a later step. */
    public synchronized void give(Tensor t) {
        Buffer b = out.remove(t);
        if (b == null) {
            throw new IllegalArgumentException(t + " was not taken from these buffers, or was given back already");
        }
        kept.add(b);
    }

    /** Bytes kept for later steps. */
    public synchronized long freeBytes() {
        long bytes = 0;
        for (Buffer b : kept) {
            bytes += b.base().byteSize();
        }
        return bytes;
    }

    /** Frees the buffers kept for later steps (after their allocators' work that still reads or writes them). */
    public synchronized void free() {
        for (Buffer b : kept) {
            b.allocator().freePinnedHost(b.base());
        }
        kept.clear();
    }
}
