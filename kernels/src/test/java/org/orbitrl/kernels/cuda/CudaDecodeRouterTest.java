package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The decode router's launches ({@link CudaDecodeRouter}) against references computed here in double from the inputs:
 * the norm written out within {@code 1e-6 + 1e-5·|ref|}, and the selection, where near-ties may be ordered differently
 * in f32 than in double, so each chosen expert's reference probability must equal the reference's j-th largest within
 * the probability tolerance, and no expert twice (the tolerances of {@link CudaFusedDecodeTest}); the tiles, the
 * grouped pairs and the add-and-norm launch against the block-a-token launch bit for bit.
 */
class CudaDecodeRouterTest extends CudaTestBase {
    private static final float EPS = 1e-6f;

    @Test
    void routerNormTopkWritesTheNormAndSelectsTheLargestProbabilities() {
        SplittableRandom r = rng(312);
        // {tokens, H, E, topk}: the selection in registers at E <= 128 and <= 384, rescans of shared memory past that
        int[][] cases = {{1, 2048, 128, 8}, {5, 256, 60, 3}, {64, 512, 128, 8}, {2, 128, 9, 9}, {3, 256, 256, 8}, {2, 256, 384, 8},
                {2, 128, 400, 6}};
        for (int[] c : cases) {
            for (boolean normalize : new boolean[]{true, false}) {
                int t = c[0];
                int h = c[1];
                int e = c[2];
                int topk = c[3];
                String what = "moeRouterNormTopk tokens " + t + " H " + h + " E " + e + " top " + topk + (normalize ? " normalized" : "");
                float[] x = randn(r, 2f, t, h).toFloatArray();
                float[] nw = CudaFusedDecodeTest.normWeights(r, h, false);
                float[] w = bf16Round(randn(r, 0.2f, e, h).toFloatArray());
                Tensor dx = dev(Tensor.of(x, t, h));
                Tensor dnw = dev(Tensor.of(nw, h));
                Tensor dw = dev(Tensor.of(w, e, h).to(DType.BF16));
                double[][] xn = CudaFusedDecodeTest.normalize(x, nw, t, h);
                for (int run = 0; run < 3; run++) { // the tickets are re-armed: every launch selects again
                    Tensor hOut = poisoned(DType.F32, t, h);
                    Tensor values = poisoned(DType.F32, t, topk);
                    Tensor ids = poisoned(DType.I32, t, topk);
                    gpu.fusedDecode().router().moeRouterNormTopk(dx, dnw, EPS, dw, topk, normalize, hOut, values, ids);
                    float[] hv = gpu.toHost(hOut).toFloatArray();
                    float[] hRef = new float[t * h];
                    double[] hTol = new double[t * h];
                    for (int i = 0; i < t * h; i++) {
                        hRef[i] = (float) xn[i / h][i % h];
                        hTol[i] = 1e-6 + 1e-5 * Math.abs(hRef[i]);
                    }
                    assertWithin(what + ", h (run " + run + ")", hRef, hv, hTol);
                    checkSelection(what + " (run " + run + ")", xn, w, e, h, topk, normalize,
                            gpu.toHost(values).toFloatArray(), gpu.toHost(ids).toLongArray());
                }
            }
        }
    }

