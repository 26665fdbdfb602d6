package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Quantized weights (INT4 g32 symmetric and asymmetric, MXFP4, NVFP4; made by each format's own
 * quantizer from seeded random weights) on the device against the formats' row decoders and the
 * scalar backend, including the Qwen3-30B-A3B expert shapes and row counts that are not multiples
 * of 8 (the asymmetric zero points are packed 8 rows to a word).
 * <ul>
 *   <li>dequantize to f32: bitwise equal (every value is exact in f32); to bf16: bitwise equal to
 *       the f32 value rounded to nearest even.</li>
 *   <li>matmulQuantized, ≤ 8 rows (fused dequant-GEMV, f32 arithmetic): |err| ≤ 1e-6 + 1e-5·Σ|x·w|
 *       against the scalar backend.</li>
 *   <li>matmulQuantized, > 8 rows (dequantize to bf16 + cuBLAS bf16): against the scalar matmul of x
 *       and w both rounded to bf16, |err| ≤ 1e-6 + 1e-5·Σ|x·w|.</li>
 * </ul>
 */
class CudaQuantTest extends CudaTestBase {
    private static final int[][] NK = {{1, 32}, {7, 64}, {33, 160}, {768, 2048}, {2048, 768}};
    private static final String[] FORMATS = {"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"};

    /** A [n, k] matrix in {@code format}, quantized from uniform random weights. */
    static QuantizedTensor random(String format, SplittableRandom r, int n, int k) {
        QuantFormat f = QuantFormats.byName(format);
        return f.quantize(randn(r, 0.1f, n, k));
    }

    /** The whole matrix through the format's own decoder, row-major [n * k]. */
    static float[] dequantizeRef(QuantizedTensor w) {
        int n = Math.toIntExact(w.rows());
        int k = Math.toIntExact(w.cols());
        float[] out = new float[n * k];
        float[] row = new float[k];
        for (int i = 0; i < n; i++) {
            w.format().dequantizeRow(w, i, row);
            System.arraycopy(row, 0, out, i * k, k);
        }
        return out;
    }

    @Test
    void dequantizeIsExact() {
        SplittableRandom r = rng(41);
        for (String kind : FORMATS) {
            for (int[] nk : NK) {
                QuantizedTensor w = random(kind, r, nk[0], nk[1]);
                float[] ref = dequantizeRef(w);
                QuantizedTensor dw = gpu.toDevice(w);
                try {
                    Tensor f = poisoned(DType.F32, nk[0], nk[1]);
                    gpu.dequantize(dw, f);
                    assertClose("dequantize " + w + " to f32", ref, gpu.toHost(f).toFloatArray(), 0, 0);
                    Tensor b = poisoned(DType.BF16, nk[0], nk[1]);
                    gpu.dequantize(dw, b);
                    assertClose("dequantize " + w + " to bf16", bf16Round(ref), gpu.toHost(b).toFloatArray(), 0, 0);
                } finally {
                    gpu.free(dw);
                }
            }
        }
    }

    @Test
    void fusedGemvForFewRows() {
        SplittableRandom r = rng(42);
        for (String kind : FORMATS) {
            for (int[] nk : NK) {
                for (int m : new int[]{1, 3, 8}) {
                    checkMatmul(r, kind, m, nk[0], nk[1]);
                }
            }
        }
    }

    @Test
    void dequantizeThenCublasForManyRows() {
        SplittableRandom r = rng(43);
        for (String kind : FORMATS) {
            for (int[] nk : new int[][]{{7, 64}, {33, 160}, {768, 2048}}) {
                for (int m : new int[]{9, 40}) {
                    checkMatmul(r, kind, m, nk[0], nk[1]);
                }
            }
        }
    }

    private void checkMatmul(SplittableRandom r, String kind, int m, int n, int k) {
        QuantizedTensor w = random(kind, r, n, k);
        Tensor x = randn(r, 1f, m, k);
        boolean gemv = m <= CudaMatmulOps.gemvRows();
        float[] wf = dequantizeRef(w);
        float[] xf = x.toFloatArray();
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
        if (gemv) {
            cpu.matmulQuantized(x, w, ref);
        } else {
            wf = bf16Round(wf);
            xf = bf16Round(xf);
            cpu.matmul(Tensor.of(xf, m, k), Tensor.of(wf, n, k), ref);
        }
        QuantizedTensor dw = gpu.toDevice(w);
        try {
            Tensor y = poisoned(DType.F32, m, n);
            gpu.matmulQuantized(dev(x), dw, y);
            double[] s = absDot(xf, wf, m, n, k);
            double[] tol = new double[s.length];
            for (int i = 0; i < s.length; i++) {
                tol[i] = 1e-6 + 1e-5 * s[i];
            }
            assertWithin("matmulQuantized " + w + " m=" + m + (gemv ? " (fused GEMV)" : " (dequant + cuBLAS)"),
                    ref.toFloatArray(), gpu.toHost(y).toFloatArray(), tol);
        } finally {
            gpu.free(dw);
        }
    }

    /**
     * FP8 block weights run through dequantization ({@link CudaFp8BlockTest}); the fused dequantize-GEMV has no FP8 form
     * and refuses one naming the format.
     */
    @Test
    void theFusedGemvRefusesFp8BlockFormatsClearly() {
        QuantizedTensor w = QuantFormats.byName("fp8-block128").quantize(randn(rng(45), 1f, 128, 128));
        QuantizedTensor dw = gpu.toDevice(w);
        try {
            Tensor x = dev(randn(rng(46), 1f, 2, 128));
            UnsupportedOperationException e = org.junit.jupiter.api.Assertions.assertThrows(UnsupportedOperationException.class,
                    () -> gpu.gemvQuantized(x, dw, poisoned(DType.F32, 2, 128)));
            org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("fp8-block128"), e.getMessage());
        } finally {
            gpu.free(dw);
        }
    }

    @Test
    void dequantBufferIsReusedNotRegrown() {
        SplittableRandom r = rng(44);
        QuantizedTensor dw = gpu.toDevice(random("int4-g32", r, 256, 512));
        try {
            Tensor x = dev(randn(r, 1f, 32, 512));
            Tensor y = poisoned(DType.F32, 32, 256);
            gpu.matmulQuantized(x, dw, y);
            long live = gpu.allocator().liveBytes();
            long dequant = gpu.allocator().liveBytes(MemoryCategory.DEQUANT_BUFFERS);
            for (int i = 0; i < 5; i++) {
                gpu.matmulQuantized(x, dw, y);
            }
            gpu.synchronize();
            assertEquals(live, gpu.allocator().liveBytes(), "repeated matmulQuantized must not allocate");
            assertEquals(true, dequant >= 256L * 512 * 2, "the bf16 dequant buffer is accounted as DEQUANT_BUFFERS: " + dequant);
        } finally {
            gpu.free(dw);
        }
    }
}
