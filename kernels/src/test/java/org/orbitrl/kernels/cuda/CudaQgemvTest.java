package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

/**
 * The fused dequantize-GEMV ({@code qgemv.cu}) in dense mode against the scalar backend's
 * {@code matmulQuantized}: every format, f32 and bf16 x, row counts 1..20 (each compile-time chunk,
 * ragged chunks and more rows than one chunk), K from 3 groups (fewer than a warp's k lanes) to 97 (a
 * ragged last step of the unrolled loop), and N not a multiple of the rows a block computes; the dense bf16-weight GEMV behind {@code matmul} up to 16 rows; and
 * {@code matmulAccumulate} (y += x·wᵀ) on both of its paths. Tolerance |err| ≤ 1e-6 + 1e-5·Σ|x·w| (f32 accumulation of
 * exact weight values; the bf16 case multiplies the bf16-rounded x on the reference side too).
 */
class CudaQgemvTest extends CudaTestBase {
    private static final String[] FORMATS = {"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"};

    @Test
    void denseMatchesScalarBackend() {
        SplittableRandom r = rng(71);
        int[][] shapes = {{70, 768}, {96, 2048}, {40, 96}, {8, 512}, {33, 3104}}; // N, K: 24, 64, 3, 16 and 97 groups a row
        int[] rows = {1, 3, 4, 8, 13, 16, 20};
        for (String format : FORMATS) {
            for (int[] s : shapes) {
                int n = s[0];
                int k = s[1];
                QuantizedTensor w = CudaQuantTest.random(format, r, n, k);
                QuantizedTensor dw = gpu.toDevice(w);
                float[] wf = CudaQuantTest.dequantizeRef(w);
                try {
                    for (int m : rows) {
                        for (boolean bf16 : new boolean[]{false, true}) {
                            check(format, w, dw, wf, r, m, n, k, bf16);
                        }
                    }
                } finally {
                    gpu.free(dw);
                }
            }
        }
    }

    @Test
    void denseBf16WeightsMatchScalarBackend() {
        SplittableRandom r = rng(72);
        int[][] shapes = {{70, 2048}, {33, 200}, {256, 64}}; // N, K (K/8 = 256, 25, 8 loads a row)
        for (int[] s : shapes) {
            int n = s[0];
            int k = s[1];
            float[] wf = bf16Round(randn(r, 0.1f, n, k).toFloatArray());
            Tensor w = Tensor.of(wf, n, k).to(DType.BF16);
            Tensor dw = dev(w);
            for (int m : new int[]{1, 2, 5, 8, 11, 16}) {
                float[] xv = randn(r, 1f, m, k).toFloatArray();
                Tensor x = Tensor.of(xv, m, k);
                Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
                cpu.matmul(x, w, ref);
                Tensor y = poisoned(DType.F32, m, n);
                gpu.matmul(dev(x), dw, y);
                double[] a = absDot(xv, wf, m, n, k);
                double[] tol = new double[a.length];
                for (int i = 0; i < a.length; i++) {
                    tol[i] = 1e-6 + 1e-5 * a[i];
                }
                assertWithin("matmul bf16 w M=" + m + " N=" + n + " K=" + k, ref.toFloatArray(), gpu.toHost(y).toFloatArray(), tol);
            }
        }
    }

    @Test
    void accumulatingProductAddsIntoY() {
        SplittableRandom r = rng(73);
        int n = 90;
        int k = 256;
        float[] wf = bf16Round(randn(r, 0.1f, n, k).toFloatArray());
        Tensor w = Tensor.of(wf, n, k).to(DType.BF16);
        Tensor dw = dev(w);
        for (int m : new int[]{1, 7, 16, 40}) {
            float[] xv = randn(r, 1f, m, k).toFloatArray();
            float[] y0 = randn(r, 3f, m, n).toFloatArray();
            Tensor prod = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
            cpu.matmul(Tensor.of(xv, m, k), w, prod);
            float[] ref = prod.toFloatArray();
            for (int i = 0; i < ref.length; i++) {
                ref[i] += y0[i];
            }
            Tensor y = dev(Tensor.of(y0, m, n));
            gpu.matmulAccumulate(dev(Tensor.of(xv, m, k)), dw, y);
            double[] a = absDot(xv, wf, m, n, k);
            double rel = m <= CudaMatmulOps.QGEMV_MAX_ROWS ? 1e-5 : 1.0 / 256; // beyond 16 rows x is rounded to bf16
            double[] tol = new double[a.length];
            for (int i = 0; i < a.length; i++) {
                tol[i] = 1e-6 + 1e-6 * Math.abs(ref[i]) + rel * a[i];
            }
            assertWithin("matmulAccumulate M=" + m, ref, gpu.toHost(y).toFloatArray(), tol);
        }
    }

    private void check(String format, QuantizedTensor w, QuantizedTensor dw, float[] wf, SplittableRandom r, int m, int n, int k,
                       boolean bf16) {
        float[] xv = randn(r, 1f, m, k).toFloatArray();
        if (bf16) {
            xv = bf16Round(xv);
        }
        Tensor x = Tensor.of(xv, m, k);
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
        cpu.matmulQuantized(x, w, ref);
        Tensor dx = dev(bf16 ? x.to(DType.BF16) : x);
        Tensor y = poisoned(DType.F32, m, n);
        gpu.gemvQuantized(dx, dw, y);
        double[] s = absDot(xv, wf, m, n, k);
        double[] tol = new double[s.length];
        for (int i = 0; i < s.length; i++) {
            tol[i] = 1e-6 + 1e-5 * s[i];
        }
        String what = format + " M=" + m + " N=" + n + " K=" + k + (bf16 ? " bf16 x" : " f32 x");
        assertWithin("gemvQuantized " + what, ref.toFloatArray(), gpu.toHost(y).toFloatArray(), tol);
        if (!bf16 && m <= CudaMatmulOps.QGEMV_MAX_ROWS) { // the Backend entry point takes the same kernel up to 16 rows
            Tensor y2 = poisoned(DType.F32, m, n);
            gpu.matmulQuantized(dx, dw, y2);
            assertWithin("matmulQuantized " + what, ref.toFloatArray(), gpu.toHost(y2).toFloatArray(), tol);
        }
    }
}
