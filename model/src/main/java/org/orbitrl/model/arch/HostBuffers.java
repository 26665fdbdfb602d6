package org.orbitrl.model.arch;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;

/**
 * Host tensors off the Java heap that a model keeps from one training step to the next for the layer inputs it
 * offloads ({@link Trainable#setOffloadedInputs}): a step takes them as its forward moves each input out of the device
 * and gives them back when its tape is released, so the next step of the same shape copies into memory already mapped
 * instead of allocating (and zeroing) a fresh host tensor a layer, which bounds a device-to-host copy at a fraction of
 * the link's speed. A tape never released keeps its tensors; the next step then takes new ones.
 */
public final class HostBuffers {
    private final List<Tensor> free = new ArrayList<>();

    /** A contiguous host tensor of {@code dtype} and {@code shape}: a free one of as many bytes, else a new one. */
    public synchronized Tensor take(DType dtype, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        for (int i = 0; i < free.size(); i++) {
            Tensor t = free.get(i);
            if (t.dtype() == dtype && t.numel() == n) {
                free.remove(i);
                return t.reshape(shape);
            }
        }
        return Tensor.allocate(Arena.ofAuto(), dtype, shape);
    }

    /** Gives {@code t}, taken from here, back for a later step. */
    public synchronized void give(Tensor t) {
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
}
