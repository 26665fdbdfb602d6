package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;

/**
 * Accumulating kernels of the training path (expert scatter, axpy, bias): the scatter runs over
 * a column range [c0, c1) so that work splits over columns while every element keeps one order
 * of accumulation (ascending over source rows). Offsets are in bytes.
 */
final class Accumulate {
    private Accumulate() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /** {@code dst[rows[i]][c0..c1) += w_i · src[i][c0..c1)} for i ascending (w_i = 1 without weights). */
    static void scatterAdd(MemorySegment ss, long s, long[] rows, float[] weights, MemorySegment ds, long d, int h,
                           int c0, int c1) {
        int width = c1 - c0;
        int wv = width - width % L;
        for (int i = 0; i < rows.length; i++) {
            float w = weights == null ? 1f : weights[i];
            long so = s + ((long) i * h + c0) * 4;
            long dO = d + (rows[i] * h + c0) * 4;
            for (int j = 0; j < wv; j += L) {
                FloatVector.fromMemorySegment(F, ds, dO + j * 4L, LE)
                        .add(FloatVector.fromMemorySegment(F, ss, so + j * 4L, LE).mul(w))
                        .intoMemorySegment(ds, dO + j * 4L, LE);
            }
            for (int j = wv; j < width; j++) {
                ds.set(F32, dO + j * 4L, ds.get(F32, dO + j * 4L) + w * ss.get(F32, so + j * 4L));
            }
        }
    }

    /** {@code y[from..to) += alpha · x[from..to)} (alpha·x rounded, then added). */
    static void axpy(float alpha, MemorySegment xs, long x, MemorySegment ys, long y, long from, long to) {
        long p = from;
        long vEnd = from + (to - from) / L * L;
        for (; p < vEnd; p += L) {
            FloatVector.fromMemorySegment(F, ys, y + p * 4, LE).add(FloatVector.fromMemorySegment(F, xs, x + p * 4, LE).mul(alpha))
                    .intoMemorySegment(ys, y + p * 4, LE);
        }
        for (; p < to; p++) {
            ys.set(F32, y + p * 4, ys.get(F32, y + p * 4) + alpha * xs.get(F32, x + p * 4));
        }
    }

    /** Row r of y [rows, n]: {@code y[r] += bias}. */
    static void addBias(MemorySegment ys, long y, float[] bias, int n) {
        int nv = n - n % L;
        for (int j = 0; j < nv; j += L) {
            FloatVector.fromMemorySegment(F, ys, y + j * 4L, LE).add(FloatVector.fromArray(F, bias, j)).intoMemorySegment(ys, y + j * 4L, LE);
        }
        for (int j = nv; j < n; j++) {
            ys.set(F32, y + j * 4L, ys.get(F32, y + j * 4L) + bias[j]);
        }
    }
}
