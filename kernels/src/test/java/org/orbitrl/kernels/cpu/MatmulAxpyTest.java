package org.orbitrl.kernels.cpu;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * {@code y += alpha · x · wᵀ} ({@link org.orbitrl.kernels.Backend#matmulAxpy}) on the host backends against a double
 * reference, f32 and bf16 w, over ragged shapes: |err| ≤ 1e-6 + 1e-6·|y0| + 1e-6·|alpha|·Σ|x·w| (f32 products and one
 * f32 addition).
 */
class MatmulAxpyTest {

    @Test
    void addsTheScaledProductIntoY() {
        SplittableRandom rnd = new SplittableRandom(78);
        try (CpuBackend cpu = new CpuBackend(2)) {
            for (var backend : new org.orbitrl.kernels.Backend[]{cpu, new ScalarBackend()}) {
                for (int[] s : new int[][]{{1, 40, 32}, {7, 33, 16}, {20, 5, 65}}) {
                    for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                        Tensor x = MatmulTNTest.random(rnd, s[0], s[2]);
                        Tensor w = MatmulTNTest.random(rnd, s[1], s[2]).to(wt);
                        Tensor y0 = MatmulTNTest.random(rnd, s[0], s[1]);
                        Tensor y = Tensor.of(y0.toFloatArray(), s[0], s[1]);
                        backend.matmulAxpy(x, w, -1.5f, y);
                        float[] xf = x.toFloatArray();
                        float[] wf = w.toFloatArray();
                        float[] got = y.toFloatArray();
                        float[] base = y0.toFloatArray();
                        for (int i = 0; i < s[0]; i++) {
                            for (int o = 0; o < s[1]; o++) {
                                double d = 0;
                                double abs = 0;
                                for (int j = 0; j < s[2]; j++) {
                                    d += (double) xf[i * s[2] + j] * wf[o * s[2] + j];
                                    abs += Math.abs((double) xf[i * s[2] + j] * wf[o * s[2] + j]);
                                }
                                double want = base[i * s[1] + o] - 1.5 * d;
                                double tol = 1e-6 + 1e-6 * Math.abs(base[i * s[1] + o]) + 1e-6 * 1.5 * abs;
                                assertEquals(want, got[i * s[1] + o], tol, backend.getClass().getSimpleName() + " " + wt + " "
                                        + java.util.Arrays.toString(s) + " y[" + i + ", " + o + "]");
                            }
                        }
                    }
                }
            }
        }
    }
}