    /**
     * The selection in registers ({@code -Dorbit.cuda.routerRegs}, on by default, read as the backend's library is made;
     * top 32 or fewer: each lane's logits held, a pick a two-step warp reduction) gives the rescans' values and experts
     * bit for bit (top 33 takes the rescans; its first 32 picks unnormalized against top 32's; with the switch off for the
     * JVM both are the rescans, and the test checks their ties):
     * at 40 and 384 experts (the registers' two forms), 1 and 3 tokens, a router whose rows repeat (equal logits, bit for
     * bit: the lower expert first) and whose rows of zeros make logits of +0 (ties among them too, in the top 32 of 40),
     * in three runs.
     */
    @Test
    void theSelectionInRegistersGivesTheRescansBits() {
        SplittableRandom r = rng(313);
        for (int[] c : new int[][]{{1, 256, 40}, {3, 256, 384}}) {
            int t = c[0];
            int h = c[1];
            int e = c[2];
            float[] x = randn(r, 2f, t, h).toFloatArray();
            float[] nw = CudaFusedDecodeTest.normWeights(r, h, false);
            float[] w = tiedRouter(r, e, h);
            Tensor dx = dev(Tensor.of(x, t, h));
            Tensor dnw = dev(Tensor.of(nw, h));
            Tensor dw = dev(Tensor.of(w, e, h).to(DType.BF16));
            String what = "moeRouterNormTopk tokens " + t + " E " + e + ", routerRegs="
                    + System.getProperty("orbit.cuda.routerRegs", "on");
            for (int run = 0; run < 3; run++) {
                float[][] vals = new float[2][];
                long[][] ids = new long[2][];
                for (int form = 0; form < 2; form++) {
                    int topk = 32 + form;
                    Tensor hOut = poisoned(DType.F32, t, h);
                    Tensor values = poisoned(DType.F32, t, topk);
                    Tensor idx = poisoned(DType.I32, t, topk);
                    gpu.fusedDecode().router().moeRouterNormTopk(dx, dnw, EPS, dw, topk, false, hOut, values, idx);
                    vals[form] = gpu.toHost(values).toFloatArray();
                    ids[form] = gpu.toHost(idx).toLongArray();
                }
                int equalPairs = 0;
                for (int k = 0; k < t; k++) {
                    for (int j = 0; j < 32; j++) {
                        String at = what + " (run " + run + "), token " + k + ", pick " + j;
                        assertEquals(ids[1][k * 33 + j], ids[0][k * 32 + j], at + ": expert");
                        assertEquals(Float.floatToRawIntBits(vals[1][k * 33 + j]), Float.floatToRawIntBits(vals[0][k * 32 + j]),
                                at + ": value " + vals[1][k * 33 + j] + " against " + vals[0][k * 32 + j]);
                        int id = (int) ids[0][k * 32 + j];
                        if (j > 0 && vals[0][k * 32 + j] == vals[0][k * 32 + j - 1]) {
                            equalPairs++;
                            assertTrue(ids[0][k * 32 + j - 1] < id, at + ": an equal value after a higher expert");
                        }
                    }
                }
                assertTrue(equalPairs >= t, what + ": the router's repeated rows made " + equalPairs + " equal picks");
            }
        }
    }

