package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MoeHostOps;
import org.orbitrl.kernels.MoeRoutingHostOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The grouped mixture-of-experts operations of the CUDA backend ({@code moe*}, {@code moe_train.cu})
 * against their host implementations ({@link MoeHostOps}) on seeded random data, with ragged
 * routings (experts without pairs). Routing choices, groupings and row moves are exact; sums whose
 * order differs within 1e-6 + 1e-5·|ref|; the chunked bf16 expert products within
 * 1e-5 + 8e-3·Σ|x·w| (x and the dequantized weights rounded to bf16, f32 accumulation).
 */
class CudaMoeTrainTest extends CudaTestBase {
    static final int T = 37;
    static final int K = 4;
    static final int E = 16;

    @Test
    void topkAndGroupingAreExact() {
        SplittableRandom r = rng(301);
        Tensor probs = softmax(randn(r, 3f, T, E));
        for (boolean normalize : new boolean[]{false, true}) {
            Tensor[] ref = {host(DType.F32, T, K), host(DType.F32, T, K), host(DType.I32, T, K)};
            MoeRoutingHostOps.topk(probs, K, normalize, ref[0], ref[1], ref[2]);
            Tensor c = poisoned(DType.F32, T, K);
            Tensor w = poisoned(DType.F32, T, K);
            Tensor ids = poisoned(DType.I32, T, K);
            gpu.moeTopk(dev(probs), K, normalize, c, w, ids);
            assertClose("moeTopk chosen", ref[0].toFloatArray(), gpu.toHost(c).toFloatArray(), 0, 0);
            assertClose("moeTopk weights, normalize " + normalize, ref[1].toFloatArray(), gpu.toHost(w).toFloatArray(), 0, 1e-6);
            assertExact("moeTopk ids", ref[2].toLongArray(), gpu.toHost(ids).toLongArray());
        }
        int[] ids = raggedIds(r);
        Tensor hIds = Tensor.ofInts(ids, T, K);
        Tensor[] ref = {host(DType.I32, E + 1), host(DType.I32, T * K), host(DType.I32, T * K)};
        MoeHostOps.group(hIds, E, ref[0], ref[1], ref[2]);
        Tensor off = poisoned(DType.I32, E + 1);
        Tensor order = poisoned(DType.I32, T * K);
        Tensor pos = poisoned(DType.I32, T * K);
        gpu.moeGroup(dev(hIds), E, off, order, pos);
        assertExact("moeGroup offsets", ref[0].toLongArray(), gpu.toHost(off).toLongArray());
        assertExact("moeGroup order", ref[1].toLongArray(), gpu.toHost(order).toLongArray());
        assertExact("moeGroup position", ref[2].toLongArray(), gpu.toHost(pos).toLongArray());
    }

