package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorShuffle;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;
import static org.orbitrl.kernels.cpu.VectorMath.hsum;

/**
 * Per-row kernels: RMSNorm, softmax, log-softmax. Each reduces one row in the canonical order of
 * {@link VectorMath} (lane-wise over the vector part, fixed butterfly, scalar tail), so a row's
 * result depends only on the row. Offsets are in bytes; a row is {@code n} contiguous f32.
 */
final class RowKernels {
    private RowKernels() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /** {@code out = x / sqrt(mean(x²) + eps) · w}; w f32 or bf16 (then {@code wBf16}). out may be x. */
    static void rmsNorm(MemorySegment xs, long x, MemorySegment ws, long w, boolean wBf16, float eps,
                        MemorySegment os, long o, int n) {
        int nv = n - n % L;
        FloatVector acc = FloatVector.zero(F);
        for (int p = 0; p < nv; p += L) {
            FloatVector v = FloatVector.fromMemorySegment(F, xs, x + p * 4L, LE);
            acc = v.fma(v, acc);
        }
        float ss = hsum(acc);
        for (int p = nv; p < n; p++) {
            float v = xs.get(F32, x + p * 4L);
            ss = Math.fma(v, v, ss);
        }
        float inv = (float) (1.0 / Math.sqrt(ss / n + eps));
        for (int p = 0; p < nv; p += L) {
            FloatVector v = FloatVector.fromMemorySegment(F, xs, x + p * 4L, LE);
            FloatVector g = wBf16 ? VectorMath.bf16(ws, w + p * 2L) : FloatVector.fromMemorySegment(F, ws, w + p * 4L, LE);
            g.mul(v.mul(inv)).intoMemorySegment(os, o + p * 4L, LE);
        }
        for (int p = nv; p < n; p++) {
            float g = wBf16 ? VectorMath.bf16Scalar(ws, w + p * 2L) : ws.get(F32, w + p * 4L);
            os.set(F32, o + p * 4L, g * (xs.get(F32, x + p * 4L) * inv));
        }
    }

    /** Softmax of one row in place. */
    static void softmax(MemorySegment s, long x, int n) {
        float max = max(s, x, n);
        float sum = expAndSum(s, x, n, max, true);
        int nv = n - n % L;
        for (int p = 0; p < nv; p += L) {
            FloatVector.fromMemorySegment(F, s, x + p * 4L, LE).div(sum).intoMemorySegment(s, x + p * 4L, LE);
        }
        for (int p = nv; p < n; p++) {
            s.set(F32, x + p * 4L, s.get(F32, x + p * 4L) / sum);
        }
    }

    /** Log-softmax of one row in place: {@code x - (max + log Σ exp(x - max))}. */
    static void logSoftmax(MemorySegment s, long x, int n) {
        float max = max(s, x, n);
        float sum = expAndSum(s, x, n, max, false);
        float lse = max + (float) StrictMath.log(sum);
        int nv = n - n % L;
        for (int p = 0; p < nv; p += L) {
            FloatVector.fromMemorySegment(F, s, x + p * 4L, LE).sub(lse).intoMemorySegment(s, x + p * 4L, LE);
        }
        for (int p = nv; p < n; p++) {
            s.set(F32, x + p * 4L, s.get(F32, x + p * 4L) - lse);
        }
    }

    /** Largest element (NaN if any is NaN); max is exact, so its order does not matter. */
    static float max(MemorySegment s, long x, int n) {
        int nv = n - n % L;
        FloatVector m = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        for (int p = 0; p < nv; p += L) {
            m = m.max(FloatVector.fromMemorySegment(F, s, x + p * 4L, LE));
        }
        float r = hmax(m);
        for (int p = nv; p < n; p++) {
            r = Math.max(r, s.get(F32, x + p * 4L));
        }
        return r;
    }

    /** Σ exp(x - max) in the canonical order; writes the exponentials back when {@code store}. */
    private static float expAndSum(MemorySegment s, long x, int n, float max, boolean store) {
        int nv = n - n % L;
        FloatVector acc = FloatVector.zero(F);
        for (int p = 0; p < nv; p += L) {
            FloatVector e = VectorMath.exp(FloatVector.fromMemorySegment(F, s, x + p * 4L, LE).sub(max));
            if (store) {
                e.intoMemorySegment(s, x + p * 4L, LE);
            }
            acc = acc.add(e);
        }
        float sum = hsum(acc);
        for (int p = nv; p < n; p++) {
            float e = VectorMath.exp(s.get(F32, x + p * 4L) - max);
            if (store) {
                s.set(F32, x + p * 4L, e);
            }
            sum += e;
        }
        return sum;
    }

    static float hmax(FloatVector v) {
        for (int step = L / 2; step >= 1; step /= 2) {
            v = v.max(v.rearrange(xorShuffle(step)));
        }
        return v.lane(0);
    }

    private static final VectorShuffle<Float>[] XOR = xorShuffles();

    @SuppressWarnings("unchecked")
    private static VectorShuffle<Float>[] xorShuffles() {
        VectorShuffle<Float>[] s = new VectorShuffle[L];
        for (int step = 1; step < L; step *= 2) {
            int st = step;
            s[step] = VectorShuffle.fromOp(F, i -> i ^ st);
        }
        return s;
    }

    private static VectorShuffle<Float> xorShuffle(int step) {
        return XOR[step];
    }
}