    /**
     * The last block's selection by all its threads ({@code -Dorbit.cuda.routerRank=on}: {@code moe_router_norm_topk_rk_pre}
     * and {@code moe_router_add_norm_topk_rk_pre}, each thread counting the logits before its own) gives the first warp's
     * values and experts bit for bit, through all three router calls of a decode step (the norm and router, the router
     * of x as it is, the residual add, norm and router): 1 and 3 tokens, 40 and 128 experts (the block's threads), 160
     * (more experts than threads) and top 33 (past 32), both of which take the warp's selection inside the kernel; a
     * router whose rows repeat (equal logits: the lower expert first, checked) and whose rows of zeros make logits of
     * +0; and a router row of 1e38 whose logit is not finite (the warp's selection again), normalized and not.
     */
    @Test
    void theBlocksSelectionGivesTheWarpsBits() {
        SplittableRandom r = rng(319);
        // {tokens, H, E, topk, a row of 1e38}
        int[][] cases = {{1, 2048, 128, 8, 0}, {3, 256, 40, 8, 0}, {1, 256, 128, 32, 0}, {2, 256, 160, 8, 0}, {2, 256, 128, 33, 0},
                {1, 256, 128, 8, 1}};
        for (int[] c : cases) {
            int t = c[0];
            int h = c[1];
            int e = c[2];
            int topk = c[3];
            float[] x = randn(r, 2f, t, h).toFloatArray();
            float[] d = randn(r, 1f, t, h).toFloatArray();
            float[] nw = CudaFusedDecodeTest.normWeights(r, h, false);
            float[] w = tiedRouter(r, e, h);
            if (c[4] == 1) {
                Arrays.fill(w, 5 * h, 6 * h, 1e38f);
            }
            Tensor dx = dev(Tensor.of(x, t, h));
            Tensor dd = dev(Tensor.of(d, t, h));
            Tensor dnw = dev(Tensor.of(nw, h));
            Tensor dw = dev(Tensor.of(w, e, h).to(DType.BF16));
            for (boolean normalize : new boolean[]{true, false}) {
                for (int call = 0; call < 3; call++) {
                    String what = new String[]{"moeRouterNormTopk", "moeRouterTopk", "addRmsNormRouterTopk"}[call] + " tokens " + t
                            + " H " + h + " E " + e + " top " + topk + (c[4] == 1 ? ", a row of 1e38" : "")
                            + (normalize ? ", normalized" : "");
                    float[][] vals = new float[2][];
                    long[][] ids = new long[2][];
                    for (int form = 0; form < 2; form++) {
                        Tensor values = poisoned(DType.F32, t, topk);
                        Tensor idx = poisoned(DType.I32, t, topk);
                        int which = call;
                        boolean norm = normalize;
                        Runnable route = () -> {
                            switch (which) {
                                case 0 -> gpu.fusedDecode().router().moeRouterNormTopk(dx, dnw, EPS, dw, topk, norm,
                                        poisoned(DType.F32, t, h), values, idx);
                                case 1 -> assertTrue(gpu.moeRouterTopk(dx, dw, topk, norm, values, idx), what + ": taken");
                                default -> assertTrue(gpu.addRmsNormRouterTopk(dx, dd, poisoned(DType.F32, t, h), dnw, EPS,
                                        poisoned(DType.F32, t, h), dw, topk, norm, values, idx), what + ": taken");
                            }
                        };
                        Runnable fused = () -> withProperty("orbit.cuda.addNormRouter", "on", route);
                        withProperty(CudaDecodeRouter.ROUTER_RANK_PROPERTY, form == 0 ? "off" : "on",
                                () -> withProperty(CudaDecodeRouter.ROUTER_PROLOGUE_PROPERTY, "on", fused));
                        vals[form] = gpu.toHost(values).toFloatArray();
                        ids[form] = gpu.toHost(idx).toLongArray();
                    }
                    assertExact(what + ": the experts", ids[0], ids[1]);
                    assertBitsEqual(what + ": the values", vals[0], vals[1]);
                    if (c[4] == 1) { // a logit past f32: the softmax's sum is not a number
                        assertTrue(Float.isNaN(vals[1][0]), what + ": value " + vals[1][0] + " where a logit is not finite");
                        continue;
                    }
                    int equalPairs = 0;
                    for (int k = 0; k < t; k++) {
                        for (int j = 1; j < topk; j++) {
                            if (vals[1][k * topk + j] == vals[1][k * topk + j - 1]) {
                                equalPairs++;
                                assertTrue(ids[1][k * topk + j - 1] < ids[1][k * topk + j], what + ", token " + k + ", pick " + j
                                        + ": an equal value after a higher expert");
                            }
                        }
                    }
                    if (topk >= 32) {
                        assertTrue(equalPairs >= t, what + ": the router's repeated rows made " + equalPairs + " equal picks");
                    }
                }
            }
        }
    }

    /**
     * A bf16-exact router [e, h] whose logits tie: expert j + 3 repeats expert j and every 7th expert's successor is a row
     * of zeros (logits of +0), for j = 0, 7, 14, ...
     */
    private static float[] tiedRouter(SplittableRandom r, int e, int h) {
        float[] w = bf16Round(randn(r, 0.2f, e, h).toFloatArray());
        for (int j = 0; j < e; j += 7) {
            if (j + 3 < e) {
                System.arraycopy(w, j * h, w, (j + 3) * h, h);
            }
            if (j + 1 < e) {
                Arrays.fill(w, (j + 1) * h, (j + 2) * h, 0f);
            }
        }
        return w;
    }

