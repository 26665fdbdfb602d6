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

    /**
     * {@code dx += alpha · dy · w} ({@link org.orbitrl.kernels.Backend#matmulTransposedAxpy}, a LoRA's {@code (dy·B)·A}
     * into the input gradient) on the host backends against a double reference, f32 and bf16 w, within the same bound.
     */
    @Test
    void addsTheScaledTransposedProductIntoDx() {
        SplittableRandom rnd = new SplittableRandom(79);
        try (CpuBackend cpu = new CpuBackend(2)) {
            for (var backend : new org.orbitrl.kernels.Backend[]{cpu, new ScalarBackend()}) {
                for (int[] s : new int[][]{{1, 32, 40}, {7, 16, 33}, {20, 65, 5}}) {   // rows, N, K
                    for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                        Tensor dy = MatmulTNTest.random(rnd, s[0], s[1]);
                        Tensor w = MatmulTNTest.random(rnd, s[1], s[2]).to(wt);
                        Tensor dx0 = MatmulTNTest.random(rnd, s[0], s[2]);
                        Tensor dx = Tensor.of(dx0.toFloatArray(), s[0], s[2]);
                        backend.matmulTransposedAxpy(dy, w, 0.625f, dx);
                        float[] df = dy.toFloatArray();
                        float[] wf = w.toFloatArray();
                        float[] got = dx.toFloatArray();
                        float[] base = dx0.toFloatArray();
                        for (int i = 0; i < s[0]; i++) {
                            for (int c = 0; c < s[2]; c++) {
                                double d = 0;
                                double abs = 0;
                                for (int j = 0; j < s[1]; j++) {
                                    d += (double) df[i * s[1] + j] * wf[j * s[2] + c];
                                    abs += Math.abs((double) df[i * s[1] + j] * wf[j * s[2] + c]);
                                }
                                double want = base[i * s[2] + c] + 0.625 * d;
                                double tol = 1e-6 + 1e-6 * Math.abs(base[i * s[2] + c]) + 1e-6 * 0.625 * abs;
                                assertEquals(want, got[i * s[2] + c], tol, backend.getClass().getSimpleName() + " " + wt + " "
                                        + java.util.Arrays.toString(s) + " dx[" + i + ", " + c + "]");
                            }
                        }
                    }
                }
            }
        }
    }
}
