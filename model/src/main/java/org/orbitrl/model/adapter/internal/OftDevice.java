package org.orbitrl.model.adapter.internal;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * OFT's block-diagonal rotation through {@link Backend} ops, for adapters in device memory. The
 * activations [M, blocks·b] are rotated slice by slice with one {@link Backend#oftRotate} (forward
 * x·R, backward g·Rᵀ). The rotation gradient dL/dR_i = Σ_m x_iᵀ·g_i gathers the rows of the input
 * and of its gradient block by block into [blocks·M, b] (row i·M + m is token m's slice i) and
 * takes one f32 product per block; with one shared block the whole view [M·blocks, b] is one
 * product. The rotation blocks are given transposed, {@code Rᵀ} (as {@link Backend#oftRotation}
 * writes them).
 */
public final class OftDevice {
    private static final int ORDERS = 8;

    private final int blocks;
    private final int b;
    private final int stored;
    /** i32 [blocks·M] per (allocator, M): row i·M + m of the gathered layout is row m·blocks + i of the view. */
    private final Map<OrderKey, Tensor> orders = new LinkedHashMap<>(16, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<OrderKey, Tensor> eldest) {
            return size() > ORDERS;
        }
    };

    private record OrderKey(TensorAllocator allocator, long rows) {
    }

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
        Tensor xv = x.reshape(rows * blocks, b);                                         // [M·blocks, b]
        Tensor gv = dx.reshape(rows * blocks, b);
        if (stored == 1) {
            backend.matmulTN(xv, gv, 1f, dR.select(0, 0));                              // dR += xᵀ·g
        } else {
            Tensor perm = order(al, rows);
            Tensor gx = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows * blocks, b);   // [blocks·M, b]
            Tensor gg = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows * blocks, b);
            backend.gatherRows(xv, perm, gx);
            backend.gatherRows(gv, perm, gg);
            for (int i = 0; i < blocks; i++) {
                backend.matmulTN(gx.slice(0, i * rows, (i + 1) * rows), gg.slice(0, i * rows, (i + 1) * rows), 1f,
                        dR.select(0, i));                                                // dR_i += x_iᵀ·g_i
            }
            al.release(gx);
            al.release(gg);
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

    /**
     * The gather order for M = {@code rows}, uploaded once per allocator and row count and kept for
     * the last few of them (training micro-batches of a few sizes alternate; a steady size uploads nothing).
     */
    private synchronized Tensor order(TensorAllocator al, long rows) {
        OrderKey key = new OrderKey(al, rows);
        Tensor t = orders.get(key);
        if (t == null) {
            int n = Math.toIntExact(rows * blocks);
            int[] idx = new int[n];
            for (int i = 0; i < blocks; i++) {
                for (int m = 0; m < rows; m++) {
                    idx[(int) (i * rows + m)] = m * blocks + i;
                }
            }
            t = al.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(idx, n));
            orders.put(key, t);
        }
        return t;
    }
}
