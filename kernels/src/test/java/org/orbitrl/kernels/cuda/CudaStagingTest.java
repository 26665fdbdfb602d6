package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The dense bf16 products whose f32 operand is staged in bf16 row chunks ({@link DeviceScratch}):
 * {@code matmul}, {@code matmulAccumulate} and {@code matmulTransposed} with bf16 weights, under a
 * staging limit lowered so that small shapes take several chunks (and, at the smallest limit, one
 * row a chunk), against the scalar backend. Tolerance |got - ref| ≤ 1e-6 + 2⁻⁷·Σ|terms| (the operand
 * rounded to bf16, f32 accumulation), Σ|terms| the sum of the products' magnitudes. The staging
 * buffer the backend keeps afterwards must be {@link DeviceScratch#stagingBytes} of the shapes: the
 * planner's closed form, checked against the allocator's live activation bytes.
 */
class CudaStagingTest extends CudaTestBase {
    private static final int M = 300;
    private static final int K = 96;
    private static final int N = 72;

    @Test
    void chunkedProductsMatchTheReferenceAndKeepTheStagingBound() {
        long before = gpu.allocator().liveBytes(MemoryCategory.ACTIVATIONS);
        long old = DeviceScratch.stagingLimit(8192);   // 4096 bf16 values: 42 rows of K, 56 of N a chunk
        try {
            products(rng(5), "limit 8 KiB");
            gpu.synchronize();
            long staging = gpu.allocator().liveBytes(MemoryCategory.ACTIVATIONS) - before;
            assertEquals(DeviceScratch.stagingBytes(new long[]{M, K}, new long[]{M, N}), staging,
                    "staging scratch kept by the backend after the chunked products");
            assertEquals(8192, staging, "4096 bf16 values, not the unchunked " + M * K);
            DeviceScratch.stagingLimit(64);             // 32 values: one row a chunk, the row larger than the limit
            products(rng(6), "limit 64 B");
        } finally {
            DeviceScratch.stagingLimit(old);
        }
    }

    private void products(SplittableRandom r, String label) {
        Tensor x = randn(r, 1f, M, K);        // [M, K]
        Tensor w = bf16(randn(r, 0.5f, N, K)); // [N, K] bf16
        Tensor dw = dev(w);
        float[] wv = w.toFloatArray();

        Tensor ref = host(M, N);
        cpu.matmul(x, w, ref);
        Tensor y = poisoned(DType.F32, M, N);
        gpu.matmul(dev(x), dw, y);
        double[] tol = tolForward(x.toFloatArray(), wv);
        assertWithin("matmul, " + label, ref.toFloatArray(), gpu.toHost(y).toFloatArray(), tol);

        Tensor y0 = randn(r, 1f, M, N);        // [M, N]
        Tensor acc = dev(y0);
        gpu.matmulAccumulate(dev(x), dw, acc);
        float[] expected = ref.toFloatArray();
        float[] start = y0.toFloatArray();
        for (int i = 0; i < expected.length; i++) {
            expected[i] += start[i];
            tol[i] += 1e-6 * Math.abs(start[i]);
        }
        assertWithin("matmulAccumulate, " + label, expected, gpu.toHost(acc).toFloatArray(), tol);

        Tensor dy = randn(r, 1f, M, N);        // [M, N] · w [N, K] -> [M, K]
        Tensor refT = host(M, K);
        cpu.matmulTransposed(dy, w, refT);
        Tensor dx = poisoned(DType.F32, M, K);
        gpu.matmulTransposed(dev(dy), dw, dx);
        assertWithin("matmulTransposed, " + label, refT.toFloatArray(), gpu.toHost(dx).toFloatArray(),
                tolTransposed(dy.toFloatArray(), wv));
    }

    private static Tensor host(long... shape) {
        return Tensor.allocate(Arena.ofAuto(), DType.F32, shape);
    }

    private static Tensor bf16(Tensor f) {
        Tensor b = Tensor.allocate(Arena.ofAuto(), DType.BF16, f.shape());
        b.copyFrom(f);
        return b;
    }

    /** 1e-6 + 2⁻⁷·Σ_j |x[i, j]·w[o, j]| for y [M, N] = x [M, K] · wᵀ. */
    private static double[] tolForward(float[] x, float[] w) {
        double[] t = new double[M * N];
        for (int i = 0; i < M; i++) {
            for (int o = 0; o < N; o++) {
                double s = 0;
                for (int j = 0; j < K; j++) {
                    s += Math.abs(x[i * K + j] * w[o * K + j]);
                }
                t[i * N + o] = 1e-6 + s / 128;
            }
        }
        return t;
    }

    /** 1e-6 + 2⁻⁷·Σ_j |dy[i, j]·w[j, p]| for dx [M, K] = dy [M, N] · w. */
    private static double[] tolTransposed(float[] dy, float[] w) {
        double[] t = new double[M * K];
        for (int i = 0; i < M; i++) {
            for (int p = 0; p < K; p++) {
                double s = 0;
                for (int j = 0; j < N; j++) {
                    s += Math.abs(dy[i * N + j] * w[j * K + p]);
                }
                t[i * K + p] = 1e-6 + s / 128;
            }
        }
        return t;
    }
}