    /**
     * The router of x as it is ({@link CudaBackend#moeRouterTopk}: the router kernel without its norm), rollout's decode
     * router: the same selection check on x itself, in three runs (the tickets re-armed), 1, 5 and 64 tokens; a router
     * that is not bf16 is declined and nothing written.
     */
    @Test
    void routerTopkOfUnnormedRowsSelectsTheLargestProbabilities() {
        SplittableRandom r = rng(313);
        // {tokens, H, E, topk}; H 7168 and E 256: DeepSeek-V3's router
        int[][] cases = {{1, 2048, 128, 8}, {5, 256, 60, 3}, {64, 512, 128, 8}, {37, 2048, 128, 8}, {40, 7168, 256, 8}};
        for (int[] c : cases) {
            for (boolean normalize : new boolean[]{true, false}) {
                int t = c[0];
                int h = c[1];
                int e = c[2];
                int topk = c[3];
                String what = "moeRouterTopk tokens " + t + " H " + h + " E " + e + " top " + topk + (normalize ? " normalized" : "");
                float[] x = randn(r, 1f, t, h).toFloatArray();
                float[] w = bf16Round(randn(r, 0.2f, e, h).toFloatArray());
                Tensor dx = dev(Tensor.of(x, t, h));
                Tensor dw = dev(Tensor.of(w, e, h).to(DType.BF16));
                double[][] xd = new double[t][h];
                for (int i = 0; i < t * h; i++) {
                    xd[i / h][i % h] = x[i];
                }
                for (int run = 0; run < 3; run++) {
                    Tensor values = poisoned(DType.F32, t, topk);
                    Tensor ids = poisoned(DType.I32, t, topk);
                    assertTrue(gpu.moeRouterTopk(dx, dw, topk, normalize, values, ids), what + ": the fused router takes the call");
                    checkSelection(what + " (run " + run + ")", xd, w, e, h, topk, normalize, gpu.toHost(values).toFloatArray(),
                            gpu.toHost(ids).toLongArray());
                }
            }
        }
        Tensor values = poisoned(DType.F32, 1, 8);
        assertFalse(gpu.moeRouterTopk(dev(randn(r, 1f, 1, 256)), dev(randn(r, 0.2f, 64, 256)), 8, true, values,
                poisoned(DType.I32, 1, 8)), "an f32 router");
        for (float v : gpu.toHost(values).toFloatArray()) {
            assertTrue(Float.isNaN(v), "a declined call wrote " + v);
        }
    }

    /**
     * The residual add, the norm after the attention and the router in one launch ({@link CudaBackend#addRmsNormRouterTopk},
     * {@code moe_router_add_norm_topk}) against {@link CudaBackend#addRmsNorm} then {@link CudaBackend#moeRouterTopk} of its
     * norm: the sum bit for bit (the same f32 add), the norm within {@code 1e-6·|v| + 1e-7} (its sum of squares in another
     * order), the same experts and their weights within 1e-5 of each, at 1, 3 and 7 tokens (below the tiles' 8), hidden
     * 2048 with 128 experts at top 8 (f32 norm weight), 256 with 60 at top 3 and 4096 with 128 at top 8 (bf16 norm weight;
     * 4096 past the kernel's one pass over the row, where each thread norms its own values from registers) and 2048 with
     * 128 at top 8 again with a bf16 norm weight, with {@code
     * -Dorbit.cuda.addNormRouter=on}, every pick an expert with a positive weight; with {@code -Dorbit.cuda.routerPrologue=on}
     * the same bits, also as a dependent launch, and so with {@code -Dorbit.cuda.routerNormBits=on} (the norm weights
     * loaded as their bits); with the switch unset (on by default) the call taken. At 8 tokens (the
     * tiles' launch) and with {@code -Dorbit.cuda.addNormRouter=off} the call declines and writes nothing.
     */
    @Test
    void theAddTheNormAndTheRouterInOneLaunch() {
        withProperty(CudaDecodeRouter.ROUTER_TILES_PROPERTY, "8", () -> {   // the tiles from 8 tokens (the default)
            withProperty("orbit.cuda.addNormRouter", "on", this::addNormRouter);
            withProperty("orbit.cuda.addNormRouter", null, this::takenByDefault);
            declinedAddNormRouter();
        });
    }

