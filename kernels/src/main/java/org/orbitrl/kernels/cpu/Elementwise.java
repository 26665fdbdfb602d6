package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;

/**
 * Element-wise f32 kernels over a flat range [from, to) of elements; offsets of the tensors'
 * first elements are in bytes. Outputs may alias inputs (each element is read before it is
 * written). The scalar tails use the same operations as the vector lanes.
 */
final class Elementwise {
    private Elementwise() {
    }

    enum Op { ADD, MUL, SILU, SWIGLU, SCALE }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * out[i] = op(a[i], b[i]) for i in [from, to). SILU and SCALE ignore b; SCALE multiplies by alpha.
     * SWIGLU is silu(a)·b.
     */
    static void apply(Op op, MemorySegment as, long a, MemorySegment bs, long b, float alpha,
                      MemorySegment os, long o, long from, long to) {
        long p = from;
        long vEnd = from + (to - from) / L * L;
        switch (op) {
            case ADD -> {
                for (; p < vEnd; p += L) {
                    load(as, a, p).add(load(bs, b, p)).intoMemorySegment(os, o + p * 4, LE);
                }
                for (; p < to; p++) {
                    os.set(F32, o + p * 4, as.get(F32, a + p * 4) + bs.get(F32, b + p * 4));
                }
            }
            case MUL -> {
                for (; p < vEnd; p += L) {
                    load(as, a, p).mul(load(bs, b, p)).intoMemorySegment(os, o + p * 4, LE);
                }
                for (; p < to; p++) {
                    os.set(F32, o + p * 4, as.get(F32, a + p * 4) * bs.get(F32, b + p * 4));
                }
            }
            case SCALE -> {
                for (; p < vEnd; p += L) {
                    load(as, a, p).mul(alpha).intoMemorySegment(os, o + p * 4, LE);
                }
                for (; p < to; p++) {
                    os.set(F32, o + p * 4, as.get(F32, a + p * 4) * alpha);
                }
            }
            case SILU -> {
                for (; p < vEnd; p += L) {
                    silu(load(as, a, p)).intoMemorySegment(os, o + p * 4, LE);
                }
                for (; p < to; p++) {
                    os.set(F32, o + p * 4, silu(as.get(F32, a + p * 4)));
                }
            }
            case SWIGLU -> {
                for (; p < vEnd; p += L) {
                    silu(load(as, a, p)).mul(load(bs, b, p)).intoMemorySegment(os, o + p * 4, LE);
                }
                for (; p < to; p++) {
                    os.set(F32, o + p * 4, silu(as.get(F32, a + p * 4)) * bs.get(F32, b + p * 4));
                }
            }
        }
    }

    private static FloatVector load(MemorySegment s, long base, long i) {
        return FloatVector.fromMemorySegment(F, s, base + i * 4, LE);
    }

    /** x / (1 + e^-x). */
    static FloatVector silu(FloatVector x) {
        return x.div(VectorMath.exp(x.neg()).add(1f));
    }

    static float silu(float x) {
        return x / (VectorMath.exp(-x) + 1f);
    }
}