    /**
     * The top-k choice a warp a token ({@code moe_topk_warps}, the default) against the host's and against the block a token
     * ({@code orbit.cuda.moeTopk=block}) bit for bit, over the experts of the models Orbit takes (16 to 1100, top 4 or 8)
     * and token counts that leave a block partly empty, with probabilities on a grid of 1/64 so that many of them tie
     * (ties go to the lower expert in both).
     */
    @Test
    void topkAWarpATokenChoosesAsABlockDoes() {
        SplittableRandom r = rng(304);
        int[][] shapes = {{64, 128, 8}, {5, 384, 8}, {37, 16, 4}, {3, 32, 4}, {9, 1100, 8}, {1, 256, 8}};
        for (int[] sh : shapes) {
            int t = sh[0];
            int e = sh[1];
            int k = sh[2];
            for (boolean ties : new boolean[]{false, true}) {
                Tensor probs = softmax(randn(r, 3f, t, e));
                if (ties) {
                    float[] v = probs.toFloatArray();
                    for (int i = 0; i < v.length; i++) {
                        v[i] = Math.round(v[i] * 64f) / 64f;
                    }
                    probs = Tensor.of(v, t, e);
                }
                for (boolean normalize : new boolean[]{false, true}) {
                    String what = "moeTopk " + t + " tokens, " + e + " experts, top " + k + (ties ? ", ties" : "")
                            + (normalize ? ", normalized" : "");
                    Tensor[] ref = {host(DType.F32, t, k), host(DType.F32, t, k), host(DType.I32, t, k)};
                    MoeRoutingHostOps.topk(probs, k, normalize, ref[0], ref[1], ref[2]);
                    Tensor[] warps = topkOn(probs, k, normalize, null);
                    Tensor[] blocks = topkOn(probs, k, normalize, "block");
                    assertExact(what + " ids", ref[2].toLongArray(), gpu.toHost(warps[2]).toLongArray());
                    assertClose(what + " chosen", ref[0].toFloatArray(), gpu.toHost(warps[0]).toFloatArray(), 0, 0);
                    assertClose(what + " weights", ref[1].toFloatArray(), gpu.toHost(warps[1]).toFloatArray(), 0, 1e-6);
                    for (int i = 0; i < 3; i++) {
                        Tensor a = gpu.toHost(warps[i]);
                        Tensor b = gpu.toHost(blocks[i]);
                        long[] wa = a.dtype() == DType.F32 ? bits(a.toFloatArray()) : a.toLongArray();
                        long[] wb = b.dtype() == DType.F32 ? bits(b.toFloatArray()) : b.toLongArray();
                        assertExact(what + ", a warp against a block, output " + i, wb, wa);
                    }
                }
            }
        }
    }

    /** moeTopk's chosen, weights and ids with {@code orbit.cuda.moeTopk} set to kernel (null: the default). */
    private Tensor[] topkOn(Tensor probs, int k, boolean normalize, String kernel) {
        int t = probs.size(0);
        Tensor[] out = {poisoned(DType.F32, t, k), poisoned(DType.F32, t, k), poisoned(DType.I32, t, k)};
        String before = System.getProperty(CudaMoeTrain.TOPK_PROPERTY);
        if (kernel == null) {
            System.clearProperty(CudaMoeTrain.TOPK_PROPERTY);
        } else {
            System.setProperty(CudaMoeTrain.TOPK_PROPERTY, kernel);
        }
        try {
            gpu.moeTopk(dev(probs), k, normalize, out[0], out[1], out[2]);
        } finally {
            if (before == null) {
                System.clearProperty(CudaMoeTrain.TOPK_PROPERTY);
            } else {
                System.setProperty(CudaMoeTrain.TOPK_PROPERTY, before);
            }
        }
        return out;
    }

    private static long[] bits(float[] v) {
        long[] b = new long[v.length];
        for (int i = 0; i < v.length; i++) {
            b[i] = Float.floatToRawIntBits(v[i]);
        }
        return b;
    }

