package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Mixture-of-experts products for every token count against references computed here from the
 * format classes' own dequantization: the device routing (exact counting-sort result), the grouped
 * fused GEMV (tensor cores off; |err| ≤ 1e-6 + 1e-5·Σ|x·w|), and the expert-chunked cuBLAS path forward and input-gradient
 * (x and w rounded to bf16: |err| ≤ 1e-5 + 2⁻⁷·Σ|x·w|), and the one-launch router against the
 * scalar backend's matmul, softmax and top-k (indices exact, values |err| ≤ 1e-7 + 1e-5·|ref|). Ragged routing: skewed expert choice, so
 * some experts get many pairs, some one, some none.
 */
class CudaMoeGroupedTest extends CudaTestBase {
    private static final int E = 12;
    private static final int N = 48;
    private static final int K = 256;

    /** Expert ids [tokens, topk], distinct within a token, skewed towards low experts. */
    private static int[] route(SplittableRandom r, int tokens, int topk) {
        int[] ids = new int[tokens * topk];
        for (int t = 0; t < tokens; t++) {
            List<Integer> taken = new ArrayList<>();
            while (taken.size() < topk) {
                int e = Math.min(E - 1, (int) (E * Math.pow(r.nextDouble(), 2.5)));
                if (!taken.contains(e)) {
                    taken.add(e);
                }
            }
            for (int j = 0; j < topk; j++) {
                ids[t * topk + j] = taken.get(j);
            }
        }
        return ids;
    }

    @Test
    void routingIsTheStableCountingSort() {
        SplittableRandom r = rng(91);
        // 4 to 1024 pairs: placed at once from the tiles' counts (1 to 32 tiles); 1200: the scatter a tile at a time
        for (int tokens : new int[]{1, 5, 37, 64, 256, 300}) {
            int topk = 4;
            int[] ids = route(r, tokens, topk);
            try (MoeRouting routing = gpu.moe().moeRouting(E, 1200)) {
                gpu.moe().moeRoute(dev(Tensor.ofInts(ids, tokens, topk)), routing);
                long[] offsets = gpu.toHost(routing.offsets()).toLongArray();
                long[] active = gpu.toHost(routing.active()).toLongArray();
                long[] order = gpu.toHost(routing.order()).toLongArray();
                long[] refOff = new long[E + 1];
                long[] refActive = new long[E + 1];
                long[] refOrder = new long[ids.length];
                int pos = 0;
                int na = 0;
                for (int e = 0; e < E; e++) {
                    refOff[e] = pos;
                    boolean any = false;
                    for (int p = 0; p < ids.length; p++) {
                        if (ids[p] == e) {
                            refOrder[pos++] = p;
                            any = true;
                        }
                    }
                    if (any) {
                        refActive[1 + na++] = e;
                    }
                }
                refOff[E] = pos;
                refActive[0] = na;
                assertExact("offsets, tokens " + tokens, refOff, offsets);
                assertExact("active[0.." + na + "], tokens " + tokens, java.util.Arrays.copyOf(refActive, na + 1),
                        java.util.Arrays.copyOf(active, na + 1));
                assertExact("order, tokens " + tokens, refOrder, order);
            }
        }
    }

