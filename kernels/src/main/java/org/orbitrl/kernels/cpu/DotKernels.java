package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;
import static org.orbitrl.kernels.cpu.VectorMath.bf16;
import static org.orbitrl.kernels.cpu.VectorMath.bf16Scalar;
import static org.orbitrl.kernels.cpu.VectorMath.hsum;

/**
 * Register-tiled dot products {@code y[i][j] = Σ_p x[i][p]·w[j][p]} for f32 x and f32 or bf16 w:
 * micro-kernels of 4×4, 1×4, 4×1 and 1×1 (rows of x × rows of w). Every output element is
 * reduced in the canonical order of {@link VectorMath} (one lane-wise FMA accumulator over K,
 * the fixed {@link VectorMath#hsum}, a scalar FMA tail), whichever micro-kernel computes it; the
 * tiles only decide which loads are shared. Offsets and strides are in bytes.
 */
final class DotKernels {
    private DotKernels() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * Finishes one element from the horizontal sum of its accumulator: the K % L tail with scalar
     * FMA (f32 w). Takes the sum, not the vector: a vector that escapes into a call or an array
     * is boxed by C2, which slows the whole kernel down many times.
     */
    static float tailF32(float s, MemorySegment xs, long x, MemorySegment ws, long w, int kv, int k) {
        for (int p = kv; p < k; p++) {
            s = Math.fma(xs.get(F32, x + p * 4L), ws.get(F32, w + p * 4L), s);
        }
        return s;
    }

    /** As {@link #tailF32} for a bf16 w. */
    static float tailBf16(float s, MemorySegment xs, long x, MemorySegment ws, long w, int kv, int k) {
        for (int p = kv; p < k; p++) {
            s = Math.fma(xs.get(F32, x + p * 4L), bf16Scalar(ws, w + p * 2L), s);
        }
        return s;
    }

    static int vectorPart(int k) {
        return k - k % L;
    }

    // ---------------------------------------------------------------- f32 weights

