package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A decode step's routed experts of few tokens with their LoRA terms in two GEMV launches ({@link CudaMoeDecodePairs}):
 * gate, up, their terms and the SwiGLU ({@link CudaBackend#moeSwigluPairs}), and down, its term and the weighting into
 * the tokens ({@link CudaBackend#moeDownCombinePairs}), for every quantized layout, against double references that read
 * x in f32 and the weights through the format's own decoder. Tolerance of a product with its term: {@code 1e-6 +
 * 1e-5·(Σ|x·w| + |s|·Σ|lo·b|)} (f32 sums in another order); act and the combined rows carry it as stated at each check.
 */
class CudaMoeDecodePairsTest extends DecodePairsTestBase {
    private static final String[] FORMATS = {"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"};

    /**
     * act = silu(x·G_eᵀ + s_g·lo_g·Bg_eᵀ) · (x·U_eᵀ + s_u·lo_u·Bu_eᵀ): one token at top 8 (x a row a token), two at top 4
     * with x a row a pair, three at top 5; both terms, the gate's alone, none; 104 rows (a multiple of 8, as asymmetric
     * INT4 experts need, and not of a block's 16 or 24) and K of 256 and 768, four rows a lane ({@code
     * -Dorbit.cuda.swigluRows=4}, x staged behind the weights: {@code -Dorbit.cuda.swigluXFirst=off}). act within {@code
     * 1e-6 + 1.1·e_g·|u| +
     * |silu(g)|·e_u + 1e-6·|act|}; with six rows a lane ({@code =6}, the four-row launch left out) the same bits, and with x
     * staged first ({@link CudaMoeDecodePairs#X_FIRST_PROPERTY}, the plain kernels left out) at four and six, letting
     * the launch after them start at their wait and once their loads are issued ({@link
     * CudaMoeDecodePairs#GATE_UP_TRIGGER_PROPERTY}).
     */
    @Test
    void gateUpTheirTermsAndTheSwigluForEveryLayout() {
        SplittableRandom r = rng(951);
        int e = 16;
        int n = 104;
        int rank = 8;
        for (String format : FORMATS) {
            for (int k : new int[]{256, 768}) {
                Experts g = experts(format, r, e, n, k);
                Experts u = experts(format, r, e, n, k);
                float[][] bgh = new float[e][];
                float[][] buh = new float[e][];
                ExpertWeights bg = loraB(r, e, n, rank, bgh);
                ExpertWeights bu = loraB(r, e, n, rank, buh);
                try {
                    // {tokens, topk, x per pair, terms: 3 both, 1 the gate's, 0 none}
                    for (int[] c : new int[][]{{1, 8, 0, 3}, {2, 4, 1, 1}, {3, 5, 0, 0}}) {
                        int tokens = c[0];
                        int topk = c[1];
                        boolean perPair = c[2] == 1;
                        int pairs = tokens * topk;
                        int xDiv = perPair ? 1 : topk;
                        float[] x = randn(r, 1f, perPair ? pairs : tokens, k).toFloatArray();
                        int[] ids = CudaFusedDecodeTest.routes(r, tokens, topk, e);
                        float[] log = randn(r, 1f, pairs, rank).toFloatArray();
                        float[] lou = randn(r, 1f, pairs, rank).toFloatArray();
                        float sg = 0.75f;
                        float su = -1.25f;
                        boolean withGate = (c[3] & 1) != 0;
                        boolean withUp = (c[3] & 2) != 0;
                        Backend.PairLora gl = withGate ? new Backend.PairLora(dev(Tensor.of(log, pairs, rank)), bg, sg) : null;
                        Backend.PairLora ul = withUp ? new Backend.PairLora(dev(Tensor.of(lou, pairs, rank)), bu, su) : null;
                        float[] want = new float[pairs * n];
                        double[] tol = new double[want.length];
                        for (int p = 0; p < pairs; p++) {
                            int ex = ids[p];
                            for (int o = 0; o < n; o++) {
                                double[] gs = product(x, (p / xDiv) * k, g.ref(), (ex * n + o) * k, k);
                                double[] us = product(x, (p / xDiv) * k, u.ref(), (ex * n + o) * k, k);
                                for (int j = 0; j < rank; j++) {
                                    if (withGate) {
                                        double v = sg * (double) log[p * rank + j] * bgh[ex][o * rank + j];
                                        gs[0] += v;
                                        gs[1] += Math.abs(v);
                                    }
                                    if (withUp) {
                                        double v = su * (double) lou[p * rank + j] * buh[ex][o * rank + j];
                                        us[0] += v;
                                        us[1] += Math.abs(v);
                                    }
                                }
                                double silu = gs[0] / (1 + Math.exp(-gs[0]));
                                double a = silu * us[0];
                                want[p * n + o] = (float) a;
                                tol[p * n + o] = 1e-6 + 1.1 * (1e-6 + 1e-5 * gs[1]) * Math.abs(us[0])
                                        + Math.abs(silu) * (1e-6 + 1e-5 * us[1]) + 1e-6 * Math.abs(a);
                            }
                        }
                        String what = format + ", K " + k + ", " + tokens + " tokens at top " + topk + (perPair ? ", x per pair" : "")
                                + (withGate ? ", gate's LoRA" : "") + (withUp ? ", up's LoRA" : "");
                        Tensor xd = dev(Tensor.of(x, perPair ? pairs : tokens, k));
                        Tensor idsd = dev(Tensor.ofInts(ids, tokens, topk));
                        Tensor act = poisoned(DType.F32, pairs, n);
                        withProperty(CudaMoeDecodePairs.X_FIRST_PROPERTY, "off", () -> withProperty("orbit.cuda.swigluRows", "4",
                                () -> assertTrue(gpu.moeSwigluPairs(xd, xDiv, g.w(), u.w(), idsd, gl, ul, act),
                                        what + ": the GEMV launch takes the call")));
                        float[] got = gpu.toHost(act).toFloatArray();
                        assertWithin(what, want, got, tol);
                        // six rows a lane (fewer, larger blocks): the same sums bit for bit, from its own launch
                        Tensor act6 = poisoned(DType.F32, pairs, n);
                        withProperty(CudaMoeDecodePairs.X_FIRST_PROPERTY, "off", () -> withProperty("orbit.cuda.swigluRows", "6",
                                () -> withProperty("orbit.cuda.omitKernels", "^qgemv_swiglu_lora_[imn]",
                                        () -> assertTrue(gpu.moeSwigluPairs(xd, xDiv, g.w(), u.w(), idsd, gl, ul, act6)))));
                        assertBitsEqual(what + ", 6 rows a lane", got, gpu.toHost(act6).toFloatArray());
                        // x staged first (the _xf kernels, the plain ones left out; and the _xfl ones, which let the
                        // launch after them start later, the _xf left out): the same bits at 4 and 6 rows a lane
                        for (String rows : new String[]{"4", "6"}) {
                            for (String trigger : new String[]{"wait", "loads"}) {
                                Tensor actXf = poisoned(DType.F32, pairs, n);
                                String omit = trigger.equals("wait") ? "^qgemv_swiglu_lora_(r6_)?([imn]|xfl_)" : "^qgemv_swiglu_lora_(r6_)?([imn]|xf_)";
                                withProperty(CudaMoeDecodePairs.X_FIRST_PROPERTY, "on", () -> withProperty("orbit.cuda.swigluRows",
                                        rows, () -> withProperty(CudaMoeDecodePairs.GATE_UP_TRIGGER_PROPERTY, trigger,
                                                () -> withProperty("orbit.cuda.omitKernels", omit,
                                                        () -> assertTrue(gpu.moeSwigluPairs(xd, xDiv, g.w(), u.w(), idsd, gl, ul, actXf))))));
                                assertBitsEqual(what + ", x first, " + rows + " rows a lane, trigger at " + trigger, got,
                                        gpu.toHost(actXf).toFloatArray());
                            }
                        }
                    }
                } finally {
                    gpu.free(g.stack());
                    gpu.free(u.stack());
                }
            }
        }
    }

    /**
     * out (+)= Σ_j w[t, j]·(act[t·k + j]·D_eᵀ + s·lo·B_eᵀ), j in order: one token at top 8 and three at top 5, with the
     * term and without, added into out and overwriting it; 160 rows (not a multiple of a block's 8), K of 768 and 256; and
     * one token at top 6 of K 2048 (48 KiB of act rows in shared memory). Tolerance
     * {@code 1e-6 + 1e-5·Σ_j |w_j|·(Σ|act·d| + |s|·Σ|lo·b|) + 1e-6·|out0|}.
     */
    @Test
    void downItsTermAndTheCombineForEveryLayout() {
        SplittableRandom r = rng(953);
        int e = 16;
        int n = 160;
        int rank = 12;
        for (String format : FORMATS) {
            for (int k : new int[]{768, 256, 2048}) {
                Experts d = experts(format, r, e, n, k);
                float[][] bh = new float[e][];
                ExpertWeights b = loraB(r, e, n, rank, bh);
                try {
                    // {tokens, topk, with the term, accumulate}; top 6 of K 2048 (DeepSeek V4-Flash's experts): 48 KiB of act
                    // rows, the most the kernel may take beside its static shared memory without opting in to more
                    int[][] cases = k == 2048 ? new int[][]{{1, 6, 1, 0}, {1, 6, 0, 1}} : new int[][]{{1, 8, 1, 1}, {1, 8, 0, 0}, {3, 5, 1, 0}};
                    for (int[] c : cases) {
                        int tokens = c[0];
                        int topk = c[1];
                        boolean term = c[2] == 1;
                        boolean accumulate = c[3] == 1;
                        int pairs = tokens * topk;
                        float[] act = randn(r, 1f, pairs, k).toFloatArray();
                        int[] ids = CudaFusedDecodeTest.routes(r, tokens, topk, e);
                        float[] lo = randn(r, 1f, pairs, rank).toFloatArray();
                        float[] wts = new float[pairs];
                        for (int i = 0; i < pairs; i++) {
                            wts[i] = 0.05f + (float) r.nextDouble();
                        }
                        float[] out0 = randn(r, 1f, tokens, n).toFloatArray();
                        float s = -0.5f;
                        float[] want = new float[tokens * n];
                        double[] tol = new double[want.length];
                        for (int t = 0; t < tokens; t++) {
                            for (int o = 0; o < n; o++) {
                                double v = accumulate ? out0[t * n + o] : 0;
                                double abs = 0;
                                for (int j = 0; j < topk; j++) {
                                    int p = t * topk + j;
                                    int ex = ids[p];
                                    double[] y = product(act, p * k, d.ref(), (ex * n + o) * k, k);
                                    for (int q = 0; q < rank && term; q++) {
                                        double tv = s * (double) lo[p * rank + q] * bh[ex][o * rank + q];
                                        y[0] += tv;
                                        y[1] += Math.abs(tv);
                                    }
                                    v += wts[p] * y[0];
                                    abs += Math.abs(wts[p]) * y[1];
                                }
                                want[t * n + o] = (float) v;
                                tol[t * n + o] = 1e-6 + 1e-5 * abs + (accumulate ? 1e-6 * Math.abs(out0[t * n + o]) : 0);
                            }
                        }
                        String what = format + ", K " + k + ", " + tokens + " tokens at top " + topk + (term ? ", with the LoRA" : "")
                                + (accumulate ? ", added" : "");
                        Tensor out = accumulate ? dev(Tensor.of(out0, tokens, n)) : poisoned(DType.F32, tokens, n);
                        Backend.PairLora pl = term ? new Backend.PairLora(dev(Tensor.of(lo, pairs, rank)), b, s) : null;
                        assertTrue(gpu.moeDownCombinePairs(dev(Tensor.of(act, pairs, k)), d.w(), dev(Tensor.ofInts(ids, tokens, topk)),
                                pl, dev(Tensor.of(wts, tokens, topk)), out, accumulate), what + ": the GEMV launch takes the call");
                        assertWithin(what, want, gpu.toHost(out).toFloatArray(), tol);
                    }
                } finally {
                    gpu.free(d.stack());
                }
            }
        }
    }

    /**
     * From {@link CudaMoePairs#STACKED_PAIRS} pairs (two tokens at top 8) the down launch declines (the grouped
     * tensor-core products take such calls), and so does every call with {@code -Dorbit.cuda.moeDecodePairs=off}; a
     * declined call writes nothing.
     */
    @Test
    void atTheBoundAndSwitchedOffTheCallsDecline() {
        SplittableRandom r = rng(955);
        int e = 16;
        int n = 64;
        int k = 256;
        Experts d = experts("int4-g32", r, e, n, k);
        try {
            int tokens = CudaMoePairs.STACKED_PAIRS / 8;
            Tensor act = dev(randn(r, 1f, tokens * 8, k));
            Tensor ids = dev(Tensor.ofInts(CudaFusedDecodeTest.routes(r, tokens, 8, e), tokens, 8));
            Tensor wts = dev(randn(r, 1f, tokens, 8));
            Tensor out = poisoned(DType.F32, tokens, n);
            assertFalse(gpu.moeDownCombinePairs(act, d.w(), ids, null, wts, out, false), CudaMoePairs.STACKED_PAIRS + " pairs");
            Tensor act1 = dev(randn(r, 1f, 8, k));
            Tensor ids1 = dev(Tensor.ofInts(CudaFusedDecodeTest.routes(r, 1, 8, e), 1, 8));
            Tensor out1 = poisoned(DType.F32, 1, n);
            withProperty("orbit.cuda.moeDecodePairs", "off", () -> assertFalse(gpu.moeDownCombinePairs(act1, d.w(), ids1, null,
                    dev(randn(r, 1f, 1, 8)), out1, false), "switched off"));
            for (Tensor t : new Tensor[]{out, out1}) {
                for (float v : gpu.toHost(t).toFloatArray()) {
                    assertTrue(Float.isNaN(v), "a declined call wrote " + v);
                }
            }
        } finally {
            gpu.free(d.stack());
        }
    }

    /** {Σ x·w, Σ |x·w|} over k values from x[xo] and w[wo], in double. */
    private static double[] product(float[] x, int xo, float[] w, int wo, int k) {
        double s = 0;
        double abs = 0;
        for (int i = 0; i < k; i++) {
            double v = (double) x[xo + i] * w[wo + i];
            s += v;
            abs += Math.abs(v);
        }
        return new double[]{s, abs};
    }
}