    @Test
    void groupedMatchesEveryPairsExpert() {
        SplittableRandom r = rng(92);
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            QuantizedTensor stacked = CudaQuantTest.random(format, r, E * N, K);
            float[] wf = CudaQuantTest.dequantizeRef(stacked);
            QuantizedTensor dw = gpu.toDevice(stacked);
            gpu.moe().moeGroupedTensorCores(false); // the fused GEMV at every batch (CudaMoeGroupedMmaTest: the tensor cores)
            try (MoeRouting routing = gpu.moe().moeRouting(E, 64 * 4)) {
                for (int tokens : new int[]{1, 3, 64}) {
                    int topk = 4;
                    int[] ids = route(r, tokens, topk);
                    gpu.moe().moeRoute(dev(Tensor.ofInts(ids, tokens, topk)), routing);
                    for (boolean perPair : new boolean[]{false, true}) {
                        for (boolean bf16 : new boolean[]{false, true}) {
                            int xRows = perPair ? ids.length : tokens;
                            float[] xv = randn(r, 1f, xRows, K).toFloatArray();
                            if (bf16) {
                                xv = bf16Round(xv);
                            }
                            Tensor x = Tensor.of(xv, xRows, K);
                            Tensor y = poisoned(DType.F32, ids.length, N);
                            gpu.moe().moeMatmulGrouped(dev(bf16 ? x.to(DType.BF16) : x), dw, routing, y);
                            Ref ref = reference(xv, perPair ? 1 : topk, ids, wf, false, 1e-6, 1e-5);
                            assertWithin("moeMatmulGrouped " + format + " tokens " + tokens + (perPair ? " x per pair" : " x per token")
                                    + (bf16 ? " bf16" : " f32"), ref.y, gpu.toHost(y).toFloatArray(), ref.tol);
                        }
                    }
                }
            } finally {
                gpu.moe().moeGroupedTensorCores(true);
                gpu.free(dw);
            }
        }
    }

    @Test
    void chunkedForwardAndInputGradient() {
        SplittableRandom r = rng(93);
        for (String format : new String[]{"int4-g32", "nvfp4"}) {
            QuantizedTensor stacked = CudaQuantTest.random(format, r, E * N, K);
            float[] wf = CudaQuantTest.dequantizeRef(stacked);
            QuantizedTensor dw = gpu.toDevice(stacked);
            int tokens = 90;
            int topk = 3;
            try (MoeRouting routing = gpu.moe().moeRouting(E, tokens * topk)) {
                int[] ids = route(r, tokens, topk);
                gpu.moe().moeRoute(dev(Tensor.ofInts(ids, tokens, topk)), routing);
                for (int chunk : new int[]{1, 5, E}) {
                    float[] xv = randn(r, 1f, tokens, K).toFloatArray();
                    Tensor y = poisoned(DType.F32, ids.length, N);
                    gpu.moe().moeMatmulChunked(dev(Tensor.of(xv, tokens, K)), dw, routing, y, chunk);
                    Ref ref = reference(xv, topk, ids, wf, false, 1e-5, 1.0 / 128);
                    assertWithin("moeMatmulChunked " + format + " chunk " + chunk, ref.y, gpu.toHost(y).toFloatArray(), ref.tol);

                    float[] dyv = randn(r, 1f, ids.length, N).toFloatArray();
                    Tensor dx = poisoned(DType.F32, ids.length, K);
                    gpu.moe().moeBackwardInput(dev(Tensor.of(dyv, ids.length, N)), dw, routing, dx, chunk);
                    Ref refB = reference(dyv, 1, ids, wf, true, 1e-5, 1.0 / 128);
                    assertWithin("moeBackwardInput " + format + " chunk " + chunk, refB.y, gpu.toHost(dx).toFloatArray(), refB.tol);
                }
            } finally {
                gpu.free(dw);
            }
        }
    }

    @Test
    void routerMatchesMatmulSoftmaxTopk() {
        SplittableRandom r = rng(94);
        int tokens = 5;
        int h = 512;
        for (int experts : new int[]{64, 300}) {
            for (boolean normalize : new boolean[]{false, true}) {
                int topk = 8;
                Tensor x = randn(r, 1f, tokens, h);
                Tensor w = Tensor.of(bf16Round(randn(r, 0.2f, experts, h).toFloatArray()), experts, h).to(DType.BF16);
                Tensor logits = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, tokens, experts);
                cpu.matmul(x, w, logits);
                cpu.softmax(logits);
                Tensor refV = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, tokens, topk);
                Tensor refI = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, tokens, topk);
                cpu.topk(logits, topk, refV, refI);
                float[] rv = refV.toFloatArray();
                if (normalize) {
                    for (int t = 0; t < tokens; t++) {
                        float s = 0;
                        for (int j = 0; j < topk; j++) {
                            s += rv[t * topk + j];
                        }
                        for (int j = 0; j < topk; j++) {
                            rv[t * topk + j] /= s;
                        }
                    }
                }
                Tensor v = poisoned(DType.F32, tokens, topk);
                Tensor i = poisoned(DType.I32, tokens, topk);
                gpu.moe().moeRouterTopk(dev(x), dev(w), topk, normalize, v, i);
                String what = "moeRouterTopk E=" + experts + (normalize ? " normalised" : "");
                assertExact(what + " indices", refI.toLongArray(), gpu.toHost(i).toLongArray());
                assertClose(what + " values", rv, gpu.toHost(v).toFloatArray(), 1e-7, 1e-5);
            }
        }
    }

    @Test
    void expertIdOutsideTheLayerIsReported() {
        try (MoeRouting routing = gpu.moe().moeRouting(E, 8)) {
            gpu.moe().moeRoute(dev(Tensor.ofInts(new int[]{3, E}, 1, 2)), routing);
            IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
            assertTrue(e.getMessage().contains("expert id " + E), e.getMessage());
        }
    }

    private record Ref(float[] y, double[] tol) {
    }

    /**
     * Forward: y[p] = x[p / div] · W_eᵀ ([N]); backward: y[p] = x[p] · W_e ([K]), with the tolerance
     * atol + rtol·Σ|x·w| per element.
     */
    private static Ref reference(float[] x, int div, int[] ids, float[] wf, boolean backward, double atol, double rtol) {
        int out = backward ? K : N;
        int in = backward ? N : K;
        float[] y = new float[ids.length * out];
        double[] tol = new double[y.length];
        for (int p = 0; p < ids.length; p++) {
            int xr = p / div;
            long wBase = (long) ids[p] * N * K;
            for (int o = 0; o < out; o++) {
                double s = 0;
                double a = 0;
                for (int i = 0; i < in; i++) {
                    double w = backward ? wf[(int) (wBase + (long) i * K + o)] : wf[(int) (wBase + (long) o * K + i)];
                    double v = x[xr * in + i] * w;
                    s += v;
                    a += Math.abs(v);
                }
                y[p * out + o] = (float) s;
                tol[p * out + o] = atol + rtol * a;
            }
        }
        return new Ref(y, tol);
    }
}