    /**
     * DeepSeek-V3's routing ({@code moe_sigmoid_topk}) and its gradient ({@code moe_sigmoid_router_backward}) against the
     * host's: the same ids and the same weight and gradient bits (both round in the host's order), the scores within one
     * f32 ulp (the device's double exp against Java's), over the fixture's, DeepSeek-V3's and Kimi-K2's expert groups, a
     * ragged last block of tokens, without bias or renormalisation, logits on a grid (ties to the lower expert) and scores
     * written over the logits.
     */
    @Test
    void sigmoidRoutingAndItsGradientMatchTheHost() {
        SplittableRandom r = rng(305);
        int[][] shapes = {{9, 8, 2, 1, 2}, {37, 256, 8, 4, 8}, {21, 384, 1, 1, 8}, {3, 64, 4, 2, 6}, {1, 736, 16, 3, 8}};
        for (int[] sh : shapes) {
            int t = sh[0];
            int e = sh[1];
            int groups = sh[2];
            int keep = sh[3];
            int k = sh[4];
            for (int variant = 0; variant < 3; variant++) {
                boolean normalize = variant != 1;
                boolean grid = variant == 2;
                Tensor logits = randn(r, 2f, t, e);
                if (grid) {
                    float[] v = logits.toFloatArray();
                    for (int i = 0; i < v.length; i++) {
                        v[i] = Math.round(v[i] * 4f) / 4f;
                    }
                    logits = Tensor.of(v, t, e);
                }
                Tensor bias = grid || variant == 1 ? null : randn(r, 0.3f, e);
                float scaling = 2.5f;
                String what = "moeSigmoidTopk " + t + " tokens, " + e + " experts, " + groups + " groups (" + keep + " kept), top "
                        + k + (bias == null ? "" : ", bias") + (normalize ? ", normalized" : "") + (grid ? ", ties" : "");
                Tensor sRef = host(DType.F32, t, e);
                Tensor wRef = host(DType.F32, t, k);
                Tensor iRef = host(DType.I32, t, k);
                MoeRoutingHostOps.sigmoidTopk(logits, bias, groups, keep, k, normalize, scaling, sRef, wRef, iRef);
                Tensor inPlace = dev(logits);
                Tensor w = poisoned(DType.F32, t, k);
                Tensor ids = poisoned(DType.I32, t, k);
                gpu.moeSigmoidTopk(inPlace, bias == null ? null : dev(bias), groups, keep, k, normalize, scaling, inPlace, w, ids);
                float[] sr = sRef.toFloatArray();
                double[] ulp = new double[sr.length];
                for (int i = 0; i < sr.length; i++) {
                    ulp[i] = Math.ulp(sr[i]);
                }
                assertWithin(what + ": scores", sr, gpu.toHost(inPlace).toFloatArray(), ulp);
                assertExact(what + ": ids", iRef.toLongArray(), gpu.toHost(ids).toLongArray());
                assertBitsEqual(what + ": weights", wRef.toFloatArray(), gpu.toHost(w).toFloatArray());

                Tensor dw = randn(r, 1f, t, k);
                Tensor lRef = host(DType.F32, t, e);
                MoeRoutingHostOps.sigmoidRouterBackward(sRef, iRef, dw, normalize, scaling, lRef);
                Tensor lGot = poisoned(DType.F32, t, e);
                gpu.moeSigmoidRouterBackward(dev(sRef), dev(iRef), dev(dw), normalize, scaling, lGot);
                assertClose(what + ": dLogits", lRef.toFloatArray(), gpu.toHost(lGot).toFloatArray(), 0, 0);
            }
        }
        Tensor wide = dev(randn(r, 1f, 2, 737));   // one expert past the shared memory of a block's eight warps
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.moeSigmoidTopk(wide, null, 1, 1, 8, true,
                1f, wide, poisoned(DType.F32, 2, 8), poisoned(DType.I32, 2, 8)));
        assertTrue(e.getMessage().contains("at most 736 experts"), e.getMessage());
    }

    /**
     * DeepSeek V4's routing ({@code moe_score_topk}) against the host's: the same ids and weight bits, the scores within
     * one f32 ulp (the device's double exp and log1p against Java's), sqrt(softplus) and sigmoid scores, over V4-Flash's
     * 256 and V4-Pro's 384 experts at top 6 and the fixture's 8 at top 2, a ragged last block of tokens, with and without
     * bias, logits on a grid (ties to the lower expert), logits past softplus's threshold of 20, a hash layer's fixed
     * experts (their scores' weights, in the order given), and scores written over the logits. A fixed id outside the
     * experts is reported at the next synchronise.
     */
    @Test
    void scoreRoutingMatchesTheHost() {
        SplittableRandom r = rng(306);
        int[][] shapes = {{9, 8, 2}, {37, 256, 6}, {21, 384, 6}, {1, 768, 8}};
        for (int[] sh : shapes) {
            int t = sh[0];
            int e = sh[1];
            int k = sh[2];
            for (int variant = 0; variant < 5; variant++) {
                boolean sqrtSoftplus = variant != 3;
                boolean grid = variant == 1;
                boolean hash = variant == 4;
                Tensor logits = randn(r, grid ? 2f : 8f, t, e);   // sd 8: some logits past 20
                if (grid) {
                    float[] v = logits.toFloatArray();
                    for (int i = 0; i < v.length; i++) {
                        v[i] = Math.round(v[i] * 4f) / 4f;
                    }
                    logits = Tensor.of(v, t, e);
                }
                Tensor bias = grid || hash ? null : randn(r, 0.3f, e);
                Tensor fixed = null;
                if (hash) {
                    int[] f = new int[t * k];
                    for (int i = 0; i < f.length; i++) {
                        f[i] = r.nextInt(e);
                    }
                    fixed = Tensor.ofInts(f, t, k);
                }
                float scaling = 1.5f;
                String what = "moeScoreTopk " + t + " tokens, " + e + " experts, top " + k + (sqrtSoftplus ? ", sqrt softplus" : ", sigmoid")
                        + (bias == null ? "" : ", bias") + (grid ? ", ties" : "") + (hash ? ", fixed" : "");
                Tensor sRef = host(DType.F32, t, e);
                Tensor wRef = host(DType.F32, t, k);
                Tensor iRef = host(DType.I32, t, k);
                MoeRoutingHostOps.scoreTopk(logits, sqrtSoftplus, bias, fixed, k, scaling, sRef, wRef, iRef);
                Tensor inPlace = dev(logits);
                Tensor w = poisoned(DType.F32, t, k);
                Tensor ids = poisoned(DType.I32, t, k);
                gpu.moeScoreTopk(inPlace, sqrtSoftplus, bias == null ? null : dev(bias), fixed == null ? null : dev(fixed), k, scaling,
                        inPlace, w, ids);
                float[] sr = sRef.toFloatArray();
                double[] ulp = new double[sr.length];
                for (int i = 0; i < sr.length; i++) {
                    ulp[i] = Math.ulp(sr[i]);
                }
                assertWithin(what + ": scores", sr, gpu.toHost(inPlace).toFloatArray(), ulp);
                assertExact(what + ": ids", iRef.toLongArray(), gpu.toHost(ids).toLongArray());
                assertBitsEqual(what + ": weights", wRef.toFloatArray(), gpu.toHost(w).toFloatArray());
            }
        }
        // choices of -inf (a bias of -inf) taken once each, in expert order, after the numbers: ids 0, 3, 1 as on the host
        Tensor lg = Tensor.of(new float[]{0.4f, 0.3f, -0.2f, 0.1f}, 1, 4);
        Tensor minf = Tensor.of(new float[]{0f, Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY, 0f}, 4);
        Tensor iRef = host(DType.I32, 1, 3);
        MoeRoutingHostOps.scoreTopk(lg, false, minf, null, 3, 1f, host(DType.F32, 1, 4), host(DType.F32, 1, 3), iRef);
        assertArrayEquals(new long[]{0, 3, 1}, iRef.toLongArray(), "the host's choice of -inf");
        Tensor ids3 = poisoned(DType.I32, 1, 3);
        gpu.moeScoreTopk(dev(lg), false, dev(minf), null, 3, 1f, poisoned(DType.F32, 1, 4), poisoned(DType.F32, 1, 3), ids3);
        assertArrayEquals(iRef.toLongArray(), gpu.toHost(ids3).toLongArray(), "the device's choice of -inf");
        // a token with fewer numbers than choices (NaN scores): an error on both sides, never an expert chosen twice
        Tensor nan = Tensor.of(new float[]{0.1f, Float.NaN, Float.NaN, Float.NaN}, 1, 4);
        assertThrows(IllegalArgumentException.class, () -> MoeRoutingHostOps.scoreTopk(nan, true, null, null, 2, 1f,
                host(DType.F32, 1, 4), host(DType.F32, 1, 2), host(DType.I32, 1, 2)));
        gpu.moeScoreTopk(dev(nan), true, null, null, 2, 1f, poisoned(DType.F32, 1, 4), poisoned(DType.F32, 1, 2),
                poisoned(DType.I32, 1, 2));
        assertThrows(IndexOutOfBoundsException.class, gpu::synchronize, "a token of NaN scores with a choice left to make");
        Tensor wide = dev(randn(r, 1f, 2, 769));   // one expert past the shared memory of a block's eight warps
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.moeScoreTopk(wide, true, null, null, 6,
                1f, wide, poisoned(DType.F32, 2, 6), poisoned(DType.I32, 2, 6)));
        assertTrue(e.getMessage().contains("at most 768 experts"), e.getMessage());
        int[] f = {1, 2, 3, 4, 5, 64};
        gpu.moeScoreTopk(dev(randn(r, 1f, 1, 64)), true, null, dev(Tensor.ofInts(f, 1, 6)), 6, 1f, poisoned(DType.F32, 1, 64),
                poisoned(DType.F32, 1, 6), poisoned(DType.I32, 1, 6));
        IndexOutOfBoundsException oob = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        assertTrue(oob.getMessage().contains("expert id 64"), oob.getMessage());
    }

    /**
     * moeGather a block a row, 16 bytes at a time (widths 2048 and 8192, multiples of 4) or a value at a time (odd
     * width, a source view off 16-byte boundaries), over an even and an odd count of rows, and the elementwise kernel
     * ({@code orbit.cuda.moeGather=elementwise}): the host's rows exactly.
     */
    @Test
    void gatherIsExactForEveryWidthAndKernel() {
        SplittableRandom r = rng(303);
        int p = T * K;
        Tensor hIds = Tensor.ofInts(raggedIds(r), T, K);
        Tensor off = host(DType.I32, E + 1);
        Tensor order = host(DType.I32, p);
        Tensor pos = host(DType.I32, p);
        MoeHostOps.group(hIds, E, off, order, pos);
        Tensor w = randn(r, 1f, T, K);
        Tensor dOrder = dev(order);
        Tensor dw = dev(w);
        for (String kernel : new String[]{"rows", "elementwise"}) {
            for (int h : new int[]{2048, 2051, 8192}) {
                Tensor x = randn(r, 1f, T, h);
                Tensor dx = h % 4 == 0 ? dev(x) : dev(randn(r, 1f, T * h + 1)).slice(0, 1, T * h + 1L).reshape(T, h);
                if (h % 4 != 0) {
                    gpu.copy(dev(x), dx);
                }
                for (int rows : new int[]{p, p - 1}) {
                    for (Tensor weights : new Tensor[]{null, w}) {
                        Tensor ref = host(DType.F32, rows, h);
                        MoeHostOps.gather(x, order.slice(0, 0, rows), K, weights, ref);
                        Tensor got = poisoned(DType.F32, rows, h);
                        String before = System.getProperty(CudaMoeTrain.GATHER_PROPERTY);
                        System.setProperty(CudaMoeTrain.GATHER_PROPERTY, kernel);
                        try {
                            gpu.moeGather(dx, dOrder.slice(0, 0, rows), K, weights == null ? null : dw, got);
                        } finally {
                            if (before == null) {
                                System.clearProperty(CudaMoeTrain.GATHER_PROPERTY);
                            } else {
                                System.setProperty(CudaMoeTrain.GATHER_PROPERTY, before);
                            }
                        }
                        assertClose("moeGather " + kernel + " width " + h + ", " + rows + " rows" + (weights == null ? "" : " weighted"),
                                ref.toFloatArray(), gpu.toHost(got).toFloatArray(), 0, 0);
                    }
                }
            }
        }
    }

    @Test
    void rowMovesAndRoutingGradientsMatchTheHost() {
        SplittableRandom r = rng(302);
        int h = 96;
        int p = T * K;
        Tensor hIds = Tensor.ofInts(raggedIds(r), T, K);
        Tensor off = host(DType.I32, E + 1);
        Tensor order = host(DType.I32, p);
        Tensor pos = host(DType.I32, p);
        MoeHostOps.group(hIds, E, off, order, pos);
        Tensor x = randn(r, 1f, T, h);
        Tensor w = randn(r, 1f, T, K);
        Tensor ys = randn(r, 1f, p, h);
        for (Tensor weights : new Tensor[]{null, w}) {
            Tensor ref = host(DType.F32, p, h);
            MoeHostOps.gather(x, order, K, weights, ref);
            Tensor got = poisoned(DType.F32, p, h);
            gpu.moeGather(dev(x), dev(order), K, weights == null ? null : dev(weights), got);
            assertClose("moeGather" + (weights == null ? "" : " weighted"), ref.toFloatArray(), gpu.toHost(got).toFloatArray(), 0, 1e-7);
            for (boolean acc : new boolean[]{false, true}) {
                Tensor start = randn(r, 1f, T, h);
                Tensor cref = host(DType.F32, T, h);
                cref.copyFrom(start);
                MoeHostOps.combine(ys, pos, weights, cref, acc);
                Tensor cgot = dev(start);
                gpu.moeCombineGrouped(dev(ys), dev(pos), weights == null ? null : dev(weights), cgot, acc);
                assertClose("moeCombineGrouped accumulate " + acc, cref.toFloatArray(), gpu.toHost(cgot).toFloatArray(), 1e-6, 1e-5);
            }
        }
        Tensor bias = randn(r, 1f, E, h);
        Tensor bref = host(DType.F32, p, h);
        bref.copyFrom(ys);
        MoeHostOps.expertBias(bref, bias, off);
        Tensor bgot = dev(ys);
        gpu.moeExpertBias(bgot, dev(bias), dev(off));
        assertClose("moeExpertBias", bref.toFloatArray(), gpu.toHost(bgot).toFloatArray(), 0, 0);
        Tensor pref = host(DType.F32, p, h);
        pref.copyFrom(ys);
        MoeHostOps.expertBiasPairs(pref, bias, hIds);
        Tensor pgot = dev(ys);
        gpu.moeExpertBiasPairs(pgot, dev(bias), dev(hIds));
        assertClose("moeExpertBiasPairs", pref.toFloatArray(), gpu.toHost(pgot).toFloatArray(), 0, 0);
        Tensor dref = host(DType.F32, T, K);
        MoeHostOps.weightGrad(x, ys, pos, dref);
        Tensor dgot = poisoned(DType.F32, T, K);
        gpu.moeWeightGrad(dev(x), dev(ys), dev(pos), dgot);
        assertClose("moeWeightGrad", dref.toFloatArray(), gpu.toHost(dgot).toFloatArray(), 1e-5, 1e-5);

        Tensor probs = softmax(randn(r, 3f, T, E));
        for (boolean normalize : new boolean[]{false, true}) {
            Tensor c = host(DType.F32, T, K);
            Tensor rw = host(DType.F32, T, K);
            Tensor ids = host(DType.I32, T, K);
            MoeRoutingHostOps.topk(probs, K, normalize, c, rw, ids);
            Tensor dw = randn(r, 1f, T, K);
            Tensor lref = host(DType.F32, T, E);
            MoeRoutingHostOps.routerBackward(probs, c, rw, ids, dw, normalize, lref);
            Tensor lgot = poisoned(DType.F32, T, E);
            gpu.moeRouterBackward(dev(probs), dev(c), dev(rw), dev(ids), dev(dw), normalize, lgot);
            assertClose("moeRouterBackward normalize " + normalize, lref.toFloatArray(), gpu.toHost(lgot).toFloatArray(), 1e-6, 1e-5);
        }
    }

    @Test
    void chunkedExpertProductsMatchTheHostForEveryChunkAndWeightForm() {
        SplittableRandom r = rng(303);
        int e = 8;
        int n = 64;
        int k = 96;
        int tokens = 29;
        int topk = 2;
        int p = tokens * topk;
        int[] ids = new int[p];
        for (int i = 0; i < p; i++) {
            ids[i] = 1 + r.nextInt(e - 3);   // experts 0, 6 and 7 get no pair
        }
        Tensor off = host(DType.I32, e + 1);
        MoeHostOps.group(Tensor.ofInts(ids, tokens, topk), e, off, host(DType.I32, p), host(DType.I32, p));
        int[] offsets = ints(off);
        QuantizedTensor[] q = new QuantizedTensor[e];
        Tensor[] dense = new Tensor[e];
        float[][] wf = new float[e][];
        for (int x = 0; x < e; x++) {
            q[x] = CudaQuantTest.random("int4-g32", r, n, k);
            dense[x] = host(DType.F32, n, k);
            cpu.dequantize(q[x], dense[x]);
            wf[x] = dense[x].toFloatArray();
        }
        List<Tensor> devWeights = new ArrayList<>();
        QuantizedTensor[] qd = new QuantizedTensor[e];
        Tensor[] f32d = new Tensor[e];
        Tensor[] bf16d = new Tensor[e];
        for (int x = 0; x < e; x++) {
            qd[x] = gpu.toDevice(q[x]);
            devWeights.add(qd[x].codes());
            devWeights.add(qd[x].scales());
            f32d[x] = dev(dense[x]);
            bf16d[x] = dev(dense[x].to(DType.BF16));
        }
        try {
            ExpertWeights hostW = new ExpertWeights(n, k, new Tensor[e], q);
            ExpertWeights[] forms = {new ExpertWeights(n, k, new Tensor[e], qd), new ExpertWeights(n, k, f32d, new QuantizedTensor[e]),
                    new ExpertWeights(n, k, bf16d, new QuantizedTensor[e])};
            String[] names = {"int4-g32", "f32", "bf16"};
            for (boolean transposed : new boolean[]{false, true}) {
                int inCols = transposed ? n : k;
                int outCols = transposed ? k : n;
                Tensor in = randn(r, 1f, p, inCols);
                Tensor ref = host(DType.F32, p, outCols);
                MoeHostOps.expertMatmul(cpu, in, hostW, offsets, ref, 1, transposed);
                double[] tol = tolerance(in.toFloatArray(), wf, offsets, n, k, transposed);
                for (int f = 0; f < forms.length; f++) {
                    for (int chunk : new int[]{1, 3, e}) {
                        Tensor got = poisoned(DType.F32, p, outCols);
                        if (transposed) {
                            gpu.moeExpertMatmulTransposed(dev(in), forms[f], offsets, got, chunk);
                        } else {
                            gpu.moeExpertMatmul(dev(in), forms[f], offsets, got, chunk);
                        }
                        assertWithin((transposed ? "moeExpertMatmulTransposed " : "moeExpertMatmul ") + names[f] + " chunk " + chunk,
                                ref.toFloatArray(), gpu.toHost(got).toFloatArray(), tol);
                    }
                }
            }
        } finally {
            gpu.synchronize();
            devWeights.forEach(gpu::free);
        }
    }

    /** 1e-5 + 8e-3·Σ|x·w| per output of the grouped product. */
    private static double[] tolerance(float[] in, float[][] w, int[] offsets, int n, int k, boolean transposed) {
        int inCols = transposed ? n : k;
        int outCols = transposed ? k : n;
        int p = offsets[offsets.length - 1];
        double[] tol = new double[p * outCols];
        for (int e = 0; e + 1 < offsets.length; e++) {
            for (int i = offsets[e]; i < offsets[e + 1]; i++) {
                for (int o = 0; o < outCols; o++) {
                    double s = 0;
                    for (int c = 0; c < inCols; c++) {
                        float wv = transposed ? w[e][c * k + o] : w[e][o * k + c];
                        s += Math.abs((double) in[i * inCols + c] * wv);
                    }
                    tol[i * outCols + o] = 1e-5 + 8e-3 * s;
                }
            }
        }
        return tol;
    }

    /** Token-major ids over E experts where experts 3, 7 and 11 never appear and a token's experts are distinct. */
    private static int[] raggedIds(SplittableRandom r) {
        int[] ids = new int[T * K];
        for (int t = 0; t < T; t++) {
            List<Integer> pool = new ArrayList<>();
            for (int e = 0; e < E; e++) {
                if (e != 3 && e != 7 && e != 11) {
                    pool.add(e);
                }
            }
            for (int j = 0; j < K; j++) {
                ids[t * K + j] = pool.remove(r.nextInt(pool.size()));
            }
        }
        return ids;
    }

    private static Tensor softmax(Tensor logits) {
        cpu.softmax(logits);
        return logits;
    }

    private static Tensor host(DType dtype, long... shape) {
        return Tensor.allocate(Arena.ofAuto(), dtype, shape);
    }

    private static int[] ints(Tensor t) {
        long[] v = t.toLongArray();
        int[] out = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = (int) v[i];
        }
        return out;
    }
}
