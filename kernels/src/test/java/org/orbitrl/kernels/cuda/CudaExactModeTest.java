package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Exact mode on the GPU: a row's result must not depend on the batch it is computed in. Each
 * product is taken once over a batch of rows and again one row at a time (and over a sub-batch
 * at an offset); the results must be bitwise equal. Causal attention over a whole sequence must
 * equal, bitwise, the same queries run one at a time against the growing key prefix (as decode
 * does). The values are also checked against the scalar backend: 1e-6 + 1e-5·Σ|terms| for the
 * products, 2e-6 + 2e-5·|ref| for attention.
 */
class CudaExactModeTest {
    private static CudaBackend gpu;
    private static final ScalarBackend cpu = new ScalarBackend();

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
        assertTrue(gpu.exact());
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
            gpu = null;
        }
    }

    private static float[] bits(Tensor dev) {
        return gpu.toHost(dev).toFloatArray();
    }

    private static void assertBitwise(String what, float[] a, float[] b) {
        double[] zero = new double[a.length];
        CudaTestBase.assertWithin(what, a, b, zero);
    }

    @Test
    void productsAreBatchInvariant() {
        SplittableRandom r = CudaTestBase.rng(91);
        int m = 21;
        int n = 70;
        int k = 96;
        Tensor x = CudaTestBase.randn(r, 1f, m, k);
        Tensor wf = CudaTestBase.randn(r, 0.5f, n, k);
        Tensor wb = Tensor.allocate(Arena.ofAuto(), DType.BF16, n, k);
        wb.copyFrom(wf);
        QuantizedTensor wq = CudaQuantTest.random("int4-g32", r, n, k);
        Tensor dx = gpu.toDevice(x);
        Tensor dwf = gpu.toDevice(wf);
        Tensor dwb = gpu.toDevice(wb);
        QuantizedTensor dwq = gpu.toDevice(wq);
        try {
            for (String kind : new String[]{"f32", "bf16", "int4-g32"}) {
                Tensor all = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, m, n);
                run(kind, dx, dwf, dwb, dwq, all);
                float[] full = bits(all);
                Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
                switch (kind) {
                    case "f32" -> cpu.matmul(x, wf, ref);
                    case "bf16" -> cpu.matmul(x, wb, ref);
                    default -> cpu.matmulQuantized(x, wq, ref);
                }
                float[] wv = kind.equals("int4-g32") ? CudaQuantTest.dequantizeRef(wq) : (kind.equals("f32") ? wf : wb).toFloatArray();
                double[] tol = CudaTestBase.absDot(x.toFloatArray(), wv, m, n, k);
                for (int i = 0; i < tol.length; i++) {
                    tol[i] = 1e-6 + 1e-5 * tol[i];
                }
                CudaTestBase.assertWithin("exact " + kind + " against the scalar backend", ref.toFloatArray(), full, tol);
                for (int row = 0; row < m; row++) {
                    Tensor one = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, 1, n);
                    run(kind, dx.slice(0, row, row + 1), dwf, dwb, dwq, one);
                    float[] expect = java.util.Arrays.copyOfRange(full, row * n, (row + 1) * n);
                    assertBitwise("exact " + kind + ": row " + row + " alone vs in a batch of " + m, expect, bits(one));
                    gpu.free(one);
                }
                Tensor part = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, 11, n);
                run(kind, dx.slice(0, 5, 16), dwf, dwb, dwq, part);
                assertBitwise("exact " + kind + ": rows 5..15 as a batch of 11 vs in a batch of " + m,
                        java.util.Arrays.copyOfRange(full, 5 * n, 16 * n), bits(part));
                gpu.free(part);
                gpu.free(all);
            }
        } finally {
            gpu.synchronize();
            gpu.free(dx);
            gpu.free(dwf);
            gpu.free(dwb);
            gpu.free(dwq);
        }
    }

    @Test
    void activationGradientsThroughFrozenWeightsAreF32() {
        SplittableRandom r = CudaTestBase.rng(93);
        int m = 37;
        int n = 96;
        int k = 64;
        Tensor dy = CudaTestBase.randn(r, 1f, m, n);
        Tensor wf = CudaTestBase.randn(r, 0.5f, n, k);
        Tensor wb = Tensor.allocate(Arena.ofAuto(), DType.BF16, n, k);
        wb.copyFrom(wf);
        QuantizedTensor wq = CudaQuantTest.random("int4-g32", r, n, k);
        Tensor ddy = gpu.toDevice(dy);
        Tensor dwb = gpu.toDevice(wb);
        QuantizedTensor dwq = gpu.toDevice(wq);
        Tensor out = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, m, k);
        try {
            for (boolean quantized : new boolean[]{false, true}) {
                Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, k);
                float[] wv;
                if (quantized) {
                    cpu.matmulQuantizedTransposed(dy, wq, ref);
                    gpu.matmulQuantizedTransposed(ddy, dwq, out);
                    wv = CudaQuantTest.dequantizeRef(wq);
                } else {
                    cpu.matmulTransposed(dy, wb, ref);
                    gpu.matmulTransposed(ddy, dwb, out);
                    wv = wb.toFloatArray();
                }
                float[] d = dy.toFloatArray();
                double[] tol = new double[m * k];
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < n; j++) {
                        for (int p = 0; p < k; p++) {
                            tol[i * k + p] += Math.abs((double) d[i * n + j] * wv[j * k + p]);
                        }
                    }
                }
                for (int i = 0; i < tol.length; i++) {
                    tol[i] = 1e-6 + 1e-5 * tol[i]; // f32 accumulation, no bf16 rounding (which would need 2^-8)
                }
                CudaTestBase.assertWithin("exact matmul" + (quantized ? "Quantized" : "") + "Transposed against the scalar backend",
                        ref.toFloatArray(), bits(out), tol);
            }
        } finally {
            gpu.synchronize();
            gpu.free(ddy);
            gpu.free(dwb);
            gpu.free(dwq);
            gpu.free(out);
        }
    }

    private static void run(String kind, Tensor x, Tensor wf, Tensor wb, QuantizedTensor wq, Tensor y) {
        switch (kind) {
            case "f32" -> gpu.matmul(x, wf, y);
            case "bf16" -> gpu.matmul(x, wb, y);
            default -> gpu.matmulQuantized(x, wq, y);
        }
    }

    @Test
    void attentionIsTheSameInPrefillAndDecode() {
        SplittableRandom r = CudaTestBase.rng(92);
        int[][] cases = {{37, 8, 2, 64, 0}, {70, 4, 4, 128, 16}}; // T, Hq, Hkv, D, window
        for (int[] c : cases) {
            int t = c[0], hq = c[1], hkv = c[2], d = c[3], win = c[4];
            Tensor q = CudaTestBase.randn(r, 1f, t, hq, d);
            Tensor k = CudaTestBase.randn(r, 1f, t, hkv, d);
            Tensor v = CudaTestBase.randn(r, 1f, t, hkv, d);
            AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), win, null);
            Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, t, hq, d);
            cpu.attention(q, k, v, ref, 0, spec);
            Tensor dq = gpu.toDevice(q);
            Tensor dk = gpu.toDevice(k);
            Tensor dv = gpu.toDevice(v);
            Tensor out = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, t, hq, d);
            Tensor step = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, 1, hq, d);
            try {
                gpu.attention(dq, dk, dv, out, 0, spec);
                float[] full = bits(out);
                CudaTestBase.assertClose("exact attention against the scalar backend", ref.toFloatArray(), full, 2e-6, 2e-5);
                for (int i = 0; i < t; i++) {
                    gpu.attention(dq.slice(0, i, i + 1), dk.slice(0, 0, i + 1), dv.slice(0, 0, i + 1), step, i, spec);
                    int row = hq * d;
                    assertBitwise("exact attention T=" + t + " window=" + win + ": query " + i + " decoded vs in prefill",
                            java.util.Arrays.copyOfRange(full, i * row, (i + 1) * row), bits(step));
                }
            } finally {
                gpu.synchronize();
                for (Tensor x : new Tensor[]{dq, dk, dv, out, step}) {
                    gpu.free(x);
                }
            }
        }
    }
}
