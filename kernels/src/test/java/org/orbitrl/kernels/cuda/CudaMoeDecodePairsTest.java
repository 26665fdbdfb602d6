package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

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
class CudaMoeDecodePairsTest extends CudaTestBase {
    private static final String[] FORMATS = {"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"};

    /** Stacked experts of a format on the device, each a slice, and their dequantized reference [E·N, K]. */
    private record Experts(ExpertWeights w, float[] ref, QuantizedTensor stack) {
    }

    private Experts experts(String format, SplittableRandom r, int experts, int n, int k) {
        QuantizedTensor h = CudaQuantTest.random(format, r, experts * n, k);
        QuantizedTensor d = gpu.toDevice(h);
        QuantizedTensor[] q = new QuantizedTensor[experts];
        for (int e = 0; e < experts; e++) {
            q[e] = CudaMoeOps.expert(d, e, n);
        }
        return new Experts(new ExpertWeights(n, k, new Tensor[experts], q), CudaQuantTest.dequantizeRef(h), d);
    }

    /** Per expert an f32 B [n, rank] on the device, its host copy in bs. */
    private ExpertWeights loraB(SplittableRandom r, int experts, int n, int rank, float[][] bs) {
        Tensor[] d = new Tensor[experts];
        for (int e = 0; e < experts; e++) {
            bs[e] = randn(r, 0.5f, n, rank).toFloatArray();
            d[e] = dev(Tensor.of(bs[e], n, rank));
        }
        return new ExpertWeights(n, rank, d, new QuantizedTensor[experts]);
    }

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
     * One token's routed experts of 16 at Qwen3-30B-A3B's 768 rows with hidden 256, INT4 g32 (gate, up, down), down's
     * LoRA B of rank 8, a bf16 router and its norm weights, drawn from r in that order.
     */
    private record OneTokenLayer(Experts g, Experts u, Experts d, ExpertWeights b, Tensor router, Tensor nw) {
    }

    /** The router's choice, its input to the experts and gate/up's rows of {@link #routeGateUpDown}. */
    private record Routed(Tensor ids, Tensor wts, Tensor hx, Tensor act) {
    }

    /**
     * One token x [1, h] through the layer's router, gate/up (topk pairs of inter rows) and down (into out, added where
     * accumulate), each into buffers poisoned first; asserts that gate/up and down take the call.
     */
    private Routed routeGateUpDown(OneTokenLayer layer, Tensor x, int topk, int inter, Backend.PairLora pl, Tensor out,
                                   boolean accumulate, String what) {
        int h = x.size(-1);
        Routed c = new Routed(poisoned(DType.I32, 1, topk), poisoned(DType.F32, 1, topk), poisoned(DType.F32, 1, h),
                poisoned(DType.F32, topk, inter));
        gpu.fusedDecode().router().moeRouterNormTopk(x, layer.nw(), 1e-6f, layer.router(), topk, true, c.hx(), c.wts(), c.ids());
        assertTrue(gpu.moeSwigluPairs(c.hx(), topk, layer.g().w(), layer.u().w(), c.ids(), null, null, c.act()), what + ": gate/up");
        assertTrue(gpu.moeDownCombinePairs(c.act(), layer.d().w(), c.ids(), pl, c.wts(), out, accumulate), what + ": down");
        return c;
    }

    private OneTokenLayer oneTokenLayer(SplittableRandom r) {
        int e = 16;
        int h = 256;
        int inter = 768;
        Experts g = experts("int4-g32", r, e, inter, h);
        Experts u = experts("int4-g32", r, e, inter, h);
        Experts d = experts("int4-g32", r, e, h, inter);
        ExpertWeights b = loraB(r, e, h, 8, new float[e][]);
        Tensor router = dev(randn(r, 0.5f, e, h).to(DType.BF16));
        Tensor nw = dev(Tensor.of(CudaFusedDecodeTest.normWeights(r, h, false), h));
        return new OneTokenLayer(g, u, d, b, router, nw);
    }

