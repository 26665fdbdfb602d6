package org.orbitrl.model.arch;

import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * Recomputed layers' inputs kept in host memory while a training step's forward and backward run (see
 * {@link Trainable#setOffloadedInputs}): the forward moves each recomputed layer's input out of the device once the
 * layer has run, and the backward brings it back for that layer's recompute and backward only. Host copies are
 * page-locked ({@link HostBuffers}, reused from step to step), copied into and back out of in order with the device's
 * work without the host waiting for either, and kept until the tape goes, so a second backward brings them back again.
 * On a host backend the inputs already are host memory and nothing moves.
 */
final class OffloadedInputs {
    private final Tensor[] host;   // per layer: the input in host memory, or null
    private final HostBuffers buffers;

    OffloadedInputs(int layers, HostBuffers buffers) {
        this.host = new Tensor[layers];
        this.buffers = buffers;
    }

    /**
     * Layer {@code i}'s input {@code t}, a tensor of {@code a}'s memory, to the host: returns null (the caller drops
     * its reference; the device copy is released) where {@code a} is a device's, else {@code t} itself.
     */
    Tensor offload(TensorAllocator a, int i, Tensor t) {
        if (a.hostMemory()) {
            return t;
        }
        Tensor h = buffers.take(a, t.dtype(), t.shape());
        a.copyToHostAsync(t, h);   // in order with the device's work; nothing on the host reads h
        host[i] = h;
        a.release(t);
        return null;
    }

    /** Gives the host tensors back to the model's buffers for its next step (the tape is going). */
    void release() {
        for (int i = 0; i < host.length; i++) {
            if (host[i] != null) {
                buffers.give(host[i]);
                host[i] = null;
            }
        }
    }

    /** Whether layer {@code i}'s input is in host memory. */
    boolean has(int i) {
        return host[i] != null;
    }

    /** Layer {@code i}'s input copied back into {@code a}'s memory (the caller releases it after the layer's backward). */
    Tensor restore(TensorAllocator a, int i) {
        return a.upload(MemoryCategory.ACTIVATIONS, host[i]);
    }
}