    private void addNormRouter() {
        SplittableRandom r = rng(341);
        // {tokens, H, E, topk, bf16 norm weight}
        int[][] cases = {{1, 2048, 128, 8, 0}, {3, 2048, 128, 8, 0}, {7, 256, 60, 3, 1}, {2, 4096, 128, 8, 1}, {1, 2048, 128, 8, 1}};
        for (int[] c : cases) {
            int t = c[0];
            int h = c[1];
            int e = c[2];
            int topk = c[3];
            float[] x = randn(r, 1f, t, h).toFloatArray();
            float[] d = randn(r, 0.5f, t, h).toFloatArray();
            Tensor gHost = randn(r, 0.2f, h);
            for (int i = 0; i < h; i++) {
                gHost.setFloat(1f + gHost.getFloat(i), i);
            }
            Tensor g = dev(c[4] == 1 ? gHost.to(DType.BF16) : gHost);
            Tensor dx = dev(Tensor.of(x, t, h));
            Tensor dd = dev(Tensor.of(d, t, h));
            Tensor dw = dev(Tensor.of(bf16Round(randn(r, 0.2f, e, h).toFloatArray()), e, h).to(DType.BF16));
            String what = t + " tokens, H " + h + ", " + e + " experts at top " + topk;
            Tensor sum = poisoned(DType.F32, t, h);
            Tensor normed = poisoned(DType.F32, t, h);
            Tensor values = poisoned(DType.F32, t, topk);
            Tensor idx = poisoned(DType.I32, t, topk);
            withProperty(CudaDecodeRouter.ROUTER_PROLOGUE_PROPERTY, "off", () -> assertTrue(   // the plain kernel
                    gpu.addRmsNormRouterTopk(dx, dd, sum, g, 1e-6f, normed, dw, topk, true, values, idx), what + ": taken"));
            Tensor sumRef = poisoned(DType.F32, t, h);
            Tensor normedRef = poisoned(DType.F32, t, h);
            gpu.addRmsNorm(dx, dd, sumRef, g, 1e-6f, normedRef);
            Tensor valuesRef = poisoned(DType.F32, t, topk);
            Tensor idxRef = poisoned(DType.I32, t, topk);
            assertTrue(gpu.moeRouterTopk(normedRef, dw, topk, true, valuesRef, idxRef), what + ": the reference router");
            float[] sumGot = gpu.toHost(sum).toFloatArray();
            float[] sumWant = new float[t * h];
            for (int i = 0; i < sumWant.length; i++) {
                sumWant[i] = x[i] + d[i];
            }
            assertBitsEqual(what + ": the sum", sumWant, sumGot);
            float[] nWant = gpu.toHost(normedRef).toFloatArray();
            double[] tol = new double[nWant.length];
            for (int i = 0; i < tol.length; i++) {
                tol[i] = 1e-6 * Math.abs(nWant[i]) + 1e-7;
            }
            assertWithin(what + ": the norm", nWant, gpu.toHost(normed).toFloatArray(), tol);
            long[] chosen = gpu.toHost(idx).toLongArray();
            float[] weights = gpu.toHost(values).toFloatArray();
            for (int i = 0; i < chosen.length; i++) {
                assertTrue(chosen[i] >= 0 && chosen[i] < e && Float.isFinite(weights[i]) && weights[i] > 0,
                        what + ": pick " + i + " is expert " + chosen[i] + " at " + weights[i]);
            }
            assertExact(what + ": the experts", gpu.toHost(idxRef).toLongArray(), chosen);
            assertClose(what + ": their weights", gpu.toHost(valuesRef).toFloatArray(), weights, 1e-5, 0);
            // the router's prologue (moe_router_add_norm_topk_(rk_)pre) and its norm weights loaded as their bits
            // (moe_router_add_norm_topk_rk_pre_nb): the same bits, as a dependent launch too; each launch its own
            String[][] forms = {{"the router's prologue", CudaDecodeRouter.ROUTER_PROLOGUE_PROPERTY, "^moe_router_add_norm_topk(_rk)?_pre$"},
                    {"the norm weights as bits", CudaDecodeRouter.ROUTER_NORM_BITS_PROPERTY, "^moe_router_add_norm_topk_rk_pre_nb$"}};
            for (String[] form : forms) {
                for (boolean dependent : new boolean[]{false, true}) {
                    String f = what + ", " + form[0] + (dependent ? ", a dependent launch" : "");
                    Tensor sumPre = poisoned(DType.F32, t, h);
                    Tensor normedPre = poisoned(DType.F32, t, h);
                    Tensor valuesPre = poisoned(DType.F32, t, topk);
                    Tensor idxPre = poisoned(DType.I32, t, topk);
                    Tensor left = poisoned(DType.F32, t, topk);
                    gpu.dependentLaunches(dependent);
                    try {
                        withProperty(form[1], "on", () -> {
                            gpu.addRmsNorm(dx, dd, sumRef, g, 1e-6f, normedRef);   // a launch before it
                            assertTrue(gpu.addRmsNormRouterTopk(dx, dd, sumPre, g, 1e-6f, normedPre, dw, topk, true, valuesPre, idxPre),
                                    f);
                            withProperty("orbit.cuda.omitKernels", form[2], () -> assertTrue(gpu.addRmsNormRouterTopk(dx, dd,
                                    poisoned(DType.F32, t, h), g, 1e-6f, poisoned(DType.F32, t, h), dw, topk, true, left,
                                    poisoned(DType.I32, t, topk)), f));
                        });
                    } finally {
                        gpu.dependentLaunches(false);
                    }
                    assertBitsEqual(f + ": the sum", sumGot, gpu.toHost(sumPre).toFloatArray());
                    assertBitsEqual(f + ": the norm", gpu.toHost(normed).toFloatArray(), gpu.toHost(normedPre).toFloatArray());
                    assertBitsEqual(f + ": the weights", weights, gpu.toHost(valuesPre).toFloatArray());
                    assertExact(f + ": the experts", chosen, gpu.toHost(idxPre).toLongArray());
                    assertTrue(Float.isNaN(gpu.toHost(left).toFloatArray()[0]), f + ": the launch left out wrote its outputs");
                }
            }
        }
    }

