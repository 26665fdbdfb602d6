package org.orbitrl.model.arch;

import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * Recomputed layers' inputs kept in host memory while a training step's forward and backward run (see
 * {@link Trainable#setOffloadedInputs}): the forward moves each recomputed layer's input out of the device once the
 * layer has run, and the backward brings it back for that layer's recompute and backward only. Host copies are
 * off-heap and kept until the tape goes, so a second backward brings them back again. On a host backend the inputs
 * already are host memory and nothing moves.
 */
final class OffloadedInputs {
    private final Tensor[] host;   // per layer: the input in host memory, or null

    OffloadedInputs(int layers) {
        host = new Tensor[layers];
    }

    /**
     * Layer {@code i}'s input {@code t}, a tensor of {@code a}'s memory, to the host: returns null (the caller drops
     * its reference; the device copy is released) where {@code a} is a device's, else {@code t} itself.
     */
    Tensor offload(TensorAllocator a, int i, Tensor t) {
        if (a.hostMemory()) {
            return t;
        }
        host[i] = a.toHost(t);
        a.release(t);
        return null;
    }

    /** Whether layer {@code i}'s input is in host memory. */
    boolean has(int i) {
        return host[i] != null;
    }

    /** Layer {@code i}'s input copied back into {@code a}'s memory (the caller releases it after the layer's backward). */
    Tensor restore(TensorAllocator a, int i) {
        return a.upload(MemoryCategory.ACTIVATIONS, host[i]);
    }

    /** Bytes held in host memory. */
    long hostBytes() {
        long b = 0;
        for (Tensor t : host) {
            b += t == null ? 0 : t.byteSize();
        }
        return b;
    }
}
