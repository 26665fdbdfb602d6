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
    private static final int ORDERS = 8;
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
        al.zero(out);
        backend.scatterAddRows(o, perm, null, ov);
        al.release(g);
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
        al.zero(dx);
        backend.scatterAddRows(gd, perm, null, gv);
        al.release(gx);
        al.release(gg);
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

    /**
     * The gather order for M = {@code rows}, uploaded once per allocator and row count and kept for
     * the last few of them (prefill and decode alternate; a steady decode batch uploads nothing).
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
