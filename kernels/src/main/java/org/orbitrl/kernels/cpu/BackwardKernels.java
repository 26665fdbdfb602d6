package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;
import static org.orbitrl.kernels.cpu.VectorMath.hsum;

/**
 * Reverse-mode kernels for one row or one attention head: activation gradients only (the base
 * is frozen). Reductions use the canonical order of {@link VectorMath}; accumulations over
 * queries run in ascending order. Offsets are in bytes.
 */
final class BackwardKernels {
    private BackwardKernels() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * RMSNorm backward of one row: with r = 1/sqrt(mean(x²)+eps) and g = w ⊙ dy,
     * {@code dx = r·g − x·r³·Σ(g⊙x)/H}. dx may be dy.
     */
    static void rmsNorm(MemorySegment xs, long x, MemorySegment ws, long w, boolean wBf16, float eps,
                        MemorySegment ds, long d, MemorySegment os, long o, int n) {
        int nv = n - n % L;
        FloatVector ssV = FloatVector.zero(F);
        FloatVector dotV = FloatVector.zero(F);
        for (int p = 0; p < nv; p += L) {
            FloatVector xv = FloatVector.fromMemorySegment(F, xs, x + p * 4L, LE);
            FloatVector g = weight(ws, w, wBf16, p).mul(FloatVector.fromMemorySegment(F, ds, d + p * 4L, LE));
            ssV = xv.fma(xv, ssV);
            dotV = g.fma(xv, dotV);
        }
        float ss = hsum(ssV);
        float dot = hsum(dotV);
        for (int p = nv; p < n; p++) {
            float xv = xs.get(F32, x + p * 4L);
            float g = weightAt(ws, w, wBf16, p) * ds.get(F32, d + p * 4L);
            ss = Math.fma(xv, xv, ss);
            dot = Math.fma(g, xv, dot);
        }
        float inv = (float) (1.0 / Math.sqrt(ss / n + eps));
        float c = inv * inv * inv * dot / n;
        for (int p = 0; p < nv; p += L) {
            FloatVector xv = FloatVector.fromMemorySegment(F, xs, x + p * 4L, LE);
            FloatVector dy = FloatVector.fromMemorySegment(F, ds, d + p * 4L, LE);
            weight(ws, w, wBf16, p).mul(inv).mul(dy).sub(xv.mul(c)).intoMemorySegment(os, o + p * 4L, LE);
        }
        for (int p = nv; p < n; p++) {
            float g = weightAt(ws, w, wBf16, p) * inv;
            os.set(F32, o + p * 4L, g * ds.get(F32, d + p * 4L) - xs.get(F32, x + p * 4L) * c);
        }
    }

    private static FloatVector weight(MemorySegment ws, long w, boolean bf16, int p) {
        return bf16 ? VectorMath.bf16(ws, w + p * 2L) : FloatVector.fromMemorySegment(F, ws, w + p * 4L, LE);
    }

    private static float weightAt(MemorySegment ws, long w, boolean bf16, int p) {
        return bf16 ? VectorMath.bf16Scalar(ws, w + p * 2L) : ws.get(F32, w + p * 4L);
    }

    /** SwiGLU backward over elements [from, to): dg = dout·u·σ(g)(1 + g(1−σ(g))), du = dout·g·σ(g). */
    static void swiglu(MemorySegment gs, long g, MemorySegment us, long u, MemorySegment ds, long d,
                       MemorySegment dgs, long dg, MemorySegment dus, long du, long from, long to) {
        long p = from;
        long vEnd = from + (to - from) / L * L;
        for (; p < vEnd; p += L) {
            FloatVector gv = FloatVector.fromMemorySegment(F, gs, g + p * 4, LE);
            FloatVector uv = FloatVector.fromMemorySegment(F, us, u + p * 4, LE);
            FloatVector dv = FloatVector.fromMemorySegment(F, ds, d + p * 4, LE);
            FloatVector sig = FloatVector.broadcast(F, 1f).div(VectorMath.exp(gv.neg()).add(1f));
            FloatVector silu = gv.mul(sig);
            FloatVector dGate = dv.mul(uv).mul(sig.mul(gv.mul(FloatVector.broadcast(F, 1f).sub(sig)).add(1f)));
            dv.mul(silu).intoMemorySegment(dus, du + p * 4, LE);
            dGate.intoMemorySegment(dgs, dg + p * 4, LE);
        }
        for (; p < to; p++) {
            float gv = gs.get(F32, g + p * 4);
            float uv = us.get(F32, u + p * 4);
            float dv = ds.get(F32, d + p * 4);
            float sig = 1f / (VectorMath.exp(-gv) + 1f);
            float silu = gv * sig;
            float dGate = dv * uv * (sig * (gv * (1f - sig) + 1f));
            dus.set(F32, du + p * 4, dv * silu);
            dgs.set(F32, dg + p * 4, dGate);
        }
    }
}
