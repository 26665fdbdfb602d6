package org.orbitrl.kernels.cpu;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.HostOps;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The adapter-gradient product c += alpha·aᵀ·b against the host reference over ragged shapes
 * (tolerance 1e-5·sqrt(M) absolute + 1e-5 relative), and bitwise independent of the thread count.
 */
class MatmulTNTest {

    static Tensor random(SplittableRandom r, int rows, int cols) {
        float[] v = new float[rows * cols];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return Tensor.of(v, rows, cols);
    }

    @Test
    void matchesTheHostReferenceAndIsThreadInvariant() {
        SplittableRandom rnd = new SplittableRandom(77);
        try (CpuBackend two = new CpuBackend(2); CpuBackend one = new CpuBackend(1)) {
            for (int[] s : new int[][]{{1, 1, 1}, {7, 3, 33}, {48, 4, 64}, {130, 17, 65}, {5, 64, 4}}) {
                Tensor a = random(rnd, s[0], s[1]);
                Tensor b = random(rnd, s[0], s[2]);
                Tensor c0 = random(rnd, s[1], s[2]);
                Tensor ref = Tensor.of(c0.toFloatArray(), s[1], s[2]);
                Tensor got = Tensor.of(c0.toFloatArray(), s[1], s[2]);
                Tensor got1 = Tensor.of(c0.toFloatArray(), s[1], s[2]);
                HostOps.matmulTN(a, b, 0.5f, ref);
                two.matmulTN(a, b, 0.5f, got);
                one.matmulTN(a, b, 0.5f, got1);
                float[] r = ref.toFloatArray();
                float[] g = got.toFloatArray();
                for (int i = 0; i < r.length; i++) {
                    double tol = 1e-5 * Math.sqrt(s[0]) + 1e-5 * Math.abs(r[i]);
                    assertEquals(r[i], g[i], tol, "c[" + i + "] for M,P,Q=" + java.util.Arrays.toString(s));
                }
                assertArrayEquals(g, got1.toFloatArray(), 0f, "thread count changed the bits");
            }
        }
    }
}