    /** Unset, the switch takes the call at 2 tokens: the sum written, the experts those of the two launches. */
    private void takenByDefault() {
        SplittableRandom r = rng(343);
        int t = 2;
        int h = 256;
        Tensor g = dev(randn(r, 1f, h));
        Tensor dw = dev(Tensor.of(bf16Round(randn(r, 0.2f, 60, h).toFloatArray()), 60, h).to(DType.BF16));
        float[] x = randn(r, 1f, t, h).toFloatArray();
        float[] d = randn(r, 0.5f, t, h).toFloatArray();
        Tensor dx = dev(Tensor.of(x, t, h));
        Tensor dd = dev(Tensor.of(d, t, h));
        Tensor sum = poisoned(DType.F32, t, h);
        Tensor idx = poisoned(DType.I32, t, 3);
        assertTrue(gpu.addRmsNormRouterTopk(dx, dd, sum, g, 1e-6f, poisoned(DType.F32, t, h), dw, 3, true,
                poisoned(DType.F32, t, 3), idx), "taken with the switch unset");
        float[] sumWant = new float[t * h];
        for (int i = 0; i < sumWant.length; i++) {
            sumWant[i] = x[i] + d[i];
        }
        assertBitsEqual("the sum with the switch unset", sumWant, gpu.toHost(sum).toFloatArray());
        Tensor normedRef = poisoned(DType.F32, t, h);
        gpu.addRmsNorm(dx, dd, poisoned(DType.F32, t, h), g, 1e-6f, normedRef);
        Tensor idxRef = poisoned(DType.I32, t, 3);
        assertTrue(gpu.moeRouterTopk(normedRef, dw, 3, true, poisoned(DType.F32, t, 3), idxRef), "the reference router");
        assertExact("the experts with the switch unset", gpu.toHost(idxRef).toLongArray(), gpu.toHost(idx).toLongArray());
    }

    private void declinedAddNormRouter() {
        SplittableRandom r = rng(342);
        int h = 256;
        Tensor g = dev(randn(r, 1f, h));
        Tensor dw = dev(Tensor.of(bf16Round(randn(r, 0.2f, 60, h).toFloatArray()), 60, h).to(DType.BF16));
        for (int t : new int[]{8, 2}) {
            Tensor sum = poisoned(DType.F32, t, h);
            Tensor values = poisoned(DType.F32, t, 3);
            Runnable call = () -> assertFalse(gpu.addRmsNormRouterTopk(dev(randn(r, 1f, t, h)), dev(randn(r, 1f, t, h)), sum, g, 1e-6f,
                    poisoned(DType.F32, t, h), dw, 3, true, values, poisoned(DType.I32, t, 3)), t + " tokens declined");
            withProperty("orbit.cuda.addNormRouter", t == 8 ? "on" : "off", call);   // 8 tokens: the tiles' launch
            assertTrue(Float.isNaN(gpu.toHost(sum).toFloatArray()[0]) && Float.isNaN(gpu.toHost(values).toFloatArray()[0]),
                    t + " tokens: a declined call writes nothing");
        }
    }

