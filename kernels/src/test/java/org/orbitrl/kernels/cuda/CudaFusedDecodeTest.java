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
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The fused decode operations ({@link CudaFusedDecode}) against references computed here in double
 * from the inputs (the quantized weights through the format classes' own decoders), and against the
 * unfused launches where those take the same arithmetic.
 *
 * <p>Tolerances. A product {@code Σ a_i·w_i} of exact weights and f32 arithmetic is within
 * {@code 1e-6 + 2e-5·Σ|a_i·w_i|} of the double sum (f32 accumulation over K ≤ 2048, plus the norm's
 * relative error of a few f32 units carried into a_i). A normalized value is within
 * {@code 1e-6 + 1e-5·|ref|}. SwiGLU: {@code 1e-6 + 1.1·tolG·|u| + |silu(g)|·tolU}. The router's
 * selection: near-ties may be ordered differently in f32 than in double, so each chosen expert's
 * reference probability must equal the reference's j-th largest within the probability tolerance, and
 * no expert twice. The fused gate/up/SwiGLU launch (both of its shapes) also agrees with the unfused
 * launches within the sum of both sides' bounds.
 */
class CudaFusedDecodeTest extends CudaTestBase {
    private static final float EPS = 1e-6f;

    @Test
    void rmsNormMatmulMatchesTheDoubleReference() {
        SplittableRandom r = rng(311);
        int[][] cases = {{1, 2048, 517}, {3, 256, 70}, {4, 1024, 33}, {6, 256, 40}, {1, 64, 9}}; // {M, K, N}; M = 6: norm, then product
        for (int[] c : cases) {
            for (boolean bf16Norm : new boolean[]{false, true}) {
                for (boolean accumulate : new boolean[]{false, true}) {
                    int m = c[0];
                    int k = c[1];
                    int n = c[2];
                    String what = "rmsNormMatmul M " + m + " K " + k + " N " + n + (bf16Norm ? " bf16 norm" : " f32 norm")
                            + (accumulate ? " accumulate" : "");
                    float[] x = randn(r, 2f, m, k).toFloatArray();
                    float[] nw = normWeights(r, k, bf16Norm);
                    float[] w = bf16Round(randn(r, 0.05f, n, k).toFloatArray());
                    float[] y0 = randn(r, 1f, m, n).toFloatArray();
                    Tensor y = dev(Tensor.of(accumulate ? y0 : nanArray(m * n), m, n));
                    Tensor normT = Tensor.of(nw, k);
                    gpu.fusedDecode().rmsNormMatmul(dev(Tensor.of(x, m, k)), dev(bf16Norm ? normT.to(DType.BF16) : normT), EPS,
                            dev(Tensor.of(w, n, k).to(DType.BF16)), y, accumulate);
                    double[][] xn = normalize(x, nw, m, k);
                    float[] ref = new float[m * n];
                    double[] tol = new double[m * n];
                    for (int i = 0; i < m; i++) {
                        for (int o = 0; o < n; o++) {
                            double s = 0;
                            double sa = 0;
                            for (int q = 0; q < k; q++) {
                                double v = xn[i][q] * w[o * k + q];
                                s += v;
                                sa += Math.abs(v);
                            }
                            double base = accumulate ? y0[i * n + o] : 0;
                            ref[i * n + o] = (float) (base + s);
                            tol[i * n + o] = 1e-6 + 2e-5 * sa + Math.ulp((float) Math.abs(base + s));
                        }
                    }
                    assertWithin(what, ref, gpu.toHost(y).toFloatArray(), tol);
                }
            }
        }
    }

    @Test
    void routerNormTopkWritesTheNormAndSelectsTheLargestProbabilities() {
        SplittableRandom r = rng(312);
        int[][] cases = {{1, 2048, 128, 8}, {5, 256, 60, 3}, {64, 512, 128, 8}, {2, 128, 9, 9}}; // {tokens, H, E, topk}
        for (int[] c : cases) {
            for (boolean normalize : new boolean[]{true, false}) {
                int t = c[0];
                int h = c[1];
                int e = c[2];
                int topk = c[3];
                String what = "moeRouterNormTopk tokens " + t + " H " + h + " E " + e + " top " + topk + (normalize ? " normalized" : "");
                float[] x = randn(r, 2f, t, h).toFloatArray();
                float[] nw = normWeights(r, h, false);
                float[] w = bf16Round(randn(r, 0.2f, e, h).toFloatArray());
                Tensor dx = dev(Tensor.of(x, t, h));
                Tensor dnw = dev(Tensor.of(nw, h));
                Tensor dw = dev(Tensor.of(w, e, h).to(DType.BF16));
                double[][] xn = normalize(x, nw, t, h);
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
     * 2048 with 128 experts at top 8 (f32 norm weight) and 256 with 60 at top 3 (bf16 norm weight), with {@code
     * -Dorbit.cuda.addNormRouter=on}, every pick an expert with a positive weight; with {@code -Dorbit.cuda.routerPrologue=on}
     * the same bits, also as a dependent launch. At 8 tokens (the tiles' launch) and with the switch off (its default) the
     * call declines and writes nothing.
     */
    @Test
    void theAddTheNormAndTheRouterInOneLaunch() {
        withProperty(CudaDecodeRouter.ROUTER_TILES_PROPERTY, "8", () -> {   // the tiles from 8 tokens (the default)
            withProperty("orbit.cuda.addNormRouter", "on", this::addNormRouter);
            declinedAddNormRouter();
        });
    }

    private void addNormRouter() {
        SplittableRandom r = rng(341);
        // {tokens, H, E, topk, bf16 norm weight}
        int[][] cases = {{1, 2048, 128, 8, 0}, {3, 2048, 128, 8, 0}, {7, 256, 60, 3, 1}};
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
            assertTrue(gpu.addRmsNormRouterTopk(dx, dd, sum, g, 1e-6f, normed, dw, topk, true, values, idx), what + ": taken");
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
            // the router's prologue (moe_router_add_norm_topk_pre): the same bits, as a dependent launch too; the launch its own
            for (boolean dependent : new boolean[]{false, true}) {
                String f = what + ", the router's prologue" + (dependent ? ", a dependent launch" : "");
                Tensor sumPre = poisoned(DType.F32, t, h);
                Tensor normedPre = poisoned(DType.F32, t, h);
                Tensor valuesPre = poisoned(DType.F32, t, topk);
                Tensor idxPre = poisoned(DType.I32, t, topk);
                Tensor left = poisoned(DType.F32, t, topk);
                gpu.dependentLaunches(dependent);
                try {
                    withProperty(CudaDecodeRouter.ROUTER_PROLOGUE_PROPERTY, "on", () -> {
                        gpu.addRmsNorm(dx, dd, sumRef, g, 1e-6f, normedRef);   // a launch before it
                        assertTrue(gpu.addRmsNormRouterTopk(dx, dd, sumPre, g, 1e-6f, normedPre, dw, topk, true, valuesPre, idxPre), f);
                        withProperty("orbit.cuda.omitKernels", "^moe_router_add_norm_topk_pre$", () -> assertTrue(gpu.addRmsNormRouterTopk(
                                dx, dd, poisoned(DType.F32, t, h), g, 1e-6f, poisoned(DType.F32, t, h), dw, topk, true, left,
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

    @Test
    void swigluPairsMatchesTheReferenceAndTheUnfusedLaunches() {
        SplittableRandom r = rng(313);
        int experts = 16;
        int topk = 4;
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            for (int[] c : new int[][]{{1, 72, 2048}, {3, 40, 256}}) { // {tokens, I, K}
                int tokens = c[0];
                int n = c[1];
                int k = c[2];
                for (boolean perPair : new boolean[]{false, true}) {
                    String what = "moeSwigluPairs " + format + " tokens " + tokens + " I " + n + " K " + k + (perPair ? ", x per pair" : "");
                    QuantizedTensor gate = CudaQuantTest.random(format, r, experts * n, k);
                    QuantizedTensor up = CudaQuantTest.random(format, r, experts * n, k);
                    float[] gw = CudaQuantTest.dequantizeRef(gate);
                    float[] uw = CudaQuantTest.dequantizeRef(up);
                    QuantizedTensor dGate = gpu.toDevice(gate);
                    QuantizedTensor dUp = gpu.toDevice(up);
                    try {
                        int pairs = tokens * topk;
                        int rows = perPair ? pairs : tokens;
                        float[] x = randn(r, 1f, rows, k).toFloatArray();
                        int[] ids = routes(r, tokens, topk, experts);
                        Tensor dx = dev(Tensor.of(x, rows, k));
                        Tensor dIds = dev(Tensor.ofInts(ids, tokens, topk));
                        int rowsBefore = gpu.fusedDecode().gateUpRowsPerLane();
                        float[][] shapes = new float[2][];
                        try {
                            for (int shape = 0; shape < 2; shape++) {
                                gpu.fusedDecode().gateUpRowsPerLane(shape == 0 ? 4 : 2);
                                Tensor act = poisoned(DType.F32, pairs, n);
                                gpu.fusedDecode().moeSwigluPairs(dx, dGate, dUp, experts, dIds, act);
                                shapes[shape] = gpu.toHost(act).toFloatArray();
                            }
                        } finally {
                            gpu.fusedDecode().gateUpRowsPerLane(rowsBefore);
                        }

                        int div = perPair ? 1 : topk;
                        float[] ref = new float[pairs * n];
                        double[] tol = new double[ref.length];
                        for (int p = 0; p < pairs; p++) {
                            for (int o = 0; o < n; o++) {
                                double[] g = dot(x, (p / div) * k, gw, (ids[p] * n + o) * k, k);
                                double[] u = dot(x, (p / div) * k, uw, (ids[p] * n + o) * k, k);
                                double silu = g[0] / (1 + Math.exp(-g[0]));
                                ref[p * n + o] = (float) (silu * u[0]);
                                double tolG = 1e-6 + 1e-5 * g[1];
                                double tolU = 1e-6 + 1e-5 * u[1];
                                tol[p * n + o] = 1e-6 + 1.1 * tolG * Math.abs(u[0]) + Math.abs(silu) * tolU;
                            }
                        }
                        assertWithin(what + " (4 rows a lane) vs the reference", ref, shapes[0], tol);
                        assertWithin(what + " (2 rows a lane) vs the reference", ref, shapes[1], tol);

                        Tensor g = poisoned(DType.F32, pairs, n);
                        Tensor u = poisoned(DType.F32, pairs, n);
                        Tensor a = poisoned(DType.F32, pairs, n);
                        gpu.moe().moeMatmulQuantized(dx, dGate, experts, dIds, g);
                        gpu.moe().moeMatmulQuantized(dx, dUp, experts, dIds, u);
                        gpu.swiglu(g, u, a);
                        double[] both = new double[tol.length];
                        for (int i = 0; i < both.length; i++) {
                            both[i] = 2 * tol[i];
                        }
                        assertWithin(what + " vs gate, up and SwiGLU launched apart", gpu.toHost(a).toFloatArray(), shapes[0], both);
                    } finally {
                        gpu.free(dGate);
                        gpu.free(dUp);
                    }
                }
            }
        }
    }

    @Test
    void downCombineAddsTheWeightedExpertsIntoTheResidual() {
        SplittableRandom r = rng(314);
        int experts = 16;
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            for (int[] c : new int[][]{{1, 8, 2048, 768}, {3, 4, 70, 256}, {2, 1, 33, 64}}) { // {tokens, topk, H, I}
                for (boolean normalize : new boolean[]{false, true}) {
                    for (boolean accumulate : new boolean[]{true, false}) {
                        int tokens = c[0];
                        int topk = c[1];
                        int n = c[2];
                        int k = c[3];
                        String what = "moeDownCombine " + format + " tokens " + tokens + " top " + topk + " H " + n + " I " + k
                                + (normalize ? " normalized" : "") + (accumulate ? " accumulate" : "");
                        QuantizedTensor down = CudaQuantTest.random(format, r, experts * n, k);
                        float[] dw = CudaQuantTest.dequantizeRef(down);
                        QuantizedTensor dDown = gpu.toDevice(down);
                        try {
                            int pairs = tokens * topk;
                            float[] act = randn(r, 1f, pairs, k).toFloatArray();
                            int[] ids = routes(r, tokens, topk, experts);
                            float[] wts = new float[pairs];
                            for (int i = 0; i < pairs; i++) {
                                wts[i] = (float) (0.05 + r.nextDouble());
                            }
                            float[] out0 = randn(r, 1f, tokens, n).toFloatArray();
                            Tensor out = dev(Tensor.of(accumulate ? out0 : nanArray(tokens * n), tokens, n));
                            gpu.fusedDecode().moeDownCombine(dev(Tensor.of(act, pairs, k)), dDown, experts,
                                    dev(Tensor.ofInts(ids, tokens, topk)), dev(Tensor.of(wts, tokens, topk)), normalize, out, accumulate);
                            float[] ref = new float[tokens * n];
                            double[] tol = new double[ref.length];
                            for (int t = 0; t < tokens; t++) {
                                double wsum = 0;
                                for (int j = 0; j < topk; j++) {
                                    wsum += wts[t * topk + j];
                                }
                                double cn = normalize ? 1 / wsum : 1;
                                for (int o = 0; o < n; o++) {
                                    double s = 0;
                                    double sa = 0;
                                    for (int j = 0; j < topk; j++) {
                                        int p = t * topk + j;
                                        double[] d = dot(act, p * k, dw, (ids[p] * n + o) * k, k);
                                        s += wts[p] * d[0];
                                        sa += wts[p] * d[1];
                                    }
                                    double base = accumulate ? out0[t * n + o] : 0;
                                    ref[t * n + o] = (float) (base + cn * s);
                                    tol[t * n + o] = 1e-6 + 2e-5 * cn * sa + Math.ulp((float) Math.abs(base + cn * s));
                                }
                            }
                            assertWithin(what, ref, gpu.toHost(out).toFloatArray(), tol);
                        } finally {
                            gpu.free(dDown);
                        }
                    }
                }
            }
        }
    }

    @Test
    void expertIdsOutsideTheLayerAreReportedAndShapesChecked() {
        SplittableRandom r = rng(315);
        QuantizedTensor g = gpu.toDevice(CudaQuantTest.random("int4-g32", r, 4 * 32, 64));
        QuantizedTensor u = gpu.toDevice(CudaQuantTest.random("int4-g32", r, 4 * 32, 64));
        QuantizedTensor d = gpu.toDevice(CudaQuantTest.random("int4-g32", r, 4 * 64, 32));
        try {
            Tensor ids = dev(Tensor.ofInts(new int[]{1, 4}, 1, 2));
            gpu.fusedDecode().moeSwigluPairs(dev(randn(r, 1f, 1, 64)), g, u, 4, ids, poisoned(DType.F32, 2, 32));
            IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
            assertTrue(e.getMessage().contains("expert id 4"), e.getMessage());
            gpu.fusedDecode().moeDownCombine(dev(randn(r, 1f, 2, 32)), d, 4, ids, dev(randn(r, 1f, 1, 2)), false,
                    dev(randn(r, 1f, 1, 64)), true);
            e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
            assertTrue(e.getMessage().contains("expert id 4"), e.getMessage());
            IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> gpu.fusedDecode().moeSwigluPairs(
                    dev(randn(r, 1f, 1, 48)), g, u, 4, dev(Tensor.ofInts(new int[]{1, 2}, 1, 2)), poisoned(DType.F32, 2, 32)));
            assertTrue(bad.getMessage().contains("moeSwigluPairs"), bad.getMessage());
        } finally {
            gpu.free(g);
            gpu.free(u);
            gpu.free(d);
        }
    }

    /** topk distinct experts a token, seeded. */
    static int[] routes(SplittableRandom r, int tokens, int topk, int experts) {
        int[] ids = new int[tokens * topk];
        for (int t = 0; t < tokens; t++) {
            boolean[] used = new boolean[experts];
            for (int j = 0; j < topk; j++) {
                int e;
                do {
                    e = r.nextInt(experts);
                } while (used[e]);
                used[e] = true;
                ids[t * topk + j] = e;
            }
        }
        return ids;
    }

    static float[] normWeights(SplittableRandom r, int k, boolean bf16) {
        float[] w = new float[k];
        for (int i = 0; i < k; i++) {
            w[i] = (float) (0.5 + r.nextDouble());
        }
        return bf16 ? bf16Round(w) : w;
    }

    /** w · (x / sqrt(mean(x²) + eps)) per row, in double. */
    static double[][] normalize(float[] x, float[] w, int m, int k) {
        double[][] out = new double[m][k];
        for (int i = 0; i < m; i++) {
            double ss = 0;
            for (int q = 0; q < k; q++) {
                ss += (double) x[i * k + q] * x[i * k + q];
            }
            double inv = 1 / Math.sqrt(ss / k + EPS);
            for (int q = 0; q < k; q++) {
                out[i][q] = w[q] * (x[i * k + q] * inv);
            }
        }
        return out;
    }

    /** {Σ a·w, Σ|a·w|} of a[ao ..] and w[wo ..] over k. */
    static double[] dot(float[] a, int ao, float[] w, int wo, int k) {
        double s = 0;
        double sa = 0;
        for (int i = 0; i < k; i++) {
            double v = (double) a[ao + i] * w[wo + i];
            s += v;
            sa += Math.abs(v);
        }
        return new double[]{s, sa};
    }

    private static float[] nanArray(int n) {
        float[] v = new float[n];
        Arrays.fill(v, Float.NaN);
        return v;
    }
}