    private void free(OneTokenLayer layer) {
        gpu.free(layer.g().stack());
        gpu.free(layer.u().stack());
        gpu.free(layer.d().stack());
    }

    /**
     * {@code -Dorbit.cuda.downPrologue=on} (the default): an INT4 down launch soon after the gate/up launch over the same
     * ids takes {@code qgemv_down_combine_pre_int4} (its ids and first weights read before its wait) and gives the bits of
     * the kernel it takes with {@code =off}, with the term and without, one token at top 8 of Qwen3-30B-A3B's 768-wide
     * experts (hidden 256 here). The ids and weights are the router's, written on the device into buffers of -1 each time
     * (an early read of the ids would find -1, out of range, reported), the router, gate/up and down chained as dependent
     * launches for the prologue form and as plain launches for the reference. A second down call with no gate/up launch
     * before it takes the plain kernel, and so does one from another thread. Each form is shown to be the launch by
     * leaving the other out (a left-out launch leaves its output poisoned).
     */
    @Test
    void downPrologueAfterGateUpGivesTheSameBits() {
        SplittableRandom r = rng(957);
        int h = 256;
        int inter = 768;
        int rank = 8;
        int topk = 8;
        OneTokenLayer layer = oneTokenLayer(r);
        Experts g = layer.g();
        Experts u = layer.u();
        Experts d = layer.d();
        ExpertWeights b = layer.b();
        Tensor router = layer.router();
        Tensor nw = layer.nw();
        try {
            for (boolean term : new boolean[]{false, true}) {
                String what = "one token at top 8" + (term ? ", with the LoRA" : "");
                Tensor x = dev(randn(r, 1f, 1, h));
                Backend.PairLora pl = term ? new Backend.PairLora(dev(randn(r, 1f, topk, rank)), b, 0.5f) : null;
                float[][] outs = new float[2][];
                for (int form = 0; form < 2; form++) {
                    boolean pre = form == 1;
                    Tensor ids = poisoned(DType.I32, 1, topk);
                    Tensor wts = poisoned(DType.F32, 1, topk);
                    Tensor hx = poisoned(DType.F32, 1, h);
                    Tensor act = poisoned(DType.F32, topk, inter);
                    Tensor out = poisoned(DType.F32, 1, h);
                    gpu.dependentLaunches(pre);
                    try {
                        withProperty(CudaMoeDecodePairs.DOWN_PROLOGUE_PROPERTY, pre ? "on" : "off", () -> withProperty(
                                "orbit.cuda.omitKernels", pre ? "^qgemv_down_combine_lora_int4$" : "^qgemv_down_combine_pre_int4$", () -> {
                                    gpu.fusedDecode().router().moeRouterNormTopk(x, nw, 1e-6f, router, topk, true, hx, wts, ids);
                                    assertTrue(gpu.moeSwigluPairs(hx, topk, g.w(), u.w(), ids, null, null, act), what + ": gate/up");
                                    assertTrue(gpu.moeDownCombinePairs(act, d.w(), ids, pl, wts, out, false), what + ": down");
                                }));
                    } finally {
                        gpu.dependentLaunches(false);
                    }
                    outs[form] = gpu.toHost(out).toFloatArray();
                    if (pre) {
                        // no gate/up launch since: the plain kernel (left out here, so out2 keeps its poison)
                        Tensor out2 = poisoned(DType.F32, 1, h);
                        withProperty("orbit.cuda.omitKernels", "^qgemv_down_combine_lora_int4$",
                                () -> assertTrue(gpu.moeDownCombinePairs(act, d.w(), ids, pl, wts, out2, false)));
                        assertTrue(Float.isNaN(gpu.toHost(out2).toFloatArray()[0]), what + ": a second down call took the prologue form");
                        // from another thread, right after this thread's gate/up launch: the plain kernel too
                        assertTrue(gpu.moeSwigluPairs(hx, topk, g.w(), u.w(), ids, null, null, act));
                        Tensor out3 = poisoned(DType.F32, 1, h);
                        boolean[] taken = new boolean[1];
                        Thread other = new Thread(() -> taken[0] = gpu.moeDownCombinePairs(act, d.w(), ids, pl, wts, out3, false));
                        withProperty("orbit.cuda.omitKernels", "^qgemv_down_combine_lora_int4$", () -> {
                            other.start();
                            try {
                                other.join();
                            } catch (InterruptedException ex) {
                                throw new IllegalStateException(ex);
                            }
                        });
                        assertTrue(taken[0], what + ": another thread's down call returned");
                        assertTrue(Float.isNaN(gpu.toHost(out3).toFloatArray()[0]),
                                what + ": another thread's down call took the prologue form");
                    }
                }
                for (float v : outs[0]) {
                    assertTrue(Float.isFinite(v), what + ": the plain down wrote " + v);
                }
                assertBitsEqual(what + ": the prologue form, dependent launches", outs[0], outs[1]);
            }
        } finally {
            free(layer);
        }
    }