    /**
     * The router of x as it is in tiles ({@code moe_router_tiles}, a block an expert chunk and a tile of tokens) against
     * the same call a block a token ({@code moe_router_norm_topk}, the switch off): the same values and indices bit for
     * bit, at 1 to 200 tokens (the tile kernel forced down to 1 token), hidden 2048 and 7168, 60 to 384 experts.
     */
    @Test
    void routerTilesEqualTheTokenBlocksBitForBit() {
        SplittableRandom r = rng(317);
        // {tokens, H, E, topk}
        int[][] cases = {{1, 2048, 128, 8}, {5, 256, 60, 3}, {8, 2048, 128, 8}, {64, 2048, 128, 8}, {37, 2048, 128, 8},
                {200, 512, 128, 8}, {40, 7168, 256, 8}, {19, 7168, 384, 8}};
        for (int[] c : cases) {
            int t = c[0];
            int h = c[1];
            int e = c[2];
            int topk = c[3];
            Tensor dx = dev(randn(r, 1f, t, h));
            Tensor dw = dev(Tensor.of(bf16Round(randn(r, 0.2f, e, h).toFloatArray()), e, h).to(DType.BF16));
            for (boolean normalize : new boolean[]{true, false}) {
                String what = "router tokens " + t + " H " + h + " E " + e + " top " + topk + (normalize ? " normalized" : "");
                float[][] vals = new float[2][];
                long[][] ids = new long[2][];
                String[] modes = {"off", "1"};
                for (int m = 0; m < 2; m++) {
                    int mode = m;
                    withProperty(CudaDecodeRouter.ROUTER_TILES_PROPERTY, modes[m], () -> {
                        Tensor values = poisoned(DType.F32, t, topk);
                        Tensor idx = poisoned(DType.I32, t, topk);
                        assertTrue(gpu.moeRouterTopk(dx, dw, topk, normalize, values, idx), what);
                        vals[mode] = gpu.toHost(values).toFloatArray();
                        ids[mode] = gpu.toHost(idx).toLongArray();
                    });
                }
                assertExact(what + ": indices", ids[0], ids[1]);
                assertBitsEqual(what + ": values", vals[0], vals[1]);
            }
        }
    }

