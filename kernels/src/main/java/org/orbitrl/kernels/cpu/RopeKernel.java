package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;

/**
 * Rotary embedding of one head vector in place. For a pair (a, b) and angle index i:
 * {@code a' = a·cos − b·sin}, {@code b' = b·cos + a·sin}, with the products rounded separately
 * (no FMA), as the reference computes them. Pairs are (i, i + rotaryDim/2) for
 * {@link RopeTable.Style#HALF} and (2i, 2i+1) for {@link RopeTable.Style#INTERLEAVED}; channels
 * at and past rotaryDim pass through. The inverse rotation (the backward pass) uses −sin.
 */
final class RopeKernel {
    private RopeKernel() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * @param s   segment of the head vector, {@code x} its byte offset (contiguous channels)
     * @param cos the table's [maxPositions, rotaryDim/2] cos values; {@code row} = position · rotaryDim/2
     */
    static void rotate(MemorySegment s, long x, float[] cos, float[] sin, int row, int half, RopeTable.Style style,
                       boolean inverse) {
        if (style == RopeTable.Style.HALF) {
            int hv = half - half % L;
            long x2 = x + half * 4L;
            for (int j = 0; j < hv; j += L) {
                FloatVector a = FloatVector.fromMemorySegment(F, s, x + j * 4L, LE);
                FloatVector b = FloatVector.fromMemorySegment(F, s, x2 + j * 4L, LE);
                FloatVector c = FloatVector.fromArray(F, cos, row + j);
                FloatVector n = FloatVector.fromArray(F, sin, row + j);
                if (inverse) {
                    n = n.neg();
                }
                a.mul(c).sub(b.mul(n)).intoMemorySegment(s, x + j * 4L, LE);
                b.mul(c).add(a.mul(n)).intoMemorySegment(s, x2 + j * 4L, LE);
            }
            for (int j = hv; j < half; j++) {
                pair(s, x + j * 4L, x2 + j * 4L, cos[row + j], inverse ? -sin[row + j] : sin[row + j]);
            }
        } else {
            for (int j = 0; j < half; j++) {
                pair(s, x + 8L * j, x + 8L * j + 4, cos[row + j], inverse ? -sin[row + j] : sin[row + j]);
            }
        }
    }

    /** Rotates x [T, H, D] (leading dimensions may be strided) in place by the table's angles at the given positions, or by their negatives. */
    static void run(WorkerPool pool, String op, Tensor x, Tensor positions, RopeTable table, boolean inverse) {
        if (x.rank() != 3 || x.dtype() != DType.F32 || x.strides()[2] != 1) {
            throw new IllegalArgumentException(op + ": x must be f32 [T, H, D] with a contiguous last dimension, got " + x);
        }
        int t = x.size(0);
        int h = x.size(1);
        int d = x.size(2);
        int half = table.rotaryDim() / 2;
        if (table.rotaryDim() > d || positions.numel() != t) {
            throw new IllegalArgumentException(op + ": rotary dim " + table.rotaryDim() + " of x " + x + " with positions " + positions);
        }
        if (positions.dtype() != DType.I32 && positions.dtype() != DType.I64) {
            throw new IllegalArgumentException(op + ": positions must be I32 or I64, got " + positions);
        }
        long[] pos = positions.toLongArray();
        for (int i = 0; i < t; i++) {
            if (pos[i] < 0 || pos[i] >= table.maxPositions()) {
                throw new IndexOutOfBoundsException(op + ": position " + pos[i] + " (token " + i
                        + ") outside the rope table's [0, " + table.maxPositions() + ")");
            }
        }
        long[] st = x.strides();
        float[] cos = table.cosTable();
        float[] sin = table.sinTable();
        MemorySegment s = x.segment();
        int units = t * h;
        int tasks = CpuBackend.tasks(pool, (long) units * table.rotaryDim() * 4, units);
        pool.parallelFor(tasks, task -> {
            for (int u = CpuBackend.split(units, tasks, task, 1); u < CpuBackend.split(units, tasks, task + 1, 1); u++) {
                int i = u / h;
                int hh = u % h;
                long off = (x.offset() + i * st[0] + hh * st[1]) * 4;
                RopeKernel.rotate(s, off, cos, sin, (int) pos[i] * half, half, table.style(), inverse);
            }
        });
    }

    private static void pair(MemorySegment s, long ia, long ib, float c, float n) {
        float a = s.get(F32, ia);
        float b = s.get(F32, ib);
        s.set(F32, ia, a * c - b * n);
        s.set(F32, ib, b * c + a * n);
    }
}
