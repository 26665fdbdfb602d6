package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;

/**
 * Accumulating kernels of the training path (adapter gradients, expert scatter), each over a
 * column range [c0, c1) of its rows so that work splits over columns while every element keeps
 * one order of accumulation (ascending over tokens or source rows). Offsets are in bytes.
 */
final class Accumulate {
    private Accumulate() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * Row i of c [P, Q], columns [c0, c1): {@code c += alpha · Σ_t a[t,i]·b[t,:]} over t ascending,
     * a [M, P], b [M, Q]; {@code acc} is scratch of at least c1 - c0 floats.
     */
    static void matmulTNRow(MemorySegment as, long a, int p, MemorySegment bs, long b, int q, int m, float alpha,
                            MemorySegment cs, long c, int i, int c0, int c1, float[] acc) {
        int width = c1 - c0;
        int wv = width - width % L;
        java.util.Arrays.fill(acc, 0, width, 0f);
        for (int t = 0; t < m; t++) {
            float av = as.get(F32, a + ((long) t * p + i) * 4);
            FloatVector avv = FloatVector.broadcast(F, av);
            long brow = b + ((long) t * q + c0) * 4;
            for (int j = 0; j < wv; j += L) {
                FloatVector.fromMemorySegment(F, bs, brow + j * 4L, LE).fma(avv, FloatVector.fromArray(F, acc, j)).intoArray(acc, j);
            }
            for (int j = wv; j < width; j++) {
                acc[j] = Math.fma(bs.get(F32, brow + j * 4L), av, acc[j]);
            }
        }
        long crow = c + ((long) i * q + c0) * 4;
        for (int j = 0; j < wv; j += L) {
            FloatVector.fromMemorySegment(F, cs, crow + j * 4L, LE).add(FloatVector.fromArray(F, acc, j).mul(alpha))
                    .intoMemorySegment(cs, crow + j * 4L, LE);
        }
        for (int j = wv; j < width; j++) {
            cs.set(F32, crow + j * 4L, cs.get(F32, crow + j * 4L) + alpha * acc[j]);
        }
    }

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
