package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import org.orbitrl.kernels.RopeTable;

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
 * at and past rotaryDim pass through.
 */
final class RopeKernel {
    private RopeKernel() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * @param s   segment of the head vector, {@code x} its byte offset (contiguous channels)
     * @param cos the table's [maxPositions, rotaryDim/2] cos values; {@code row} = position · rotaryDim/2
     */
    static void rotate(MemorySegment s, long x, float[] cos, float[] sin, int row, int half, RopeTable.Style style) {
        if (style == RopeTable.Style.HALF) {
            int hv = half - half % L;
            long x2 = x + half * 4L;
            for (int j = 0; j < hv; j += L) {
                FloatVector a = FloatVector.fromMemorySegment(F, s, x + j * 4L, LE);
                FloatVector b = FloatVector.fromMemorySegment(F, s, x2 + j * 4L, LE);
                FloatVector c = FloatVector.fromArray(F, cos, row + j);
                FloatVector n = FloatVector.fromArray(F, sin, row + j);
                a.mul(c).sub(b.mul(n)).intoMemorySegment(s, x + j * 4L, LE);
                b.mul(c).add(a.mul(n)).intoMemorySegment(s, x2 + j * 4L, LE);
            }
            for (int j = hv; j < half; j++) {
                pair(s, x + j * 4L, x2 + j * 4L, cos[row + j], sin[row + j]);
            }
        } else {
            for (int j = 0; j < half; j++) {
                pair(s, x + 8L * j, x + 8L * j + 4, cos[row + j], sin[row + j]);
            }
        }
    }

    private static void pair(MemorySegment s, long ia, long ib, float c, float n) {
        float a = s.get(F32, ia);
        float b = s.get(F32, ib);
        s.set(F32, ia, a * c - b * n);
        s.set(F32, ib, b * c + a * n);
    }
}
