package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * {@code c [P, Q] += alpha · aᵀ · b} for a [M, P], b [M, Q]: the adapter-gradient product. Each
 * row i of c accumulates {@code Σ_t a[t,i] · b[t,:]} over the M tokens in ascending order, one
 * vectorised axpy per token, then adds alpha times the sum: the order depends only on M, so the
 * result is the same however the rows are split across threads.
 */
final class MatmulTN {
    private MatmulTN() {
    }

    static void run(WorkerPool pool, Tensor a, Tensor b, float alpha, Tensor c) {
        int m = a.size(0);
        int p = a.size(1);
        int q = b.size(1);
        if (b.dim(0) != m || c.dim(0) != p || c.dim(1) != q || a.dtype() != DType.F32 || b.dtype() != DType.F32
                || c.dtype() != DType.F32) {
            throw new IllegalArgumentException("matmulTN: aᵀ " + a + " · b " + b + " -> c " + c + " do not agree");
        }
        a.requireContiguous("matmulTN a");
        b.requireContiguous("matmulTN b");
        c.requireContiguous("matmulTN c");
        MemorySegment as = a.segment();
        MemorySegment bs = b.segment();
        MemorySegment cs = c.segment();
        long ao = a.byteOffset();
        long bo = b.byteOffset();
        long co = c.byteOffset();
        int tasks = Math.max(1, Math.min(p, pool.threads() * 4));
        pool.parallelFor(tasks, task -> {
            int i0 = (int) ((long) p * task / tasks);
            int i1 = (int) ((long) p * (task + 1) / tasks);
            float[] acc = new float[q];
            int vl = VectorMath.L;
            int qv = q - q % vl;
            for (int i = i0; i < i1; i++) {
                java.util.Arrays.fill(acc, 0f);
                for (int t = 0; t < m; t++) {
                    float s = as.get(ValueLayout.JAVA_FLOAT_UNALIGNED, ao + ((long) t * p + i) * 4);
                    long rb = bo + (long) t * q * 4;
                    FloatVector sv = FloatVector.broadcast(VectorMath.F, s);
                    int j = 0;
                    for (; j < qv; j += vl) {
                        FloatVector bv = FloatVector.fromMemorySegment(VectorMath.F, bs, rb + j * 4L, VectorMath.LE);
                        FloatVector.fromArray(VectorMath.F, acc, j).add(bv.mul(sv)).intoArray(acc, j);
                    }
                    for (; j < q; j++) {
                        acc[j] += s * bs.get(ValueLayout.JAVA_FLOAT_UNALIGNED, rb + j * 4L);
                    }
                }
                long rc = co + (long) i * q * 4;
                for (int j = 0; j < q; j++) {
                    long off = rc + j * 4L;
                    cs.set(ValueLayout.JAVA_FLOAT_UNALIGNED, off, cs.get(ValueLayout.JAVA_FLOAT_UNALIGNED, off) + alpha * acc[j]);
                }
            }
        });
    }
}