    /**
     * {@link CudaMoeDecodePairs#DOWN_COPIES_PROPERTY}{@code =on}: the down prologue form whose loads after its wait are
     * asynchronous copies ({@code qgemv_down_combine_pre_cp_int4}) gives the plain prologue kernel's bits: the router,
     * gate/up and down chained as dependent launches, with the down launch's LoRA term and without, writing out and adding
     * to it (seeded values, the act rows, the weights and out all read by copies), one token at top 8 of 768-wide experts
     * (hidden 256). Each form is shown to be the launch by leaving the other out (a left-out launch leaves out as it was).
     */
    @Test
    void downCopiesGiveTheSameBits() {
        SplittableRandom r = rng(977);
        int h = 256;
        int inter = 768;
        int rank = 8;
        int topk = 8;
        OneTokenLayer layer = oneTokenLayer(r);
        try {
            for (boolean term : new boolean[]{false, true}) {
                for (boolean accumulate : new boolean[]{false, true}) {
                    String what = "one token at top 8" + (term ? ", with the LoRA" : "") + (accumulate ? ", added to out" : "");
                    Tensor x = dev(randn(r, 1f, 1, h));
                    float[] before = randn(r, 1f, 1, h).toFloatArray();
                    Backend.PairLora pl = term ? new Backend.PairLora(dev(randn(r, 1f, topk, rank)), layer.b(), 0.5f) : null;
                    float[][] outs = new float[2][];
                    for (int form = 0; form < 2; form++) {
                        boolean copies = form == 1;
                        Tensor out = accumulate ? dev(Tensor.of(before.clone(), 1, h)) : poisoned(DType.F32, 1, h);
                        gpu.dependentLaunches(true);
                        try {
                            withProperty(CudaMoeDecodePairs.DOWN_COPIES_PROPERTY, copies ? "on" : "off", () -> withProperty(
                                    "orbit.cuda.omitKernels", copies ? "^qgemv_down_combine_pre_int4$" : "^qgemv_down_combine_pre_cp_int4$",
                                    () -> routeGateUpDown(layer, x, topk, inter, pl, out, accumulate, what)));
                        } finally {
                            gpu.dependentLaunches(false);
                        }
                        outs[form] = gpu.toHost(out).toFloatArray();
                    }
                    int moved = 0;
                    for (int i = 0; i < h; i++) {
                        assertTrue(Float.isFinite(outs[0][i]), what + ": the plain kernel wrote " + outs[0][i] + " at " + i);
                        moved += outs[0][i] != before[i] ? 1 : 0;
                    }
                    assertTrue(moved > h / 2, what + ": the plain kernel changed " + moved + " of " + h + " values");
                    assertBitsEqual(what + ": the copies' form", outs[0], outs[1]);
                }
            }
        } finally {
            free(layer);
        }
    }

