package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The per-pair decode experts ({@link CudaBackend#moeExpertMatmulPairs}, {@link CudaBackend#moeCombinePairs}) against
 * references computed here in double from the inputs: every expert a matrix of its own (quantized ones through the
 * format classes' own decoders; bf16 and f32 ones as stored), each pair's expert read from ids on the device; a call of
 * more than 64 pairs groups them by expert on the device first. The launches with LoRA terms are {@link
 * CudaMoePairsLoraTest}'s.
 *
 * <p>Tolerance of a product {@code Σ x_k·w_k} of exact weights in f32 arithmetic: {@code 1e-6 + 2e-5·Σ|x_k·w_k|} (f32
 * accumulation over K ≤ 2048; the tensor-core LoRA A's three TF32 products leave about {@code 2^-20} of each product's
 * magnitude on top); a scaled product added into y adds {@code 1e-6·|y|}. The combine: {@code 1e-6 +
 * 1e-6·Σ_j |w_j·ys_j|}.
 */
class CudaMoePairsTest extends CudaTestBase {
    private static final String[] FORMATS = {"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4", "bf16", "f32"};

    @Test
    void pairProductsMatchTheReferenceForEveryForm() {
        SplittableRandom r = rng(901);
        int experts = 12;
        for (String format : FORMATS) {
            boolean quantized = !format.equals("bf16") && !format.equals("f32");
            // {tokens, topk, N, K, x per pair}; K = 40 (not a multiple of 8) takes the dense kernel's scalar loop
            // 20 x 8 = 160 pairs (above CudaMoePairs.DIRECT_PAIRS): grouped by expert on the device first, an expert's
            // pairs 8 at a time (7 at K = 8192, what shared memory holds); a row a warp at N ≤ 64 (a LoRA's A), a thread a
            // row at K ≤ 64 (a LoRA's B: K = 32 in 16-byte loads, K = 20 one value at a time); per pair, f32 rows at N ≤ 64
            // a row a warp (moe_pairs_dense_r1: a lane's 8-unit batches whole, partial, and several at K = 8192). Grouped f32
            // rows at N <= 64 and K a multiple of 16 (a LoRA's A) take the tensor cores (moe_routed_tc_a): 32 rows a block
            // (N = 48: a partial second slice, 64: two whole), 16 pairs at a time (about 27 and 20 pairs an expert: two
            // rounds); K = 72 keeps the CUDA cores' moe_routed_dense_a
            int[][] cases = quantized ? new int[][]{{1, 8, 96, 2048, 0}, {3, 4, 40, 256, 1}, {20, 8, 96, 256, 0}, {30, 4, 40, 128, 1}}
                    : new int[][]{{1, 8, 96, 2048, 0}, {3, 4, 40, 256, 1}, {2, 3, 33, 40, 0}, {20, 8, 96, 256, 0}, {30, 4, 33, 40, 1},
                    {24, 8, 32, 2048, 1}, {20, 8, 16, 8192, 0}, {18, 4, 200, 32, 1}, {17, 4, 70, 20, 0}, {1, 8, 32, 2048, 0},
                    {8, 8, 32, 768, 0}, {2, 4, 24, 8192, 1}, {40, 8, 48, 768, 1}, {30, 8, 64, 2048, 0}, {20, 8, 24, 72, 0}};
            for (int[] c : cases) {
                int tokens = c[0];
                int topk = c[1];
                int n = c[2];
                int k = c[3];
                boolean perPair = c[4] == 1;
                String what = "pairs " + format + " tokens " + tokens + " topk " + topk + " [" + n + ", " + k + "]"
                        + (perPair ? ", x per pair" : "");
                int pairs = tokens * topk;
                Tensor[] dense = new Tensor[experts];
                QuantizedTensor[] quant = new QuantizedTensor[experts];
                float[][] ref = new float[experts][];
                for (int e = 0; e < experts; e++) {
                    if (quantized) {
                        QuantizedTensor q = CudaQuantTest.random(format, r, n, k);
                        ref[e] = CudaQuantTest.dequantizeRef(q);
                        quant[e] = gpu.toDevice(q);
                    } else {
                        float[] w = randn(r, 0.1f, n, k).toFloatArray();
                        if (format.equals("bf16")) {
                            w = bf16Round(w);
                        }
                        ref[e] = w;
                        dense[e] = dev(Tensor.of(w, n, k).to(format.equals("bf16") ? DType.BF16 : DType.F32));
                    }
                }
                ExpertWeights ew = new ExpertWeights(n, k, dense, quant);
                try {
                    int xRows = perPair ? pairs : tokens;
                    int xDiv = perPair ? 1 : topk;
                    float[] x = randn(r, 1f, xRows, k).toFloatArray();
                    int[] ids = CudaFusedDecodeTest.routes(r, tokens, topk, experts);
                    Tensor dx = dev(Tensor.of(x, xRows, k));
                    Tensor dIds = dev(Tensor.ofInts(ids, tokens, topk));
                    Tensor y = poisoned(DType.F32, pairs, n);
                    gpu.moeExpertMatmulPairs(dx, xDiv, ew, dIds, 1f, y, false);
                    float[] got = gpu.toHost(y).toFloatArray();
                    float[] want = new float[pairs * n];
                    double[] tol = new double[want.length];
                    double[][] dots = new double[pairs * n][];
                    for (int p = 0; p < pairs; p++) {
                        for (int o = 0; o < n; o++) {
                            double s = 0;
                            double abs = 0;
                            for (int i = 0; i < k; i++) {
                                double v = (double) x[(p / xDiv) * k + i] * ref[ids[p]][o * k + i];
                                s += v;
                                abs += Math.abs(v);
                            }
                            want[p * n + o] = (float) s;
                            tol[p * n + o] = 1e-6 + 2e-5 * abs;
                            dots[p * n + o] = new double[]{s, abs};
                        }
                    }
                    assertWithin(what, want, got, tol);

                    // scaled and added into y (quantized experts: a temporary and an axpy)
                    float[] y0 = randn(r, 1f, pairs, n).toFloatArray();
                    Tensor acc = dev(Tensor.of(y0, pairs, n));
                    gpu.moeExpertMatmulPairs(dx, xDiv, ew, dIds, 0.5f, acc, true);
                    float[] got2 = gpu.toHost(acc).toFloatArray();
                    float[] want2 = new float[want.length];
                    double[] tol2 = new double[want.length];
                    for (int i = 0; i < want2.length; i++) {
                        want2[i] = (float) (y0[i] + 0.5 * dots[i][0]);
                        tol2[i] = 1e-6 + 1e-6 * Math.abs(y0[i]) + 0.5 * 2e-5 * dots[i][1];
                    }
                    assertWithin(what + ", y += 0.5 · product", want2, got2, tol2);
                } finally {
                    for (QuantizedTensor q : quant) {
                        if (q != null) {
                            gpu.free(q);
                        }
                    }
                }
            }
        }
    }

    /** 128 INT4 experts (Qwen3-MoE's count) at 128 and 512 pairs: the grouped launches of 4 and 8 rows a weight load. */
    @Test
    void groupedOnTheDeviceAtAModelsExpertCount() {
        SplittableRandom r = rng(905);
        int experts = 128;
        int n = 32;
        int k = 64;
        QuantizedTensor[] quant = new QuantizedTensor[experts];
        float[][] ref = new float[experts][];
        for (int e = 0; e < experts; e++) {
            QuantizedTensor q = CudaQuantTest.random("int4-g32", r, n, k);
            ref[e] = CudaQuantTest.dequantizeRef(q);
            quant[e] = gpu.toDevice(q);
        }
        ExpertWeights ew = new ExpertWeights(n, k, new Tensor[experts], quant);
        try {
            for (int tokens : new int[]{16, 64}) {   // x 8 = 128 pairs (2 a block row) and 512 (8 a block row)
                int pairs = tokens * 8;
                float[] x = randn(r, 1f, tokens, k).toFloatArray();
                int[] ids = CudaFusedDecodeTest.routes(r, tokens, 8, experts);
                Tensor y = poisoned(DType.F32, pairs, n);
                gpu.moeExpertMatmulPairs(dev(Tensor.of(x, tokens, k)), 8, ew, dev(Tensor.ofInts(ids, tokens, 8)), 1f, y, false);
                float[] want = new float[pairs * n];
                double[] tol = new double[want.length];
                for (int p = 0; p < pairs; p++) {
                    for (int o = 0; o < n; o++) {
                        double s = 0;
                        double abs = 0;
                        for (int i = 0; i < k; i++) {
                            double v = (double) x[(p / 8) * k + i] * ref[ids[p]][o * k + i];
                            s += v;
                            abs += Math.abs(v);
                        }
                        want[p * n + o] = (float) s;
                        tol[p * n + o] = 1e-6 + 2e-5 * abs;
                    }
                }
                assertWithin("128 experts, " + pairs + " pairs grouped on the device", want, gpu.toHost(y).toFloatArray(), tol);
            }
        } finally {
            for (QuantizedTensor q : quant) {
                gpu.free(q);
            }
        }
    }

    /**
     * INT4 and MXFP4 experts back to back (each a view of one stacked matrix, as {@code Placement.experts} places a model's): from
     * {@link CudaMoePairs#STACKED_PAIRS} pairs on they take the tensor-core grouped kernel over the stack, which rounds x
     * to bf16 (the reference rounds it the same way; |err| ≤ 1e-6 + 1e-5·Σ|x·w|) and needs no address table; below, the
     * pair kernels (x exact, the first test's bound) with their table.
     */
    @Test
    void expertsBackToBackTakeTheTensorCoreKernelOverTheirStack() {
        SplittableRandom r = rng(907);
        int experts = 16;
        int n = 96;
        int k = 256;
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4"}) {
            QuantizedTensor host = CudaQuantTest.random(format, r, experts * n, k);
            float[] wf = CudaQuantTest.dequantizeRef(host);
            QuantizedTensor dw = gpu.toDevice(host);
            try {
                QuantizedTensor[] quant = new QuantizedTensor[experts];
                for (int e = 0; e < experts; e++) {
                    quant[e] = CudaMoeOps.expert(dw, e, n);
                }
                ExpertWeights ew = new ExpertWeights(n, k, new Tensor[experts], quant);
                assertTrue(ew.stacked() != null, format + ": views of one matrix read as a stack");
                int tables = gpu.moePairTables();
                // {tokens, topk, x per pair}: the stacked cases first (no table), then one below the bound
                for (int[] c : new int[][]{{16, 8, 0}, {20, 4, 1}, {64, 8, 1}, {3, 4, 0}, {1, 8, 1}}) {
                    int tokens = c[0];
                    int topk = c[1];
                    boolean perPair = c[2] == 1;
                    int pairs = tokens * topk;
                    boolean stacked = pairs >= CudaMoePairs.STACKED_PAIRS;
                    int xRows = perPair ? pairs : tokens;
                    int xDiv = perPair ? 1 : topk;
                    float[] x = randn(r, 1f, xRows, k).toFloatArray();
                    float[] xr = stacked ? bf16Round(x) : x;
                    int[] ids = CudaFusedDecodeTest.routes(r, tokens, topk, experts);
                    Tensor y = poisoned(DType.F32, pairs, n);
                    gpu.moeExpertMatmulPairs(dev(Tensor.of(x, xRows, k)), xDiv, ew, dev(Tensor.ofInts(ids, tokens, topk)), 1f, y, false);
                    float[] want = new float[pairs * n];
                    double[] tol = new double[want.length];
                    for (int p = 0; p < pairs; p++) {
                        for (int o = 0; o < n; o++) {
                            double s = 0;
                            double abs = 0;
                            for (int i = 0; i < k; i++) {
                                double v = (double) xr[(p / xDiv) * k + i] * wf[(ids[p] * n + o) * k + i];
                                s += v;
                                abs += Math.abs(v);
                            }
                            want[p * n + o] = (float) s;
                            tol[p * n + o] = 1e-6 + (stacked ? 1e-5 : 2e-5) * abs;
                        }
                    }
                    String what = format + " back to back, " + pairs + " pairs" + (perPair ? ", x per pair" : "")
                            + (stacked ? " (tensor cores over the stack)" : " (pair kernels)");
                    assertWithin(what, want, gpu.toHost(y).toFloatArray(), tol);
                    assertEquals(tables + (stacked ? 0 : 1), gpu.moePairTables(), what + ": address tables held");
                }
            } finally {
                gpu.free(dw);
            }
        }
    }

    /**
     * Calls with the same ids tensor group their pairs once (a layer's products); another ids tensor groups again, and
     * so does the first one after it. Every product against the reference (the first test's bound).
     */
    @Test
    void pairsAreGroupedOnceForTheSameIdsAndAgainForOthers() {
        SplittableRandom r = rng(909);
        int experts = 12;
        int tokens = 20;
        int topk = 8;
        int n = 48;
        int k = 256;
        int pairs = tokens * topk;   // above CudaMoePairs.DIRECT_PAIRS
        Tensor[] first = new Tensor[experts];
        Tensor[] second = new Tensor[experts];
        float[][] w1 = new float[experts][];
        float[][] w2 = new float[experts][];
        for (int e = 0; e < experts; e++) {
            w1[e] = randn(r, 0.1f, n, k).toFloatArray();
            w2[e] = randn(r, 0.1f, n, k).toFloatArray();
            first[e] = dev(Tensor.of(w1[e], n, k));
            second[e] = dev(Tensor.of(w2[e], n, k));
        }
        ExpertWeights a = new ExpertWeights(n, k, first, new QuantizedTensor[experts]);
        ExpertWeights b = new ExpertWeights(n, k, second, new QuantizedTensor[experts]);
        float[] x = randn(r, 1f, tokens, k).toFloatArray();
        Tensor dx = dev(Tensor.of(x, tokens, k));
        int[] ids1 = CudaFusedDecodeTest.routes(r, tokens, topk, experts);
        int[] ids2 = CudaFusedDecodeTest.routes(r, tokens, topk, experts);
        Tensor d1 = dev(Tensor.ofInts(ids1, tokens, topk));
        Tensor d2 = dev(Tensor.ofInts(ids2, tokens, topk));
        int before = gpu.moePairRoutes();
        // {ids, weights, routes launched by then}: the second set on the same ids reuses the grouping
        Object[][] calls = {{d1, ids1, a, w1, 1}, {d1, ids1, b, w2, 1}, {d2, ids2, a, w1, 2}, {d1, ids1, b, w2, 3}};
        for (Object[] c : calls) {
            int[] ids = (int[]) c[1];
            float[][] ref = (float[][]) c[3];
            Tensor y = poisoned(DType.F32, pairs, n);
            gpu.moeExpertMatmulPairs(dx, topk, (ExpertWeights) c[2], (Tensor) c[0], 1f, y, false);
            float[] want = new float[pairs * n];
            double[] tol = new double[want.length];
            for (int p = 0; p < pairs; p++) {
                for (int o = 0; o < n; o++) {
                    double s = 0;
                    double abs = 0;
                    for (int i = 0; i < k; i++) {
                        double v = (double) x[(p / topk) * k + i] * ref[ids[p]][o * k + i];
                        s += v;
                        abs += Math.abs(v);
                    }
                    want[p * n + o] = (float) s;
                    tol[p * n + o] = 1e-6 + 2e-5 * abs;
                }
            }
            String what = "ids " + (c[0] == d1 ? 1 : 2) + " through " + (c[2] == a ? "the first" : "the second") + " experts";
            assertWithin(what, want, gpu.toHost(y).toFloatArray(), tol);
            assertEquals(before + (int) c[4], gpu.moePairRoutes(), what + ": routes launched");
        }
    }

    @Test
    void combineWeightsThePairsIntoTheirTokens() {
        SplittableRandom r = rng(902);
        int tokens = 3;
        int topk = 4;
        for (int h : new int[]{200, 600}) { // one block a token, and three (a column a thread)
            combineCase(r, tokens, topk, h);
        }
    }

    private void combineCase(SplittableRandom r, int tokens, int topk, int h) {
        float[] ys = randn(r, 1f, tokens * topk, h).toFloatArray();
        float[] w = randn(r, 1f, tokens, topk).toFloatArray();
        float[] out0 = randn(r, 1f, tokens, h).toFloatArray();
        for (boolean accumulate : new boolean[]{false, true}) {
            Tensor out = accumulate ? dev(Tensor.of(out0, tokens, h)) : poisoned(DType.F32, tokens, h);
            gpu.moeCombinePairs(dev(Tensor.of(ys, tokens * topk, h)), dev(Tensor.of(w, tokens, topk)), out, accumulate);
            float[] want = new float[tokens * h];
            double[] tol = new double[want.length];
            for (int t = 0; t < tokens; t++) {
                for (int c = 0; c < h; c++) {
                    double s = accumulate ? out0[t * h + c] : 0;
                    double abs = Math.abs(s);
                    for (int j = 0; j < topk; j++) {
                        double v = (double) w[t * topk + j] * ys[(t * topk + j) * h + c];
                        s += v;
                        abs += Math.abs(v);
                    }
                    want[t * h + c] = (float) s;
                    tol[t * h + c] = 1e-6 + 1e-6 * abs;
                }
            }
            assertWithin("moeCombinePairs h " + h + (accumulate ? " into out" : ""), want, gpu.toHost(out).toFloatArray(), tol);
        }
    }

    @Test
    void aCapturedGraphReplaysThePairsAndTheirTablesAreKept() {
        SplittableRandom r = rng(903);
        int experts = 8;
        int n = 64;
        int k = 256;
        QuantizedTensor[] quant = new QuantizedTensor[experts];
        for (int e = 0; e < experts; e++) {
            quant[e] = gpu.toDevice(CudaQuantTest.random("int4-g32", r, n, k));
        }
        ExpertWeights ew = new ExpertWeights(n, k, new Tensor[experts], quant);
        try {
            Tensor x = dev(randn(r, 1f, 2, k));
            Tensor ids = dev(Tensor.ofInts(new int[]{3, 5, 0, 7}, 2, 2));
            Tensor y = poisoned(DType.F32, 4, n);
            gpu.moeExpertMatmulPairs(x, 2, ew, ids, 1f, y, false);   // the table is made here, outside the capture
            int tables = gpu.moePairTables();
            float[] direct = gpu.toHost(y).toFloatArray();
            Tensor z = poisoned(DType.F32, 4, n);
            try (CudaGraph g = CudaGraph.capture(gpu.stream(), () -> gpu.moeExpertMatmulPairs(x, 2, ew, ids, 1f, z, false))) {
                g.launch(gpu.stream());
                assertArrayEquals(direct, gpu.toHost(z).toFloatArray(), 0f, "graph replay of the pair products");
                gpu.copyToDevice(Tensor.ofInts(new int[]{5, 3, 7, 0}, 2, 2), ids);   // new routing, same graph
                g.launch(gpu.stream());
                float[] swapped = gpu.toHost(z).toFloatArray();
                for (int o = 0; o < n; o++) {
                    assertEquals(direct[o], swapped[n + o], 0f, "pair 1 now takes pair 0's expert, row " + o);
                    assertEquals(direct[2 * n + o], swapped[3 * n + o], 0f, "pair 3 now takes pair 2's expert, row " + o);
                }
            }
            assertEquals(tables, gpu.moePairTables(), "the same experts reuse their table");
        } finally {
            for (QuantizedTensor q : quant) {
                gpu.free(q);
            }
        }
    }

    @Test
    void expertsOutsideTheLayerOrNotHeldAreReportedAndShapesChecked() {
        SplittableRandom r = rng(904);
        int experts = 4;
        Tensor[] dense = new Tensor[experts];
        for (int e = 0; e < experts; e++) {
            dense[e] = e == 2 ? null : dev(randn(r, 0.1f, 32, 64).to(DType.BF16)); // expert 2: not held by this rank
        }
        ExpertWeights ew = new ExpertWeights(32, 64, dense, new QuantizedTensor[experts]);
        Tensor x = dev(randn(r, 1f, 1, 64));
        gpu.moeExpertMatmulPairs(x, 2, ew, dev(Tensor.ofInts(new int[]{1, 4}, 1, 2)), 1f, poisoned(DType.F32, 2, 32), false);
        IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        assertTrue(e.getMessage().contains("expert id 4"), e.getMessage());
        gpu.moeExpertMatmulPairs(x, 2, ew, dev(Tensor.ofInts(new int[]{0, 2}, 1, 2)), 1f, poisoned(DType.F32, 2, 32), false);
        e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        assertTrue(e.getMessage().contains("expert id 2 (pair 1) is not held"), e.getMessage());
        int[] many = new int[80];   // 40 tokens x 2: grouped on the device, expert 2 among them
        for (int i = 0; i < many.length; i++) {
            many[i] = i % 4;
        }
        gpu.moeExpertMatmulPairs(dev(randn(r, 1f, 40, 64)), 2, ew, dev(Tensor.ofInts(many, 40, 2)), 1f, poisoned(DType.F32, 80, 32), false);
        e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        assertTrue(e.getMessage().contains("expert id 2 is not held"), e.getMessage());
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> gpu.moeExpertMatmulPairs(
                dev(randn(r, 1f, 1, 48)), 2, ew, dev(Tensor.ofInts(new int[]{0, 1}, 1, 2)), 1f, poisoned(DType.F32, 2, 32), false));
        assertTrue(bad.getMessage().contains("moeExpertMatmulPairs") && bad.getMessage().contains("[32, 64]"), bad.getMessage());
    }
}