    static void f32x4x4(MemorySegment xs, long x, long xs1, MemorySegment ws, long w, long ws1, int k,
                        MemorySegment ys, long y, long ys1) {
        FloatVector c00 = FloatVector.zero(F), c01 = FloatVector.zero(F), c02 = FloatVector.zero(F), c03 = FloatVector.zero(F);
        FloatVector c10 = FloatVector.zero(F), c11 = FloatVector.zero(F), c12 = FloatVector.zero(F), c13 = FloatVector.zero(F);
        FloatVector c20 = FloatVector.zero(F), c21 = FloatVector.zero(F), c22 = FloatVector.zero(F), c23 = FloatVector.zero(F);
        FloatVector c30 = FloatVector.zero(F), c31 = FloatVector.zero(F), c32 = FloatVector.zero(F), c33 = FloatVector.zero(F);
        int kv = vectorPart(k);
        for (int p = 0; p < kv; p += L) {
            long o = p * 4L;
            FloatVector w0 = FloatVector.fromMemorySegment(F, ws, w + o, LE);
            FloatVector w1 = FloatVector.fromMemorySegment(F, ws, w + ws1 + o, LE);
            FloatVector w2 = FloatVector.fromMemorySegment(F, ws, w + 2 * ws1 + o, LE);
            FloatVector w3 = FloatVector.fromMemorySegment(F, ws, w + 3 * ws1 + o, LE);
            FloatVector a = FloatVector.fromMemorySegment(F, xs, x + o, LE);
            c00 = a.fma(w0, c00);
            c01 = a.fma(w1, c01);
            c02 = a.fma(w2, c02);
            c03 = a.fma(w3, c03);
            a = FloatVector.fromMemorySegment(F, xs, x + xs1 + o, LE);
            c10 = a.fma(w0, c10);
            c11 = a.fma(w1, c11);
            c12 = a.fma(w2, c12);
            c13 = a.fma(w3, c13);
            a = FloatVector.fromMemorySegment(F, xs, x + 2 * xs1 + o, LE);
            c20 = a.fma(w0, c20);
            c21 = a.fma(w1, c21);
            c22 = a.fma(w2, c22);
            c23 = a.fma(w3, c23);
            a = FloatVector.fromMemorySegment(F, xs, x + 3 * xs1 + o, LE);
            c30 = a.fma(w0, c30);
            c31 = a.fma(w1, c31);
            c32 = a.fma(w2, c32);
            c33 = a.fma(w3, c33);
        }
        ys.set(F32, y, tailF32(hsum(c00), xs, x, ws, w, kv, k));
        ys.set(F32, y + 4, tailF32(hsum(c01), xs, x, ws, w + ws1, kv, k));
        ys.set(F32, y + 8, tailF32(hsum(c02), xs, x, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + 12, tailF32(hsum(c03), xs, x, ws, w + 3 * ws1, kv, k));
        ys.set(F32, y + ys1, tailF32(hsum(c10), xs, x + xs1, ws, w, kv, k));
        ys.set(F32, y + ys1 + 4, tailF32(hsum(c11), xs, x + xs1, ws, w + ws1, kv, k));
        ys.set(F32, y + ys1 + 8, tailF32(hsum(c12), xs, x + xs1, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + ys1 + 12, tailF32(hsum(c13), xs, x + xs1, ws, w + 3 * ws1, kv, k));
        ys.set(F32, y + 2 * ys1, tailF32(hsum(c20), xs, x + 2 * xs1, ws, w, kv, k));
        ys.set(F32, y + 2 * ys1 + 4, tailF32(hsum(c21), xs, x + 2 * xs1, ws, w + ws1, kv, k));
        ys.set(F32, y + 2 * ys1 + 8, tailF32(hsum(c22), xs, x + 2 * xs1, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + 2 * ys1 + 12, tailF32(hsum(c23), xs, x + 2 * xs1, ws, w + 3 * ws1, kv, k));
        ys.set(F32, y + 3 * ys1, tailF32(hsum(c30), xs, x + 3 * xs1, ws, w, kv, k));
        ys.set(F32, y + 3 * ys1 + 4, tailF32(hsum(c31), xs, x + 3 * xs1, ws, w + ws1, kv, k));
        ys.set(F32, y + 3 * ys1 + 8, tailF32(hsum(c32), xs, x + 3 * xs1, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + 3 * ys1 + 12, tailF32(hsum(c33), xs, x + 3 * xs1, ws, w + 3 * ws1, kv, k));
    }

    static void f32x1x4(MemorySegment xs, long x, MemorySegment ws, long w, long ws1, int k, MemorySegment ys, long y) {
        FloatVector c0 = FloatVector.zero(F), c1 = FloatVector.zero(F), c2 = FloatVector.zero(F), c3 = FloatVector.zero(F);
        int kv = vectorPart(k);
        for (int p = 0; p < kv; p += L) {
            long o = p * 4L;
            FloatVector a = FloatVector.fromMemorySegment(F, xs, x + o, LE);
            c0 = a.fma(FloatVector.fromMemorySegment(F, ws, w + o, LE), c0);
            c1 = a.fma(FloatVector.fromMemorySegment(F, ws, w + ws1 + o, LE), c1);
            c2 = a.fma(FloatVector.fromMemorySegment(F, ws, w + 2 * ws1 + o, LE), c2);
            c3 = a.fma(FloatVector.fromMemorySegment(F, ws, w + 3 * ws1 + o, LE), c3);
        }
        ys.set(F32, y, tailF32(hsum(c0), xs, x, ws, w, kv, k));
        ys.set(F32, y + 4, tailF32(hsum(c1), xs, x, ws, w + ws1, kv, k));
        ys.set(F32, y + 8, tailF32(hsum(c2), xs, x, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + 12, tailF32(hsum(c3), xs, x, ws, w + 3 * ws1, kv, k));
    }

    static void f32x4x1(MemorySegment xs, long x, long xs1, MemorySegment ws, long w, int k, MemorySegment ys, long y, long ys1) {
        FloatVector c0 = FloatVector.zero(F), c1 = FloatVector.zero(F), c2 = FloatVector.zero(F), c3 = FloatVector.zero(F);
        int kv = vectorPart(k);
        for (int p = 0; p < kv; p += L) {
            long o = p * 4L;
            FloatVector b = FloatVector.fromMemorySegment(F, ws, w + o, LE);
            c0 = FloatVector.fromMemorySegment(F, xs, x + o, LE).fma(b, c0);
            c1 = FloatVector.fromMemorySegment(F, xs, x + xs1 + o, LE).fma(b, c1);
            c2 = FloatVector.fromMemorySegment(F, xs, x + 2 * xs1 + o, LE).fma(b, c2);
            c3 = FloatVector.fromMemorySegment(F, xs, x + 3 * xs1 + o, LE).fma(b, c3);
        }
        ys.set(F32, y, tailF32(hsum(c0), xs, x, ws, w, kv, k));
        ys.set(F32, y + ys1, tailF32(hsum(c1), xs, x + xs1, ws, w, kv, k));
        ys.set(F32, y + 2 * ys1, tailF32(hsum(c2), xs, x + 2 * xs1, ws, w, kv, k));
        ys.set(F32, y + 3 * ys1, tailF32(hsum(c3), xs, x + 3 * xs1, ws, w, kv, k));
    }

    static float f32x1x1(MemorySegment xs, long x, MemorySegment ws, long w, int k) {
        FloatVector c = FloatVector.zero(F);
        int kv = vectorPart(k);
        for (int p = 0; p < kv; p += L) {
            long o = p * 4L;
            c = FloatVector.fromMemorySegment(F, xs, x + o, LE).fma(FloatVector.fromMemorySegment(F, ws, w + o, LE), c);
        }
        return tailF32(hsum(c), xs, x, ws, w, kv, k);
    }

    // ---------------------------------------------------------------- bf16 weights (widened in registers)

    static void bf16x4x4(MemorySegment xs, long x, long xs1, MemorySegment ws, long w, long ws1, int k,
                         MemorySegment ys, long y, long ys1) {
        FloatVector c00 = FloatVector.zero(F), c01 = FloatVector.zero(F), c02 = FloatVector.zero(F), c03 = FloatVector.zero(F);
        FloatVector c10 = FloatVector.zero(F), c11 = FloatVector.zero(F), c12 = FloatVector.zero(F), c13 = FloatVector.zero(F);
        FloatVector c20 = FloatVector.zero(F), c21 = FloatVector.zero(F), c22 = FloatVector.zero(F), c23 = FloatVector.zero(F);
        FloatVector c30 = FloatVector.zero(F), c31 = FloatVector.zero(F), c32 = FloatVector.zero(F), c33 = FloatVector.zero(F);
        int kv = vectorPart(k);
        for (int p = 0; p < kv; p += L) {
            long o = p * 4L;
            long ow = p * 2L;
            FloatVector w0 = bf16(ws, w + ow);
            FloatVector w1 = bf16(ws, w + ws1 + ow);
            FloatVector w2 = bf16(ws, w + 2 * ws1 + ow);
            FloatVector w3 = bf16(ws, w + 3 * ws1 + ow);
            FloatVector a = FloatVector.fromMemorySegment(F, xs, x + o, LE);
            c00 = a.fma(w0, c00);
            c01 = a.fma(w1, c01);
            c02 = a.fma(w2, c02);
            c03 = a.fma(w3, c03);
            a = FloatVector.fromMemorySegment(F, xs, x + xs1 + o, LE);
            c10 = a.fma(w0, c10);
            c11 = a.fma(w1, c11);
            c12 = a.fma(w2, c12);
            c13 = a.fma(w3, c13);
            a = FloatVector.fromMemorySegment(F, xs, x + 2 * xs1 + o, LE);
            c20 = a.fma(w0, c20);
            c21 = a.fma(w1, c21);
            c22 = a.fma(w2, c22);
            c23 = a.fma(w3, c23);
            a = FloatVector.fromMemorySegment(F, xs, x + 3 * xs1 + o, LE);
            c30 = a.fma(w0, c30);
            c31 = a.fma(w1, c31);
            c32 = a.fma(w2, c32);
            c33 = a.fma(w3, c33);
        }
        ys.set(F32, y, tailBf16(hsum(c00), xs, x, ws, w, kv, k));
        ys.set(F32, y + 4, tailBf16(hsum(c01), xs, x, ws, w + ws1, kv, k));
        ys.set(F32, y + 8, tailBf16(hsum(c02), xs, x, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + 12, tailBf16(hsum(c03), xs, x, ws, w + 3 * ws1, kv, k));
        ys.set(F32, y + ys1, tailBf16(hsum(c10), xs, x + xs1, ws, w, kv, k));
        ys.set(F32, y + ys1 + 4, tailBf16(hsum(c11), xs, x + xs1, ws, w + ws1, kv, k));
        ys.set(F32, y + ys1 + 8, tailBf16(hsum(c12), xs, x + xs1, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + ys1 + 12, tailBf16(hsum(c13), xs, x + xs1, ws, w + 3 * ws1, kv, k));
        ys.set(F32, y + 2 * ys1, tailBf16(hsum(c20), xs, x + 2 * xs1, ws, w, kv, k));
        ys.set(F32, y + 2 * ys1 + 4, tailBf16(hsum(c21), xs, x + 2 * xs1, ws, w + ws1, kv, k));
        ys.set(F32, y + 2 * ys1 + 8, tailBf16(hsum(c22), xs, x + 2 * xs1, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + 2 * ys1 + 12, tailBf16(hsum(c23), xs, x + 2 * xs1, ws, w + 3 * ws1, kv, k));
        ys.set(F32, y + 3 * ys1, tailBf16(hsum(c30), xs, x + 3 * xs1, ws, w, kv, k));
        ys.set(F32, y + 3 * ys1 + 4, tailBf16(hsum(c31), xs, x + 3 * xs1, ws, w + ws1, kv, k));
        ys.set(F32, y + 3 * ys1 + 8, tailBf16(hsum(c32), xs, x + 3 * xs1, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + 3 * ys1 + 12, tailBf16(hsum(c33), xs, x + 3 * xs1, ws, w + 3 * ws1, kv, k));
    }

    static void bf16x1x4(MemorySegment xs, long x, MemorySegment ws, long w, long ws1, int k, MemorySegment ys, long y) {
        FloatVector c0 = FloatVector.zero(F), c1 = FloatVector.zero(F), c2 = FloatVector.zero(F), c3 = FloatVector.zero(F);
        int kv = vectorPart(k);
        for (int p = 0; p < kv; p += L) {
            long ow = p * 2L;
            FloatVector a = FloatVector.fromMemorySegment(F, xs, x + p * 4L, LE);
            c0 = a.fma(bf16(ws, w + ow), c0);
            c1 = a.fma(bf16(ws, w + ws1 + ow), c1);
            c2 = a.fma(bf16(ws, w + 2 * ws1 + ow), c2);
            c3 = a.fma(bf16(ws, w + 3 * ws1 + ow), c3);
        }
        ys.set(F32, y, tailBf16(hsum(c0), xs, x, ws, w, kv, k));
        ys.set(F32, y + 4, tailBf16(hsum(c1), xs, x, ws, w + ws1, kv, k));
        ys.set(F32, y + 8, tailBf16(hsum(c2), xs, x, ws, w + 2 * ws1, kv, k));
        ys.set(F32, y + 12, tailBf16(hsum(c3), xs, x, ws, w + 3 * ws1, kv, k));
    }

    static void bf16x4x1(MemorySegment xs, long x, long xs1, MemorySegment ws, long w, int k, MemorySegment ys, long y, long ys1) {
        FloatVector c0 = FloatVector.zero(F), c1 = FloatVector.zero(F), c2 = FloatVector.zero(F), c3 = FloatVector.zero(F);
        int kv = vectorPart(k);
        for (int p = 0; p < kv; p += L) {
            long o = p * 4L;
            FloatVector b = bf16(ws, w + p * 2L);
            c0 = FloatVector.fromMemorySegment(F, xs, x + o, LE).fma(b, c0);
            c1 = FloatVector.fromMemorySegment(F, xs, x + xs1 + o, LE).fma(b, c1);
            c2 = FloatVector.fromMemorySegment(F, xs, x + 2 * xs1 + o, LE).fma(b, c2);
            c3 = FloatVector.fromMemorySegment(F, xs, x + 3 * xs1 + o, LE).fma(b, c3);
        }
        ys.set(F32, y, tailBf16(hsum(c0), xs, x, ws, w, kv, k));
        ys.set(F32, y + ys1, tailBf16(hsum(c1), xs, x + xs1, ws, w, kv, k));
        ys.set(F32, y + 2 * ys1, tailBf16(hsum(c2), xs, x + 2 * xs1, ws, w, kv, k));
        ys.set(F32, y + 3 * ys1, tailBf16(hsum(c3), xs, x + 3 * xs1, ws, w, kv, k));
    }

    static float bf16x1x1(MemorySegment xs, long x, MemorySegment ws, long w, int k) {
        FloatVector c = FloatVector.zero(F);
        int kv = vectorPart(k);
        for (int p = 0; p < kv; p += L) {
            c = FloatVector.fromMemorySegment(F, xs, x + p * 4L, LE).fma(bf16(ws, w + p * 2L), c);
        }
        return tailBf16(hsum(c), xs, x, ws, w, kv, k);
    }
}