    /**
     * Above {@value CudaMoePairs#DIRECT_PAIRS} pairs the tiled router also groups the pairs by expert in its own launch
     * ({@code moe_route}'s body in its last block) for the expert calls on the same ids: a grouped product over those ids
     * then launches no {@code moe_route}, and equals bit for bit the same product after the router with the grouping
     * switched off (which launches one), and the double reference within {@code 1e-6 + 2e-5·Σ|x·w|}. 64 tokens x 8 of
     * 128 experts (512 pairs), 20 x 8 of 60, 128 x 8 of 64 (1024 pairs, the most it groups).
     */
    @Test
    void theTiledRouterGroupsThePairsForTheExpertCalls() {
        SplittableRandom r = rng(331);
        int h = 256;
        int n = 48;
        int topk = 8;
        for (int[] c : new int[][]{{64, 128}, {20, 60}, {128, 64}}) {
            int tokens = c[0];
            int e = c[1];
            int pairs = tokens * topk;
            float[] x = randn(r, 1f, tokens, h).toFloatArray();
            Tensor dx = dev(Tensor.of(x, tokens, h));
            Tensor dw = dev(Tensor.of(bf16Round(randn(r, 0.2f, e, h).toFloatArray()), e, h).to(DType.BF16));
            float[][] we = new float[e][];
            Tensor[] wd = new Tensor[e];
            for (int i = 0; i < e; i++) {
                we[i] = randn(r, 0.1f, n, h).toFloatArray();
                wd[i] = dev(Tensor.of(we[i], n, h));
            }
            ExpertWeights experts = new ExpertWeights(n, h, wd, new QuantizedTensor[e]);
            String what = tokens + " tokens x " + topk + " of " + e + " experts";
            float[][] ys = new float[2][];
            long[][] ids = new long[2][];
            String[] modes = {"on", "off"};
            for (int m = 0; m < 2; m++) {
                int mode = m;
                withProperty(CudaDecodeRouter.ROUTER_GROUPS_PROPERTY, modes[m], () -> {
                    Tensor values = poisoned(DType.F32, tokens, topk);
                    Tensor idx = poisoned(DType.I32, tokens, topk);
                    assertTrue(gpu.moeRouterTopk(dx, dw, topk, true, values, idx), what);
                    int routes = gpu.moePairRoutes();
                    Tensor y = poisoned(DType.F32, pairs, n);
                    gpu.moeExpertMatmulPairs(dx, topk, experts, idx, 1f, y, false);
                    assertEquals(mode, gpu.moePairRoutes() - routes, what + ", grouping " + modes[mode] + ": moe_route launches");
                    ys[mode] = gpu.toHost(y).toFloatArray();
                    ids[mode] = gpu.toHost(idx).toLongArray();
                });
            }
            assertExact(what + ": the router's choice", ids[0], ids[1]);
            assertBitsEqual(what + ": y with moe_route's grouping against the router's", ys[1], ys[0]);
            float[] want = new float[pairs * n];
            double[] tol = new double[want.length];
            for (int p = 0; p < pairs; p++) {
                float[] w = we[(int) ids[0][p]];
                for (int o = 0; o < n; o++) {
                    double sum = 0;
                    double abs = 0;
                    for (int i = 0; i < h; i++) {
                        double v = (double) x[(p / topk) * h + i] * w[o * h + i];
                        sum += v;
                        abs += Math.abs(v);
                    }
                    want[p * n + o] = (float) sum;
                    tol[p * n + o] = 1e-6 + 2e-5 * abs;
                }
            }
            assertWithin(what, want, ys[0], tol);
        }
    }

    /** Each token's chosen experts: distinct, each with the reference's j-th largest probability, the values those probabilities. */
    static void checkSelection(String what, double[][] xn, float[] w, int e, int h, int topk, boolean normalize,
                                       float[] values, long[] ids) {
        for (int t = 0; t < xn.length; t++) {
            double[] p = new double[e];
            double[] pa = new double[e]; // Σ|x·w| of each logit
            double max = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < e; j++) {
                for (int q = 0; q < h; q++) {
                    double v = xn[t][q] * w[j * h + q];
                    p[j] += v;
                    pa[j] += Math.abs(v);
                }
                max = Math.max(max, p[j]);
            }
            double sum = 0;
            double logitTol = 0;
            for (int j = 0; j < e; j++) {
                logitTol = Math.max(logitTol, 1e-6 + 2e-5 * pa[j]);
                p[j] = Math.exp(p[j] - max);
                sum += p[j];
            }
            for (int j = 0; j < e; j++) {
                p[j] /= sum;
            }
            double[] sorted = p.clone();
            Arrays.sort(sorted);
            double picked = 0;
            for (int j = 0; j < topk; j++) {
                picked += sorted[e - 1 - j];
            }
            boolean[] seen = new boolean[e];
            for (int j = 0; j < topk; j++) {
                int id = (int) ids[t * topk + j];
                assertTrue(id >= 0 && id < e && !seen[id], what + ": token " + t + " slot " + j + " expert " + id + " (" + Arrays.toString(
                        Arrays.copyOfRange(ids, t * topk, t * topk + topk)) + ")");
                seen[id] = true;
                double want = sorted[e - 1 - j];
                double probTol = 1e-6 + 2 * logitTol * want; // a logit error δ moves a probability by about δ·p, twice with the sum
                assertEquals(want, p[id], probTol, what + ": token " + t + " slot " + j + " expert " + id + " has probability " + p[id]
                        + ", the reference's " + (j + 1) + "-th largest is " + want);
                double v = normalize ? want / picked : want;
                assertEquals(v, values[t * topk + j], 1e-6 + 4 * logitTol * v, what + ": token " + t + " slot " + j + " value");
            }
        }
    }
}
