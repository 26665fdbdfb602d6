package org.orbitrl.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * DeepSeek V4's SwiGLU with its {@code swiglu_limit}, the host reference of {@link Backend#limitedSwiglu}: for gate g
 * and up u of the same shape, {@code gc = min(g, limit)}, {@code uc = clamp(u, −limit, limit)},
 * {@code out = silu(gc) · uc}.
 *
 * <p>Backward passes the gradient where the input lies strictly inside its clamp ({@code g < limit},
 * {@code −limit < u < limit}) and is zero elsewhere, as the model's host computation has it: {@code dg = dout · uc ·
 * σ(gc)·(1 + gc·(1 − σ(gc)))}, {@code du = dout · silu(gc)}.
 */
public final class LimitedSwiglu {
    private LimitedSwiglu() {
    }

    /** out = silu(min(g, limit)) · clamp(u, −limit, limit), f32 host tensors of one shape. */
    public static void forward(Tensor gate, Tensor up, float limit, Tensor out) {
        check("limitedSwiglu", gate, up, out);
        float[] g = gate.toFloatArray();
        float[] u = up.toFloatArray();
        float[] o = new float[g.length];
        forward(g, u, limit, o);
        write(o, out);
    }

    /** dgate and dup (overwritten) from dout, given the forward's gate and up; f32 host tensors of one shape. */
    public static void backward(Tensor gate, Tensor up, Tensor dout, float limit, Tensor dgate, Tensor dup) {
        check("limitedSwigluBackward", gate, up, dout, dgate, dup);
        float[] dg = new float[Math.toIntExact(gate.numel())];
        float[] du = new float[dg.length];
        backward(gate.toFloatArray(), up.toFloatArray(), dout.toFloatArray(), limit, dg, du);
        write(dg, dgate);
        write(du, dup);
    }

    public static void forward(float[] g, float[] u, float limit, float[] out) {
        for (int i = 0; i < out.length; i++) {
            float gc = Math.min(g[i], limit);
            float uc = Math.max(-limit, Math.min(limit, u[i]));
            out[i] = gc / (1f + (float) Math.exp(-gc)) * uc;
        }
    }

    /** dg and du overwritten. */
    public static void backward(float[] g, float[] u, float[] dout, float limit, float[] dg, float[] du) {
        for (int i = 0; i < dout.length; i++) {
            float gc = Math.min(g[i], limit);
            float uc = Math.max(-limit, Math.min(limit, u[i]));
            float sg = 1f / (1f + (float) Math.exp(-gc));
            dg[i] = g[i] < limit ? dout[i] * uc * (sg * (1 + gc * (1 - sg))) : 0f;
            du[i] = u[i] > -limit && u[i] < limit ? dout[i] * (gc * sg) : 0f;
        }
    }

    /** Every tensor f32, contiguous where written, of the first one's shape; a positive limit is the caller's. */
    static void check(String op, Tensor first, Tensor... others) {
        for (Tensor t : others) {
            if (t.dtype() != DType.F32 || first.dtype() != DType.F32 || !Arrays.equals(t.shape(), first.shape())) {
                throw new IllegalArgumentException(op + ": expected f32 tensors of one shape, got " + first + " and " + t);
            }
        }
    }

    private static void write(float[] values, Tensor dst) {
        dst.requireContiguous("limited SwiGLU output");
        MemorySegment.copy(values, 0, dst.segment(), ValueLayout.JAVA_FLOAT_UNALIGNED, dst.byteOffset(), values.length);
    }
}
