package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;

/** Per-row selection (top-k, argmax) and embedding rows. Offsets are in bytes. */
final class Selection {
    private Selection() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * The k largest of n values, descending, ties to the lower index, into vals/idx [k]. Once k
     * candidates are held, whole vectors with no lane above the smallest of them are skipped.
     */
    static void topk(MemorySegment s, long x, int n, int k, float[] vals, int[] idx) {
        int count = 0;
        int i = 0;
        for (; i < n && count < k; i++) {
            count = insert(s.get(F32, x + i * 4L), i, count, k, vals, idx);
        }
        int nv = n - (n - i) % L;
        while (i < nv) {
            FloatVector v = FloatVector.fromMemorySegment(F, s, x + i * 4L, LE);
            if (v.compare(VectorOperators.GT, vals[k - 1]).anyTrue()) {
                for (int j = i; j < i + L; j++) {
                    float e = s.get(F32, x + j * 4L);
                    if (e > vals[k - 1]) {
                        insert(e, j, k, k, vals, idx);
                    }
                }
            }
            i += L;
        }
        for (; i < n; i++) {
            float e = s.get(F32, x + i * 4L);
            if (e > vals[k - 1]) {
                insert(e, i, k, k, vals, idx);
            }
        }
    }

    /** Inserts (v, i) into the sorted prefix of length count (≤ k); returns the new length. */
    private static int insert(float v, int i, int count, int k, float[] vals, int[] idx) {
        int pos = count < k ? count : k - 1;
        while (pos > 0 && v > vals[pos - 1]) {
            vals[pos] = vals[pos - 1];
            idx[pos] = idx[pos - 1];
            pos--;
        }
        vals[pos] = v;
        idx[pos] = i;
        return Math.min(count + 1, k);
    }

    /** Index of the largest value, the lowest index among equals; NaNs behave as in a plain {@code >} scan. */
    static int argmax(MemorySegment s, long x, int n) {
        float max = RowKernels.max(s, x, n);
        if (Float.isNaN(max)) {
            int best = 0;
            for (int i = 1; i < n; i++) {
                if (s.get(F32, x + i * 4L) > s.get(F32, x + best * 4L)) {
                    best = i;
                }
            }
            return best;
        }
        int nv = n - n % L;
        int i = 0;
        for (; i < nv; i += L) {
            FloatVector v = FloatVector.fromMemorySegment(F, s, x + i * 4L, LE);
            int first = v.compare(VectorOperators.EQ, max).firstTrue();
            if (first < L) {
                return i + first;
            }
        }
        for (; i < n; i++) {
            if (s.get(F32, x + i * 4L) == max) {
                return i;
            }
        }
        throw new IllegalStateException("argmax: maximum " + max + " not found again in its row");
    }

    /** Copies one embedding row of h values (f32 or bf16 table) to f32 out. */
    static void embeddingRow(MemorySegment table, long row, boolean bf16, MemorySegment out, long o, int h) {
        if (!bf16) {
            MemorySegment.copy(table, row, out, o, h * 4L);
            return;
        }
        int hv = h - h % L;
        for (int c = 0; c < hv; c += L) {
            VectorMath.bf16(table, row + c * 2L).intoMemorySegment(out, o + c * 4L, LE);
        }
        for (int c = hv; c < h; c++) {
            out.set(F32, o + c * 4L, VectorMath.bf16Scalar(table, row + c * 2L));
        }
    }
}