    /**
     * Where gate/up and down let the launch after them start ({@link CudaMoeDecodePairs#GATE_UP_TRIGGER_PROPERTY}{@code
     * =loads}, {@link CudaMoeDecodePairs#DOWN_TRIGGER_PROPERTY}{@code =staged} or {@code =early}) changes no value: the
     * router, gate/up (at four and six rows a lane), down and a second router over down's rows chained as dependent
     * launches give the bits of the chain with both at their wait, with the down launch's LoRA term and without, one token at top 8 of
     * 768-wide experts (hidden 256). Each late form is shown to be the launch by leaving its waiting kernel out.
     */
    @Test
    void lateTriggersGiveTheSameBits() {
        SplittableRandom r = rng(967);
        int h = 256;
        int inter = 768;
        int rank = 8;
        int topk = 8;
        OneTokenLayer layer = oneTokenLayer(r);
        Experts g = layer.g();
        Experts u = layer.u();
        Experts d = layer.d();
        ExpertWeights b = layer.b();
        Tensor router = layer.router();
        Tensor nw = layer.nw();
        try {
            for (String rows : new String[]{"4", "6"}) {
                for (boolean term : new boolean[]{false, true}) {
                    String what = "one token at top 8, " + rows + " rows a lane" + (term ? ", with the LoRA" : "");
                    Tensor x = dev(randn(r, 1f, 1, h));
                    Backend.PairLora pl = term ? new Backend.PairLora(dev(randn(r, 1f, topk, rank)), b, 0.5f) : null;
                    float[][][] got = new float[3][][];
                    for (int form = 0; form < 3; form++) {
                        boolean late = form > 0;
                        String downAt = form == 0 ? "wait" : form == 1 ? "staged" : "early";
                        Tensor ids = poisoned(DType.I32, 1, topk);
                        Tensor wts = poisoned(DType.F32, 1, topk);
                        Tensor hx = poisoned(DType.F32, 1, h);
                        Tensor act = poisoned(DType.F32, topk, inter);
                        Tensor out = poisoned(DType.F32, 1, h);
                        Tensor ids2 = poisoned(DType.I32, 1, topk);
                        Tensor wts2 = poisoned(DType.F32, 1, topk);
                        Tensor hx2 = poisoned(DType.F32, 1, h);
                        String omit = form == 0 ? "^qgemv_swiglu_lora_(r6_)?xfl_int4$|^qgemv_down_combine_pre_(lt|et)_int4$"
                                : form == 1 ? "^qgemv_swiglu_lora_(r6_)?xf_int4$|^qgemv_down_combine_pre_(et_)?int4$"
                                : "^qgemv_swiglu_lora_(r6_)?xf_int4$|^qgemv_down_combine_pre_(lt_)?int4$";
                        gpu.dependentLaunches(true);
                        try {
                            withProperty(CudaMoeDecodePairs.GATE_UP_TRIGGER_PROPERTY, late ? "loads" : "wait",
                                    () -> withProperty(CudaMoeDecodePairs.DOWN_TRIGGER_PROPERTY, downAt,
                                            () -> withProperty("orbit.cuda.swigluRows", rows,
                                                    () -> withProperty("orbit.cuda.omitKernels", omit, () -> {
                                var rt = gpu.fusedDecode().router();
                                rt.moeRouterNormTopk(x, nw, 1e-6f, router, topk, true, hx, wts, ids);
                                assertTrue(gpu.moeSwigluPairs(hx, topk, g.w(), u.w(), ids, null, null, act), what + ": gate/up");
                                assertTrue(gpu.moeDownCombinePairs(act, d.w(), ids, pl, wts, out, false), what + ": down");
                                rt.moeRouterNormTopk(out, nw, 1e-6f, router, topk, true, hx2, wts2, ids2);
                            }))));
                        } finally {
                            gpu.dependentLaunches(false);
                        }
                        got[form] = new float[][]{gpu.toHost(act).toFloatArray(), gpu.toHost(out).toFloatArray(),
                                gpu.toHost(hx2).toFloatArray(), gpu.toHost(wts2).toFloatArray(), intsAsFloats(gpu.toHost(ids2).toIntArray())};
                    }
                    String[] names = {"act", "down's rows", "the second router's normed rows", "its weights", "its experts"};
                    for (int i = 0; i < names.length; i++) {
                        for (float v : got[0][i]) {
                            assertTrue(Float.isFinite(v), what + ": " + names[i] + " at the wait hold " + v);
                        }
                        assertBitsEqual(what + ": " + names[i] + ", late triggers", got[0][i], got[1][i]);
                        assertBitsEqual(what + ": " + names[i] + ", down's trigger before its wait", got[0][i], got[2][i]);
                    }
                }
            }
        } finally {
            free(layer);
        }
    }

