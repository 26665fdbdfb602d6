package org.orbitrl.model.arch;

/**
 * gpt-oss's clamped SwiGLU on the fused, interleaved gate_up output: for each row of
 * {@code gu} [rows, 2I], {@code gate = gu[2j]}, {@code up = gu[2j+1]};
 * {@code g = min(gate, limit)}, {@code u = clamp(up, −limit, limit)},
 * {@code out[j] = (u + 1) · g · sigmoid(alpha · g)}.
 *
 * <p>Backward follows PyTorch's clamp: the gradient passes where the input lies inside the closed
 * clamp range and is zero where the value was clamped.
 */
final class GptOssSwiglu {
    private GptOssSwiglu() {
    }

    /** gu [rows, 2I] interleaved -> out [rows, I]. */
    static void forward(float[] gu, int rows, int inter, float alpha, float limit, float[] out) {
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
    static void backward(float[] gu, float[] dout, int rows, int inter, float alpha, float limit, float[] dgu) {
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
}
