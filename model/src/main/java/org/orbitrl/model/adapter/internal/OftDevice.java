package org.orbitrl.model.adapter.internal;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * OFT's block-diagonal rotation through {@link Backend} ops, for adapters in device memory. The
 * input [M, blocks·b] is viewed as [M·blocks, b] (row m·blocks + i is token m's slice i); its rows
 * are gathered block by block into [blocks·M, b], each block's M rows are multiplied by their
 * rotation with one f32 product, and the results are scattered back. With one shared block the
 * whole view is multiplied at once. The rotation blocks are given transposed, {@code Rᵀ}, because
 * {@link Backend#matmul} computes {@code x·wᵀ}.
 */
public final class OftDevice {
    private final int blocks;
    private final int b;
    private final int stored;
    private Tensor order;     // i32 [blocks·M]: row i·M + m of the gathered layout is row m·blocks + i of the view
    private long orderRows = -1;

    public OftDevice(int blocks, int blockSize, int storedBlocks) {
        this.blocks = blocks;
        this.b = blockSize;
        this.stored = storedBlocks;
    }

    /** x·R blockwise: x f32 [M, blocks·b] contiguous, rotationT f32 [stored, b, b] (R_jᵀ); a new [M, blocks·b]. */
    public Tensor rotate(Backend backend, Tensor x, Tensor rotationT) {
        TensorAllocator al = backend.allocator();
        long rows = rows(x, "OFT input");
        Tensor out = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, x.shape());   // [M, in]
        if (rows == 0) {
            return out;
        }
        Tensor xv = x.reshape(rows * blocks, b);                                       // [M·blocks, b]
        Tensor ov = out.reshape(rows * blocks, b);
        if (stored == 1) {
            backend.matmul(xv, rotationT.select(0, 0), ov);
            return out;
        }
        Tensor perm = order(al, rows);
        Tensor g = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows * blocks, b);   // [blocks·M, b]
        Tensor o = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows * blocks, b);   // [blocks·M, b]
        backend.gatherRows(xv, perm, g);
        for (int i = 0; i < blocks; i++) {
            backend.matmul(g.slice(0, i * rows, (i + 1) * rows), rotationT.select(0, i), o.slice(0, i * rows, (i + 1) * rows));
        }
        al.release(g);
        al.zero(out);
        backend.scatterAddRows(o, perm, null, ov);
        al.release(o);
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
            Tensor r = rotationT.select(0, 0);
            Tensor t = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows * blocks, b);
            backend.matmulTN(xv, gv, 1f, dR.select(0, 0));                              // dR += xᵀ·g
            backend.matmulTransposed(gv, r, t);                                          // g·Rᵀ
            al.copy(t, gv);
            al.release(t);
            return dR;
        }
        Tensor perm = order(al, rows);
        Tensor gx = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows * blocks, b);   // [blocks·M, b]
        Tensor gg = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows * blocks, b);
        Tensor gd = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows * blocks, b);
        backend.gatherRows(xv, perm, gx);
        backend.gatherRows(gv, perm, gg);
        for (int i = 0; i < blocks; i++) {
            Tensor xi = gx.slice(0, i * rows, (i + 1) * rows);
            Tensor gi = gg.slice(0, i * rows, (i + 1) * rows);
            backend.matmulTN(xi, gi, 1f, dR.select(0, i));                               // dR_i += x_iᵀ·g_i
            backend.matmulTransposed(gi, rotationT.select(0, i), gd.slice(0, i * rows, (i + 1) * rows)); // g_i·R_iᵀ
        }
        al.release(gx);
        al.release(gg);
        al.zero(dx);
        backend.scatterAddRows(gd, perm, null, gv);
        al.release(gd);
        return dR;
    }

    private long rows(Tensor t, String what) {
        long in = (long) blocks * b;
        if (t.dtype() != DType.F32 || !t.isContiguous() || t.numel() % in != 0 || t.shape()[t.rank() - 1] != in) {
            throw new IllegalArgumentException(what + " " + t + ": expected contiguous f32 [rows, " + in + "]");
        }
        return t.numel() / in;
    }

    private Tensor order(TensorAllocator al, long rows) {
        if (rows != orderRows) {
            int n = Math.toIntExact(rows * blocks);
            int[] idx = new int[n];
            for (int i = 0; i < blocks; i++) {
                for (int m = 0; m < rows; m++) {
                    idx[(int) (i * rows + m)] = m * blocks + i;
                }
            }
            order = al.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(idx, n));
            orderRows = rows;
        }
        return order;
    }
}
