package org.orbitrl.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Host implementations of the optimizer operations of {@link Backend} (the defaults, and the
 * reference the device versions are tested against bit for bit).
 */
public final class OptimizerOps {
    private OptimizerOps() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /**
     * The scalars of one AdamW step, each already rounded to f32 (PyTorch's single-tensor AdamW):
     * {@code g = grad·clip (when clipped); m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; p = p·decay;
     * p = p − stepSize·(m / (√v / bc2Sqrt + eps))}.
     */
    public record AdamWStep(boolean clipped, float clip, float beta1, float oneMinusBeta1, float beta2,
                            float oneMinusBeta2, float decay, float stepSize, float bc2Sqrt, float eps) {
    }

    /**
     * Of a gradient tensor: the sum of the squares of its finite elements (in double) and the index
     * of its first NaN or infinity, -1 when there is none.
     */
    public record GradientStats(double sumOfSquares, long firstNonFinite) {
    }

    /** One AdamW update, in place on param, m and v (all contiguous f32 of one shape); grad is read only. */
    public static void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStep s) {
        check(param, grad, m, v);
        MemorySegment ps = param.segment();
        MemorySegment gs = grad.segment();
        MemorySegment ms = m.segment();
        MemorySegment vs = v.segment();
        long po = param.byteOffset();
        long go = grad.byteOffset();
        long mo = m.byteOffset();
        long vo = v.byteOffset();
        long n = param.numel();
        for (long i = 0; i < n; i++) {
            long d = 4 * i;
            float g = gs.get(F32, go + d);
            if (s.clipped()) {
                g *= s.clip();
            }
            float mi = s.beta1() * ms.get(F32, mo + d) + s.oneMinusBeta1() * g;
            float vi = s.beta2() * vs.get(F32, vo + d) + s.oneMinusBeta2() * (g * g);
            float p = ps.get(F32, po + d) * s.decay();
            float denom = (float) Math.sqrt(vi) / s.bc2Sqrt() + s.eps();
            p -= s.stepSize() * (mi / denom);
            ms.set(F32, mo + d, mi);
            vs.set(F32, vo + d, vi);
            ps.set(F32, po + d, p);
        }
    }

    static void check(Tensor param, Tensor grad, Tensor m, Tensor v) {
        Tensor[] all = {param, grad, m, v};
        String[] names = {"param", "grad", "exp_avg", "exp_avg_sq"};
        for (int i = 0; i < all.length; i++) {
            if (all[i].dtype() != DType.F32 || !java.util.Arrays.equals(all[i].shape(), param.shape())) {
                throw new IllegalArgumentException("adamw: " + names[i] + " " + all[i] + " must be f32 of the parameter's shape "
                        + java.util.Arrays.toString(param.shape()));
            }
            all[i].requireContiguous("adamw " + names[i]);
        }
    }

    /** Sum of squares (double, ascending order) and first non-finite index of a contiguous f32 tensor. */
    public static GradientStats gradientStats(Tensor g) {
        if (g.dtype() != DType.F32) {
            throw new IllegalArgumentException("gradientStats: gradient must be f32, got " + g);
        }
        g.requireContiguous("gradientStats gradient");
        MemorySegment seg = g.segment();
        long base = g.byteOffset();
        long n = g.numel();
        double ss = 0;
        long bad = -1;
        for (long i = 0; i < n; i++) {
            float x = seg.get(F32, base + 4 * i);
            if (Float.isFinite(x)) {
                ss += (double) x * x;
            } else if (bad < 0) {
                bad = i;
            }
        }
        return new GradientStats(ss, bad);
    }
}
