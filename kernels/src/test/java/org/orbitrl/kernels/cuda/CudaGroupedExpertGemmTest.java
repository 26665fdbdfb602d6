package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MoeHostOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * The grouped expert products of the CUDA backend ({@link CudaExpertGemm}: one cuBLAS grouped call a
 * chunk, one dequantization launch a chunk and format) against the host operations
 * ({@link MoeHostOps#expertMatmul}, {@link MoeHostOps#expertWeightGrad}) on the scalar backend, for
 * seeded random weights in every form (int4-g32 symmetric and asymmetric, mxfp4, nvfp4, bf16, f32, and
 * four of them mixed in one layer),
 * forward and transposed, chunk 0, 1, 3 and all, over three groupings: ragged (two experts without rows,
 * two with a single row), one expert holding every row, and experts of whole multiples of 8 rows beside
 * ragged ones. The bf16 products run as batched tiles of {@link CudaExpertGemm#TILE_ROWS} rows (every
 * expert here a single partial tile), again with 8-row tiles (full tiles, partial tiles through the pad,
 * experts of whole tiles) and through cuBLAS's grouped call ({@code orbit.cuda.expertTile=0}). The
 * accumulating form (y₀ + s·product, chunks 1 and 3) against the host's product and axpy, within
 * |s|·(the product's tolerance) + 1e-6·|y₀|. Tolerances, per output, against
 * Σ|x·w| (the scale of a dot product's rounding error): bf16 products (quantized and bf16 experts;
 * inputs and weights rounded to bf16, 2⁻⁹ each, the output possibly rounded to bf16, f32 accumulation)
 * within 1e-5 + 8e-3·Σ|x·w|; f32 products (f32 experts, f32 throughout) within 1e-6 + 3e-5·Σ|x·w|.
 * The weight gradients (f32, accumulated onto random values) within 1e-6 + 3e-5·(|g₀| + |s|·Σ|dy·x|).
 * The f32 experts and the weight gradients (48 × 96: a narrow side) run through the narrow-side
 * kernels ({@link CudaNarrowExperts}) by default and through the grouped f32 cuBLAS product with
 * {@code orbit.cuda.narrowExperts=off}; both are checked.
 */
class CudaGroupedExpertGemmTest extends CudaTestBase {
    private static final String TILE_PROPERTY = "orbit.cuda.expertTile";
    private static final float ACC_SCALE = -0.75f;
    private static final int E = 7;
    private static final int N = 48;
    private static final int K = 96;
    private static final String[] FORMS = {"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4", "bf16", "f32", "mixed"};

    @Test
    void groupedProductsMatchTheHostForEveryFormChunkAndGrouping() {
        products(rng(701));
    }

    /** The f32 experts through the grouped cuBLAS product instead of the narrow-side kernels ({@link CudaNarrowExperts}). */
    @Test
    void productsInEightRowTilesAndThroughTheGroupedCall() {
        for (String tile : new String[]{"8", "0"}) {
            System.setProperty(TILE_PROPERTY, tile);
            try {
                products(new SplittableRandom(31 + tile.length()));
            } finally {
                System.clearProperty(TILE_PROPERTY);
            }
        }
    }

    @Test
    void groupedProductsWithTheNarrowKernelsOff() {
        withNarrowOff(() -> products(rng(703)));
    }

    @Test
    void groupedWeightGradientsWithTheNarrowKernelsOff() {
        withNarrowOff(() -> weightGradients(rng(704)));
    }

    private static void withNarrowOff(Runnable body) {
        String before = System.getProperty(CudaMoeTrain.NARROW_PROPERTY);
        System.setProperty(CudaMoeTrain.NARROW_PROPERTY, "off");
        try {
            body.run();
        } finally {
            if (before == null) {
                System.clearProperty(CudaMoeTrain.NARROW_PROPERTY);
            } else {
                System.setProperty(CudaMoeTrain.NARROW_PROPERTY, before);
            }
        }
    }

    private void products(SplittableRandom r) {
        for (int[] offsets : groupings(r)) {
            for (String form : FORMS) {
                Weights w = Weights.random(this, r, form);
                try {
                    for (boolean transposed : new boolean[]{false, true}) {
                        int inCols = transposed ? N : K;
                        int outCols = transposed ? K : N;
                        int p = offsets[E];
                        Tensor in = randn(r, 1f, p, inCols);
                        Tensor ref = host(DType.F32, p, outCols);
                        MoeHostOps.expertMatmul(cpu, in, w.host, offsets, ref, 1, transposed);
                        double[] tol = tolerance(in.toFloatArray(), w, offsets, transposed);
                        Tensor din = dev(in);
                        for (int chunk : new int[]{0, 1, 3, E}) {
                            Tensor got = poisoned(DType.F32, p, outCols);
                            if (transposed) {
                                gpu.moeExpertMatmulTransposed(din, w.device, offsets, got, chunk);
                            } else {
                                gpu.moeExpertMatmul(din, w.device, offsets, got, chunk);
                            }
                            assertWithin((transposed ? "moeExpertMatmulTransposed " : "moeExpertMatmul ") + form + " chunk " + chunk
                                    + " rows " + Arrays.toString(offsets), ref.toFloatArray(), gpu.toHost(got).toFloatArray(), tol);
                        }
                        // accumulating: y0 + s · product (batched tiles with β = 1 for bf16 and quantized experts)
                        Tensor y0 = randn(r, 1f, p, outCols);
                        Tensor acc = Tensor.of(y0.toFloatArray(), p, outCols);
                        MoeHostOps.expertMatmulAccumulate(cpu, in, w.host, offsets, ACC_SCALE, acc, transposed, 1);
                        float[] start = y0.toFloatArray();
                        double[] accTol = new double[tol.length];
                        for (int i = 0; i < tol.length; i++) {
                            accTol[i] = Math.abs(ACC_SCALE) * tol[i] + 1e-6 * Math.abs(start[i]);
                        }
                        for (int chunk : new int[]{1, 3}) {
                            Tensor got = dev(y0);
                            gpu.moeExpertMatmulAccumulate(din, w.device, offsets, ACC_SCALE, got, transposed, chunk);
                            assertWithin("moeExpertMatmulAccumulate " + form + (transposed ? " transposed" : "") + " chunk " + chunk
                                    + " rows " + Arrays.toString(offsets), acc.toFloatArray(), gpu.toHost(got).toFloatArray(), accTol);
                        }
                    }
                } finally {
                    gpu.synchronize();
                    w.free();
                }
            }
        }
        Boolean f32Out = gpu.moe().groupedBf16InF32Out();
        System.out.println("grouped bf16 expert products: " + (f32Out == null ? "batched tiles only (the grouped call not taken)"
                : f32Out ? "cuBLAS's grouped call writes f32 from bf16 inputs" : "bf16 rows widened in place (cuBLAS refused bf16 -> f32)"));
    }

    /**
     * {@code moeExpertMatmulShared}: two expert sets of every form over the same rows (as an MoE block's gate and up; the
     * rows rounded to bf16 once for both where the batched tiles take them, the f32 sets' narrow-side products in one
     * launch, anything else a call a set), chunks 1, 3 and all, every grouping: each output the same bits as its own
     * {@code moeExpertMatmul}.
     */
    @Test
    void sharedProductsEqualACallASetBitForBit() {
        SplittableRandom r = rng(705);
        for (int[] offsets : groupings(r)) {
            for (String form : FORMS) {
                Weights w1 = Weights.random(this, r, form);
                Weights w2 = Weights.random(this, r, form);
                try {
                    int p = offsets[E];
                    Tensor din = dev(randn(r, 1f, p, K));
                    for (int chunk : new int[]{1, 3, E}) {
                        Tensor[] shared = {poisoned(DType.F32, p, N), poisoned(DType.F32, p, N)};
                        gpu.moeExpertMatmulShared(din, new ExpertWeights[]{w1.device, w2.device}, offsets, shared, chunk);
                        Tensor[] each = {poisoned(DType.F32, p, N), poisoned(DType.F32, p, N)};
                        gpu.moeExpertMatmul(din, w1.device, offsets, each[0], chunk);
                        gpu.moeExpertMatmul(din, w2.device, offsets, each[1], chunk);
                        for (int i = 0; i < 2; i++) {
                            assertBitsEqual("moeExpertMatmulShared " + form + " set " + i + " chunk " + chunk + " rows " + Arrays.toString(offsets),
                                    gpu.toHost(each[i]).toFloatArray(), gpu.toHost(shared[i]).toFloatArray());
                        }
                    }
                } finally {
                    gpu.synchronize();
                    w1.free();
                    w2.free();
                }
            }
        }
    }

    @Test
    void groupedWeightGradientsMatchTheHost() {
        weightGradients(rng(702));
    }

    private void weightGradients(SplittableRandom r) {
        float scale = 0.75f;
        for (int[] offsets : groupings(r)) {
            int p = offsets[E];
            Tensor dy = randn(r, 1f, p, N);
            Tensor x = randn(r, 1f, p, K);
            Tensor[] refGrads = new Tensor[E];
            Tensor[] devGrads = new Tensor[E];
            float[][] start = new float[E][];
            for (int e = 0; e < E; e++) {
                if (offsets[e + 1] > offsets[e]) {   // experts without rows get no gradient (null is allowed there)
                    refGrads[e] = randn(r, 1f, N, K);
                    start[e] = refGrads[e].toFloatArray();
                    devGrads[e] = dev(refGrads[e]);
                }
            }
            MoeHostOps.expertWeightGrad(cpu, dy, x, offsets, scale, refGrads);
            gpu.moeExpertWeightGrad(dev(dy), dev(x), offsets, scale, devGrads);
            float[] dyv = dy.toFloatArray();
            float[] xv = x.toFloatArray();
            for (int e = 0; e < E; e++) {
                if (devGrads[e] == null) {
                    continue;
                }
                double[] tol = new double[N * K];
                for (int i = 0; i < N; i++) {
                    for (int j = 0; j < K; j++) {
                        double s = 0;
                        for (int row = offsets[e]; row < offsets[e + 1]; row++) {
                            s += Math.abs((double) dyv[row * N + i] * xv[row * K + j]);
                        }
                        tol[i * K + j] = 1e-6 + 3e-5 * (Math.abs(start[e][i * K + j]) + Math.abs(scale) * s);
                    }
                }
                assertWithin("moeExpertWeightGrad expert " + e + " (" + (offsets[e + 1] - offsets[e]) + " rows)",
                        refGrads[e].toFloatArray(), gpu.toHost(devGrads[e]).toFloatArray(), tol);
            }
        }
    }

    private static Tensor host(DType dtype, long... shape) {
        return Tensor.allocate(Arena.ofAuto(), dtype, shape);
    }

    /**
     * Row offsets [E + 1]: ragged (experts 0 and 4 empty, 2 and 6 one row each), all rows on expert 3, and
     * experts of 8, 16 and 24 rows beside ragged and empty ones.
     */
    private static List<int[]> groupings(SplittableRandom r) {
        int[] counts = new int[E];
        for (int e = 0; e < E; e++) {
            counts[e] = e == 0 || e == 4 ? 0 : e == 2 || e == 6 ? 1 : 2 + r.nextInt(12);
        }
        int[] one = new int[E];
        one[3] = 23;
        int[] whole = {8, 0, 16, 3 + r.nextInt(5), 9, 0, 24};
        List<int[]> out = new ArrayList<>();
        for (int[] c : new int[][]{counts, one, whole}) {
            int[] off = new int[E + 1];
            for (int e = 0; e < E; e++) {
                off[e + 1] = off[e] + c[e];
            }
            out.add(off);
        }
        return out;
    }

    /** 1e-5 + 8e-3·Σ|x·w| for bf16 products, 1e-6 + 3e-5·Σ|x·w| for f32 experts, per output. */
    private static double[] tolerance(float[] in, Weights w, int[] offsets, boolean transposed) {
        int inCols = transposed ? N : K;
        int outCols = transposed ? K : N;
        int p = offsets[E];
        double[] tol = new double[p * outCols];
        for (int e = 0; e < E; e++) {
            boolean f32 = w.device.dense(e) != null && w.device.dense(e).dtype() == DType.F32;
            double atol = f32 ? 1e-6 : 1e-5;
            double rtol = f32 ? 3e-5 : 8e-3;
            for (int i = offsets[e]; i < offsets[e + 1]; i++) {
                for (int o = 0; o < outCols; o++) {
                    double s = 0;
                    for (int c = 0; c < inCols; c++) {
                        float wv = transposed ? w.values[e][c * K + o] : w.values[e][o * K + c];
                        s += Math.abs((double) in[i * inCols + c] * wv);
                    }
                    tol[i * outCols + o] = atol + rtol * s;
                }
            }
        }
        return tol;
    }

    /** One layer's experts [N, K] on the host (the reference's view) and on the device, with their f32 values. */
    private record Weights(ExpertWeights host, ExpertWeights device, float[][] values, List<QuantizedTensor> owned) {
        static Weights random(CudaGroupedExpertGemmTest t, SplittableRandom r, String form) {
            Tensor[] hostDense = new Tensor[E];
            QuantizedTensor[] hostQ = new QuantizedTensor[E];
            Tensor[] devDense = new Tensor[E];
            QuantizedTensor[] devQ = new QuantizedTensor[E];
            float[][] values = new float[E][];
            List<QuantizedTensor> owned = new ArrayList<>();
            // mixed: experts 1 (int4-g32), 2 and 6 (mxfp4), 3 (f32) and 5 (bf16) have rows in the ragged grouping
            String[] mixed = {"bf16", "int4-g32", "mxfp4", "f32", "int4-g32", "bf16", "mxfp4"};
            for (int e = 0; e < E; e++) {
                String f = form.equals("mixed") ? mixed[e] : form;
                if (!f.equals("bf16") && !f.equals("f32")) {
                    hostQ[e] = CudaQuantTest.random(f, r, N, K);
                    values[e] = CudaQuantTest.dequantizeRef(hostQ[e]);
                    devQ[e] = gpu.toDevice(hostQ[e]);
                    owned.add(devQ[e]);
                } else {
                    Tensor w = randn(r, 0.1f, N, K);
                    if (f.equals("bf16")) {
                        Tensor b = w.to(DType.BF16);
                        hostDense[e] = b.to(DType.F32);   // the values the device multiplies
                        devDense[e] = t.dev(b);
                    } else {
                        hostDense[e] = w;
                        devDense[e] = t.dev(w);
                    }
                    values[e] = hostDense[e].toFloatArray();
                }
            }
            return new Weights(new ExpertWeights(N, K, hostDense, hostQ), new ExpertWeights(N, K, devDense, devQ), values, owned);
        }

        void free() {
            owned.forEach(gpu::free);
        }
    }
}
