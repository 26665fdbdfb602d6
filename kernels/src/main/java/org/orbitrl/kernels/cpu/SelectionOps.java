package org.orbitrl.kernels.cpu;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.CpuBackend.f32;
import static org.orbitrl.kernels.cpu.CpuBackend.rows;

/** Embedding gather, top-k and argmax of {@link CpuBackend}: argument checks and the split over rows. */
final class SelectionOps {
    private SelectionOps() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    static void embedding(WorkerPool pool, Tensor table, Tensor ids, Tensor out) {
        table.requireContiguous("embedding table");
        ids.requireContiguous("embedding ids");
        f32("embedding out", out);
        if (table.rank() != 2 || (table.dtype() != DType.F32 && table.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("embedding: table must be F32 or BF16 [V, H], got " + table);
        }
        if (ids.dtype() != DType.I32 && ids.dtype() != DType.I64) {
            throw new IllegalArgumentException("embedding: ids must be I32 or I64, got " + ids);
        }
        int n = Math.toIntExact(ids.numel());
        int h = table.size(1);
        long vocab = table.dim(0);
        if (out.numel() != (long) n * h) {
            throw new IllegalArgumentException("embedding: out " + out + " for " + n + " ids of width " + h);
        }
        long[] id = ids.toLongArray();
        for (int i = 0; i < n; i++) {
            if (id[i] < 0 || id[i] >= vocab) {
                throw new IndexOutOfBoundsException("embedding: token id " + id[i] + " (position " + i
                        + ") outside vocabulary [0, " + vocab + ")");
            }
        }
        boolean bf16 = table.dtype() == DType.BF16;
        long rowBytes = (long) h * table.dtype().bytes();
        int tasks = CpuBackend.tasks(pool, (long) n * h, n);
        pool.parallelFor(tasks, t -> {
            for (int i = CpuBackend.split(n, tasks, t, 1); i < CpuBackend.split(n, tasks, t + 1, 1); i++) {
                Selection.embeddingRow(table.segment(), table.byteOffset() + id[i] * rowBytes, bf16,
                        out.segment(), out.byteOffset() + (long) i * h * 4, h);
            }
        });
    }

    static void topk(WorkerPool pool, Tensor x, int k, Tensor values, Tensor indices) {
        f32("topk x", x);
        f32("topk values", values);
        indices.requireContiguous("topk indices");
        int n = x.size(-1);
        int r = rows(x);
        if (k <= 0 || k > n || values.numel() != (long) r * k || indices.numel() != (long) r * k) {
            throw new IllegalArgumentException("topk: k=" + k + " of " + x + " into " + values + ", " + indices);
        }
        requireIndexType("topk indices", indices);
        CpuBackend.forRows(pool, r, n, row -> {
            float[] vals = new float[k];
            int[] idx = new int[k];
            Selection.topk(x.segment(), x.byteOffset() + (long) row * n * 4, n, k, vals, idx);
            MemorySegment.copy(vals, 0, values.segment(), F32, values.byteOffset() + (long) row * k * 4, k);
            for (int j = 0; j < k; j++) {
                writeIndex(indices, (long) row * k + j, idx[j]);
            }
        });
    }

    static void argmax(WorkerPool pool, Tensor x, Tensor out) {
        f32("argmax x", x);
        out.requireContiguous("argmax out");
        int n = x.size(-1);
        int r = rows(x);
        if (out.numel() != r || n == 0) {
            throw new IllegalArgumentException("argmax: out " + out + " for " + r + " rows of " + x);
        }
        requireIndexType("argmax out", out);
        CpuBackend.forRows(pool, r, n, row -> writeIndex(out, row, Selection.argmax(x.segment(), x.byteOffset() + (long) row * n * 4, n)));
    }

    private static void requireIndexType(String what, Tensor t) {
        if (t.dtype() != DType.I32 && t.dtype() != DType.I64) {
            throw new IllegalArgumentException(what + " must be I32 or I64, got " + t);
        }
    }

    private static void writeIndex(Tensor t, long i, int value) {
        if (t.dtype() == DType.I32) {
            t.segment().set(ValueLayout.JAVA_INT_UNALIGNED, t.byteOffset() + i * 4, value);
        } else {
            t.segment().set(ValueLayout.JAVA_LONG_UNALIGNED, t.byteOffset() + i * 8, value);
        }
    }
}
