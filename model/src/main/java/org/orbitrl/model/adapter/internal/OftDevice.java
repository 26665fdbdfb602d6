package org.orbitrl.model.adapter.internal;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * OFT's block-diagonal rotation through {@link Backend} ops, for adapters in device memory. The
 * activations [M, blocks·b] are rotated slice by slice with one {@link Backend#oftRotate} (forward
 * x·R, backward g·Rᵀ). The rotation gradient dL/dR_i = Σ_m x_iᵀ·g_i is one
 * {@link Backend#blockGradTN} over all blocks; with one shared block the whole view [M·blocks, b] is
 * one product. The rotation blocks are given transposed, {@code Rᵀ} (as {@link Backend#oftRotation}
 * writes them).
 */
public final class OftDevice {
    private final int blocks;
    private final int b;
    private final int stored;

    public OftDevice(int blocks, int blockSize, int storedBlocks) {
        this.blocks = blocks;
        this.b = blockSize;
        this.stored = storedBlocks;
    }

    /** x·R blockwise: x f32 [M, blocks·b] contiguous, rotationT f32 [stored, b, b] (R_jᵀ); a new [M, blocks·b]. */
    public Tensor rotate(Backend backend, Tensor x, Tensor rotationT) {
        rows(x, "OFT input");
        Tensor out = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, x.shape());   // [M, in]
        backend.oftRotate(x, rotationT, false, out);
        return out;
    }

    /**
     * Backward of {@link #rotate}: on entry {@code dx} [M, in] holds g = dL/d(x·R); on return it holds
     * g·Rᵀ blockwise. Returns dL/dR per stored block, f32 [stored, b, b], in device memory (for
     * a shared block, summed over all slices).
     */
    public Tensor backward(Backend backend, Tensor x, Tensor dx, Tensor rotationT) {
        TensorAllocator al = backend.allocator();
        long rows = rows(x, "OFT input");
        rows(dx, "OFT input gradient");
        Tensor dR = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, stored, b, b);   // [stored, b, b]
        al.zero(dR);
        if (rows == 0) {
            return dR;
        }
        if (stored == 1) {   // one shared block: the view [M·blocks, b] in one product, dR += xᵀ·g
            backend.matmulTN(x.reshape(rows * blocks, b), dx.reshape(rows * blocks, b), 1f, dR.select(0, 0));
        } else {
            long in = (long) blocks * b;
            backend.blockGradTN(x.reshape(rows, in), dx.reshape(rows, in), b, dR);     // dR_i += x_iᵀ·g_i
        }
        Tensor t = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, dx.shape());      // [M, in] g·Rᵀ
        backend.oftRotate(dx, rotationT, true, t);
        al.copy(t, dx);
        al.release(t);
        return dR;
    }

    private long rows(Tensor t, String what) {
        long in = (long) blocks * b;
        if (t.dtype() != DType.F32 || !t.isContiguous() || t.numel() % in != 0 || t.shape()[t.rank() - 1] != in) {
            throw new IllegalArgumentException(what + " " + t + ": expected contiguous f32 [rows, " + in + "]");
        }
        return t.numel() / in;
    }
}
