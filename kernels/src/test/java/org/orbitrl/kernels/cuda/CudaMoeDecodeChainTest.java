package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The decode pairs' launch forms chained with the router as a decode step chains them ({@link CudaMoeDecodePairs}):
 * the down launch's prologue, its asynchronous copies, the late triggers of gate/up and down, and the router's choice
 * left to gate/up and down each give the bits of the plain chain, one token at top 8 of Qwen3-30B-A3B's 768-wide
 * experts (hidden 256). Each form is shown to be the launch by leaving the other out. The launches' values against
 * references are {@link CudaMoeDecodePairsTest}'s.
 */
class CudaMoeDecodeChainTest extends DecodePairsTestBase {
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
}
