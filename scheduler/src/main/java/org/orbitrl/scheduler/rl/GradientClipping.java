package org.orbitrl.scheduler.rl;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/**
 * Global-norm gradient clipping, as {@code torch.nn.utils.clip_grad_norm_} defines it: the L2 norm
 * over all gradients together, and if it exceeds {@code maxNorm} every gradient is scaled by
 * {@code maxNorm / (norm + 1e-6)}. Sums are in double, in a fixed order (tensor by tensor, element
 * by element), so the result is reproducible bit for bit.
 */
public final class GradientClipping {
    /** Added to the norm before dividing, as PyTorch does. */
    public static final double EPSILON = 1e-6;

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private GradientClipping() {
    }

    /** The L2 norm of all elements of all {@code grads} (contiguous f32 tensors). */
    public static double globalNorm(List<Tensor> grads) {
        double ss = 0;
        for (Tensor g : grads) {
            requireF32(g);
            MemorySegment seg = g.segment();
            long base = g.byteOffset();
            long n = g.numel();
            for (long i = 0; i < n; i++) {
                double x = seg.get(F32, base + 4 * i);
                ss += x * x;
            }
        }
        return Math.sqrt(ss);
    }

    /**
     * The factor gradients are multiplied by: {@code min(1, maxNorm / (norm + 1e-6))}, or 1 when
     * {@code maxNorm <= 0} (clipping off).
     */
    public static double coefficient(double norm, double maxNorm) {
        if (maxNorm <= 0) {
            return 1;
        }
        return Math.min(1.0, maxNorm / (norm + EPSILON));
    }

    /**
     * Scales {@code grads} in place so that their global norm is at most {@code maxNorm}.
     *
     * @return the norm before clipping
     */
    public static double clipGlobalNorm(List<Tensor> grads, double maxNorm) {
        if (!(maxNorm > 0)) {
            throw new IllegalArgumentException("maxNorm must be positive, got " + maxNorm);
        }
        double norm = globalNorm(grads);
        double c = coefficient(norm, maxNorm);
        if (c < 1) {
            float cf = (float) c;
            for (Tensor g : grads) {
                MemorySegment seg = g.segment();
                long base = g.byteOffset();
                long n = g.numel();
                for (long i = 0; i < n; i++) {
                    long o = base + 4 * i;
                    seg.set(F32, o, seg.get(F32, o) * cf);
                }
            }
        }
        return norm;
    }

    static void requireF32(Tensor g) {
        if (g.dtype() != DType.F32) {
            throw new IllegalArgumentException("gradient must be f32, got " + g);
        }
        g.requireContiguous("gradient");
    }
}
