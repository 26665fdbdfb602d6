package org.orbitrl.kernels;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * gpt-oss's clamped SwiGLU on the fused, interleaved gate_up output, the host reference of
 * {@link Backend#clampedSwiglu}: for each row of {@code gu} [rows, 2I], {@code gate = gu[2j]},
 * {@code up = gu[2j+1]}; {@code g = min(gate, limit)}, {@code u = clamp(up, −limit, limit)},
 * {@code out[j] = (u + 1) · g · sigmoid(alpha · g)}.
 *
 * <p>Backward follows PyTorch's clamp: the gradient passes where the input lies inside the closed
 * clamp range and is zero where the value was clamped.
 */
public final class ClampedSwiglu {
    private ClampedSwiglu() {
    }

    /** gu [rows, 2I] interleaved -> out [rows, I], host tensors (f32). */
    public static void forward(Tensor gu, float alpha, float limit, Tensor out) {
        int inter = check("clampedSwiglu", gu, out);
        int rows = Math.toIntExact(out.numel() / Math.max(1, inter));
        float[] o = new float[Math.toIntExact(out.numel())];
        forward(gu.toFloatArray(), rows, inter, alpha, limit, o);
        write(o, out);
    }

    /** d out [rows, I] -> d gu [rows, 2I] (overwritten), given the forward input gu; host tensors (f32). */
    public static void backward(Tensor gu, Tensor dout, float alpha, float limit, Tensor dgu) {
        int inter = check("clampedSwigluBackward", gu, dout);
        if (!java.util.Arrays.equals(gu.shape(), dgu.shape())) {
            throw new IllegalArgumentException("clampedSwigluBackward: dgu " + dgu + " must have the shape of gu " + gu);
        }
        int rows = Math.toIntExact(dout.numel() / Math.max(1, inter));
        float[] d = new float[Math.toIntExact(dgu.numel())];
        backward(gu.toFloatArray(), dout.toFloatArray(), rows, inter, alpha, limit, d);
        write(d, dgu);
    }

    /** gu [rows, 2I] interleaved -> out [rows, I]. */
    public static void forward(float[] gu, int rows, int inter, float alpha, float limit, float[] out) {
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < inter; j++) {
                float gate = gu[(r * inter + j) * 2];
                float up = gu[(r * inter + j) * 2 + 1];
                float g = Math.min(gate, limit);
                float u = Math.max(-limit, Math.min(up, limit));
                float glu = g * sigmoid(alpha * g);
                out[r * inter + j] = (u + 1) * glu;
            }
        }
    }

    /** d out [rows, I] -> d gu [rows, 2I] (interleaved, overwritten), given the forward input gu. */
    public static void backward(float[] gu, float[] dout, int rows, int inter, float alpha, float limit, float[] dgu) {
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < inter; j++) {
                int i = (r * inter + j) * 2;
                float gate = gu[i];
                float up = gu[i + 1];
                float g = Math.min(gate, limit);
                float u = Math.max(-limit, Math.min(up, limit));
                float s = sigmoid(alpha * g);
                float glu = g * s;
                float d = dout[r * inter + j];
                // d glu / d g = s + alpha·g·s·(1 − s)
                dgu[i] = gate <= limit ? d * (u + 1) * (s + alpha * g * s * (1 - s)) : 0f;
                dgu[i + 1] = up >= -limit && up <= limit ? d * glu : 0f;
            }
        }
    }

    static float sigmoid(float x) {
        return (float) (1.0 / (1.0 + Math.exp(-x)));
    }

    /** Checks gu [rows, 2I] against the half-width tensor [rows, I]; returns I. */
    static int check(String op, Tensor gu, Tensor half) {
        if (gu.dtype() != DType.F32 || half.dtype() != DType.F32 || gu.rank() < 1 || half.rank() != gu.rank()
                || gu.dim(-1) != 2 * half.dim(-1) || gu.numel() != 2 * half.numel()) {
            throw new IllegalArgumentException(op + ": gate_up " + gu + " must be f32 [rows, 2I] and its partner " + half
                    + " f32 [rows, I]");
        }
        return half.size(-1);
    }

    private static void write(float[] values, Tensor dst) {
        dst.requireContiguous("clamped SwiGLU output");
        MemorySegment.copy(values, 0, dst.segment(), ValueLayout.JAVA_FLOAT_UNALIGNED, dst.byteOffset(), values.length);
    }
}