    private static float[] intsAsFloats(int[] v) {
        float[] f = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            f[i] = v[i];
        }
        return f;
    }

    /**
     * The router's choice left to the launches that read its logits ({@link CudaDecodeRouter#ROUTER_DEFER_PROPERTY}):
     * router, gate/up and down as a decode step chains them (dependent launches, the router's prologue form) give the
     * bits of the router that selects (the switch off): h, the experts, their weights, act and the combined rows. One
     * token at top 8 of 128 experts (the router's norm; and with the down launch's LoRA term) and three at top 4 of 100
     * (the router of x as it is, unnormalized weights), 64-wide experts; hidden 2048 (gate/up blocks of 8 warps, which
     * pick with the block forms) and 256 (blocks of one warp: router_select_warp's picks). With {@code moe_router_select} left
     * out the chain's outputs are the same: gate/up picked the experts and down chose them and their weights. Where
     * another launch comes between the router and gate/up, or between gate/up and down, {@code moe_router_select} makes
     * the choice first and the bits are the same; a host read right after the router has it made too (left out, the
     * weights keep their poison).
     */
    @Test
    void theRoutersChoiceLeftToGateUpAndDownGivesTheSameBits() {
        SplittableRandom r = rng(959);
        int inter = 64;
        int rank = 8;
        // {tokens, experts, topk, normalize and the norm, the LoRA term, hidden}
        for (int[] c : new int[][]{{1, 128, 8, 1, 0, 2048}, {1, 128, 8, 1, 1, 2048}, {3, 100, 4, 0, 0, 2048}, {1, 128, 8, 1, 0, 256}}) {
            int t = c[0];
            int e = c[1];
            int topk = c[2];
            boolean norm = c[3] == 1;
            int h = c[5];
            String what = t + " tokens at top " + topk + " of " + e + ", hidden " + h + (norm ? ", normed" : ", x as it is")
                    + (c[4] == 1 ? ", with the LoRA" : "");
            Experts g = experts("int4-g32", r, e, inter, h);
            Experts u = experts("int4-g32", r, e, inter, h);
            Experts d = experts("int4-g32", r, e, h, inter);
            try {
                float[][] bh = new float[e][];
                Backend.PairLora pl = c[4] == 1 ? new Backend.PairLora(dev(randn(r, 1f, t * topk, rank)), loraB(r, e, h, rank, bh), 0.5f)
                        : null;
                Tensor router = dev(randn(r, 0.5f, e, h).to(DType.BF16));
                Tensor nw = dev(Tensor.of(CudaFusedDecodeTest.normWeights(r, h, false), h));
                Tensor x = dev(randn(r, 1f, t, h));
                Tensor other = dev(randn(r, 1f, 4, 64));
                Tensor otherWeight = dev(randn(r, 1f, 64));
                Tensor otherOut = poisoned(DType.F32, 4, 64);
                // forms: 0 the router selects; 1 left to gate/up and down (moe_router_select left out); 2 another launch
                // between the router and gate/up; 3 another between gate/up and down
                float[][][] outs = new float[4][][];
                long[][] chosen = new long[4][];
                for (int form = 0; form < 4; form++) {
                    int f = form;
                    Tensor ids = poisoned(DType.I32, t, topk);
                    Tensor wts = poisoned(DType.F32, t, topk);
                    Tensor hx = norm ? poisoned(DType.F32, t, h) : x;
                    Tensor act = poisoned(DType.F32, t * topk, inter);
                    Tensor out = poisoned(DType.F32, t, h);
                    Runnable chain = () -> {
                        if (norm) {
                            gpu.fusedDecode().router().moeRouterNormTopk(x, nw, 1e-6f, router, topk, true, hx, wts, ids);
                        } else {
                            assertTrue(gpu.moeRouterTopk(x, router, topk, false, wts, ids), what + ": the router");
                        }
                        if (f == 2) {
                            gpu.rmsNorm(other, otherWeight, 1e-6f, otherOut);
                        }
                        assertTrue(gpu.moeSwigluPairs(hx, topk, g.w(), u.w(), ids, null, null, act), what + ": gate/up");
                        if (f == 3) {
                            gpu.rmsNorm(other, otherWeight, 1e-6f, otherOut);
                        }
                        assertTrue(gpu.moeDownCombinePairs(act, d.w(), ids, pl, wts, out, false), what + ": down");
                    };
                    gpu.dependentLaunches(true);
                    try {
                        String omit = form == 1 ? "^moe_router_select$" : "^nothing$";
                        withProperty(CudaDecodeRouter.ROUTER_DEFER_PROPERTY, form == 0 ? "off" : "on",
                                () -> withProperty("orbit.cuda.omitKernels", omit, chain));
                    } finally {
                        gpu.dependentLaunches(false);
                    }
                    outs[form] = new float[][]{gpu.toHost(out).toFloatArray(), gpu.toHost(act).toFloatArray(),
                            gpu.toHost(wts).toFloatArray(), gpu.toHost(hx).toFloatArray()};
                    chosen[form] = gpu.toHost(ids).toLongArray();
                }
                for (float v : outs[0][0]) {
                    assertTrue(Float.isFinite(v), what + ": the selecting router's chain wrote " + v);
                }
                for (int form = 1; form < 4; form++) {
                    String f = what + ", form " + form;
                    assertExact(f + ": the experts", chosen[0], chosen[form]);
                    assertBitsEqual(f + ": the weights", outs[0][2], outs[form][2]);
                    assertBitsEqual(f + ": h", outs[0][3], outs[form][3]);
                    assertBitsEqual(f + ": act", outs[0][1], outs[form][1]);
                    assertBitsEqual(f + ": the combined rows", outs[0][0], outs[form][0]);
                }
                // a host read right after the router: moe_router_select makes the choice (left out: the weights' poison)
                for (boolean omitted : new boolean[]{false, true}) {
                    Tensor ids = poisoned(DType.I32, t, topk);
                    Tensor wts = poisoned(DType.F32, t, topk);
                    float[][] read = new float[1][];
                    withProperty(CudaDecodeRouter.ROUTER_DEFER_PROPERTY, "on", () -> withProperty("orbit.cuda.omitKernels",
                            omitted ? "^moe_router_select$" : "^nothing$", () -> {
                                if (norm) {
                                    gpu.fusedDecode().router().moeRouterNormTopk(x, nw, 1e-6f, router, topk, true, poisoned(DType.F32, t, h),
                                            wts, ids);
                                } else {
                                    assertTrue(gpu.moeRouterTopk(x, router, topk, false, wts, ids), what + ": the router");
                                }
                                read[0] = gpu.toHost(wts).toFloatArray();
                            }));
                    if (omitted) {
                        assertTrue(Float.isNaN(read[0][0]), what + ": the weights were written without moe_router_select");
                    } else {
                        assertBitsEqual(what + ": the weights read on the host", outs[0][2], read[0]);
                        assertExact(what + ": the experts read on the host", chosen[0], gpu.toHost(ids).toLongArray());
                    }
                }
            } finally {
                gpu.free(g.stack());
                gpu.free(u.stack());
                gpu.free(d.stack());
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
