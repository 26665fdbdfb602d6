package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/**
 * {@code moeExpertGradTN} on the device (one launch for every expert) against the scalar backend's
 * per-expert products, over ragged groupings: empty experts (their gradients untouched), an expert
 * with one row, one with most rows, and widths that take each of the three tile shapes (a narrow
 * side of 32 or less on either side, and neither). Gradients start from random values, so the
 * accumulation is checked too. f32 throughout; tolerance 1e-5 + 1e-5·Σ|terms| per element.
 */
class CudaExpertGradTest extends CudaTestBase {

    @Test
    void everyExpertsGradientMatchesTheScalarProducts() {
        SplittableRandom r = rng(311);
        int[][] widths = {{32, 96}, {130, 24}, {70, 67}, {16, 2048}};   // N, M
        int[][] counts = {{0, 1, 57, 0, 3, 200, 0, 18}, {5, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0, 33}};
        for (int[] nm : widths) {
            for (int[] cnt : counts) {
                int experts = cnt.length;
                int[] offsets = new int[experts + 1];
                for (int e = 0; e < experts; e++) {
                    offsets[e + 1] = offsets[e] + cnt[e];
                }
                int p = offsets[experts];
                int n = nm[0];
                int m = nm[1];
                Tensor a = randn(r, 1f, p + 3, n);   // three trailing rows past the last expert: not read
                Tensor b = randn(r, 1f, p + 3, m);
                Tensor[] ref = new Tensor[experts];
                Tensor[] dev = new Tensor[experts];
                for (int e = 0; e < experts; e++) {
                    ref[e] = randn(r, 0.5f, n, m);
                    dev[e] = dev(ref[e]);
                }
                float alpha = 0.75f;
                cpu.moeExpertGradTN(a, b, offsets, alpha, ref);
                Tensor da = dev(a);
                Tensor db = dev(b);
                gpu.moeExpertGradTN(da, db, offsets, alpha, dev);
                float[] av = a.toFloatArray();
                float[] bv = b.toFloatArray();
                for (int e = 0; e < experts; e++) {
                    float[] want = ref[e].toFloatArray();
                    float[] got = gpu.toHost(dev[e]).toFloatArray();
                    String what = "N=" + n + " M=" + m + " counts " + java.util.Arrays.toString(cnt) + ": expert " + e;
                    if (cnt[e] == 0) {
                        assertArrayEquals(want, got, 0f, what + " has no rows: its gradient must be untouched");
                        continue;
                    }
                    double[] tol = new double[n * m];
                    for (int i = 0; i < n; i++) {
                        for (int j = 0; j < m; j++) {
                            double s = 0;
                            for (int row = offsets[e]; row < offsets[e + 1]; row++) {
                                s += Math.abs((double) av[row * n + i] * bv[row * m + j]);
                            }
                            tol[i * m + j] = 1e-5 + 1e-5 * (s * alpha + Math.abs(want[i * m + j]));
                        }
                    }
                    assertWithin(what, want, got, tol);
                }
            }
        }
    }
}
