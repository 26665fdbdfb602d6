package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The one-launch mixture-of-experts decode product against the scalar backend, pair by pair, on
 * each expert's own slice of the stacked weight: every format, shared x rows (gate/up) and one row
 * per pair (down), repeated experts. Tolerance as the fused GEMV: |err| ≤ 1e-6 + 1e-5·Σ|x·w|.
 */
class CudaMoeTest extends CudaTestBase {

    @Test
    void everyPairMatchesItsExpert() {
        SplittableRandom r = rng(81);
        int experts = 6;
        int n = 64;
        int k = 160;
        int tokens = 3;
        int topk = 4;
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            QuantizedTensor stacked = CudaQuantTest.random(format, r, experts * n, k); // [E * N, K]
            int[] ids = new int[tokens * topk];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = r.nextInt(experts); // repeats allowed, as routing can give two tokens one expert
            }
            QuantizedTensor dw = gpu.toDevice(stacked);
            try {
                Tensor dIds = dev(Tensor.ofInts(ids, tokens, topk));
                for (boolean perPair : new boolean[]{false, true}) {
                    int xRows = perPair ? tokens * topk : tokens;
                    Tensor x = randn(r, 1f, xRows, k);
                    Tensor y = poisoned(DType.F32, tokens * topk, n);
                    gpu.moe().moeMatmulQuantized(dev(x), dw, experts, dIds, y);
                    float[] got = gpu.toHost(y).toFloatArray();
                    float[] ref = new float[tokens * topk * n];
                    double[] tol = new double[ref.length];
                    float[] wAll = CudaQuantTest.dequantizeRef(stacked);
                    for (int p = 0; p < ids.length; p++) {
                        QuantizedTensor w = CudaMoeOps.expert(stacked, ids[p], n);
                        Tensor xr = x.slice(0, perPair ? p : p / topk, (perPair ? p : p / topk) + 1).contiguous();
                        Tensor yr = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, n);
                        cpu.matmulQuantized(xr, w, yr);
                        System.arraycopy(yr.toFloatArray(), 0, ref, p * n, n);
                        float[] wf = new float[n * k];
                        System.arraycopy(wAll, ids[p] * n * k, wf, 0, n * k);
                        double[] s = absDot(xr.toFloatArray(), wf, 1, n, k);
                        for (int j = 0; j < n; j++) {
                            tol[p * n + j] = 1e-6 + 1e-5 * s[j];
                        }
                    }
                    assertWithin("moeMatmulQuantized " + format + (perPair ? " x per pair" : " x per token"), ref, got, tol);
                }
            } finally {
                gpu.free(dw);
            }
        }
    }

    @Test
    void expertIdOutsideTheLayerIsReported() {
        SplittableRandom r = rng(82);
        QuantizedTensor dw = gpu.toDevice(CudaQuantTest.random("int4-g32", r, 4 * 32, 64));
        try {
            Tensor y = poisoned(DType.F32, 2, 32);
            gpu.moe().moeMatmulQuantized(dev(randn(r, 1f, 1, 64)), dw, 4, dev(Tensor.ofInts(new int[]{1, 4}, 1, 2)), y);
            IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
            assertTrue(e.getMessage().contains("expert id 4"), e.getMessage());
        } finally {
            gpu.free(dw);
        }
    }
}
