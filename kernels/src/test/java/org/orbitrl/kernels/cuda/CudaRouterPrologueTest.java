package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The decode router's prologue form ({@code -Dorbit.cuda.routerPrologue=on}: its router rows' loads, and its norm
 * weight's lines asked of the L2, before its wait) against the plain router kernels, bit for bit, on their own and as
 * dependent launches right after the launch that writes their input; each time the launch shown to be the prologue
 * kernel's by leaving it out.
 */
class CudaRouterPrologueTest extends CudaTestBase {
    private static final float EPS = 1e-6f;

    /**
     * {@code -Dorbit.cuda.routerPrologue=on}: {@code moe_router_norm_topk_pre} (its router rows' loads before its wait)
     * gives the plain kernel's h, values and experts bit for bit: 1, 5 and 2 tokens, H 2048, 256 and 4096 (one step of
     * loads a lane, a part of one, and two, the second after the wait), 62 experts (a block's warps past the last), twice
     * each (the tickets re-armed); and as a dependent launch right after the launch that writes its x (x = a + b by the
     * residual add and norm, {@code addRmsNorm}), the same bits as without dependent launches. The launch is the
     * prologue kernel's: left out, the outputs keep their poison.
     */
    @Test
    void routerPrologueGivesThePlainKernelsBits() {
        SplittableRandom r = rng(313);
        for (int[] shape : new int[][]{{1, 2048, 128, 8}, {5, 256, 60, 3}, {2, 4096, 62, 6}}) {
            Case c = routerCase(r, shape);
            float[][][] outs = new float[3][][];
            long[][] experts = new long[3][];
            Tensor normed = poisoned(DType.F32, c.t(), c.h());
            for (int form = 0; form < 3; form++) {  // plain, prologue, prologue as a dependent of the add
                boolean dependent = form == 2;
                String switched = form == 0 ? "off" : "on";
                String omit = form == 0 ? "^moe_router_norm_topk$" : "^moe_router_norm_topk(_rk)?_pre$";
                Tensor x = poisoned(DType.F32, c.t(), c.h());
                Tensor hOut = poisoned(DType.F32, c.t(), c.h());
                Tensor values = poisoned(DType.F32, c.t(), c.topk());
                Tensor ids = poisoned(DType.I32, c.t(), c.topk());
                Tensor hLeft = poisoned(DType.F32, c.t(), c.h());
                Tensor valuesLeft = poisoned(DType.F32, c.t(), c.topk());
                Tensor idsLeft = poisoned(DType.I32, c.t(), c.topk());
                gpu.dependentLaunches(dependent);
                try {
                    withProperty(CudaDecodeRouter.ROUTER_PROLOGUE_PROPERTY, switched, () -> {
                        for (int run = 0; run < 2; run++) {
                            gpu.addRmsNorm(c.a(), c.b(), x, c.dnw(), EPS, normed);
                            gpu.fusedDecode().router().moeRouterNormTopk(x, c.dnw(), EPS, c.dw(), c.topk(), true, hOut, values, ids);
                        }
                        withProperty("orbit.cuda.omitKernels", omit,
                                () -> gpu.fusedDecode().router().moeRouterNormTopk(x, c.dnw(), EPS, c.dw(), c.topk(), true, hLeft, valuesLeft, idsLeft));
                    });
                } finally {
                    gpu.dependentLaunches(false);
                }
                outs[form] = new float[][]{gpu.toHost(hOut).toFloatArray(), gpu.toHost(values).toFloatArray()};
                experts[form] = gpu.toHost(ids).toLongArray();
                assertTrue(Float.isNaN(gpu.toHost(hLeft).toFloatArray()[0]) && Float.isNaN(gpu.toHost(valuesLeft).toFloatArray()[0]),
                        c.what() + ", form " + form + ": the launch left out wrote its outputs");
            }
            for (float v : outs[0][1]) {
                assertTrue(v > 0f && v <= 1f, c.what() + ": a selected probability " + v);
            }
            for (int form = 1; form < 3; form++) {
                String f = c.what() + (form == 2 ? ", a dependent launch" : "");
                assertBitsEqual(f + ": h", outs[0][0], outs[form][0]);
                assertBitsEqual(f + ": values", outs[0][1], outs[form][1]);
                assertArrayEquals(experts[0], experts[form], f + ": experts");
            }
        }
    }

    /**
     * The same switch where the router takes x as it is ({@link CudaBackend#moeRouterTopk} at a decode step's few tokens:
     * {@code moe_router_norm_topk_pre} without its norm): the plain kernel's values and experts bit for bit, 1 and 5
     * tokens, also as a dependent launch right after the residual add and norm that writes its x; the launch is the
     * prologue kernel's (left out, the outputs keep their poison).
     */
    @Test
    void routerPrologueOfNormedRowsGivesThePlainKernelsBits() {
        SplittableRandom r = rng(314);
        for (int[] shape : new int[][]{{1, 2048, 128, 8}, {5, 256, 60, 3}}) {
            Case c = routerCase(r, shape);
            float[][] vals = new float[3][];
            long[][] experts = new long[3][];
            for (int form = 0; form < 3; form++) {  // plain, prologue, prologue as a dependent of the add and norm
                String omit = form == 0 ? "^moe_router_norm_topk$" : "^moe_router_norm_topk(_rk)?_pre$";
                Tensor sum = poisoned(DType.F32, c.t(), c.h());
                Tensor normed = poisoned(DType.F32, c.t(), c.h());
                Tensor values = poisoned(DType.F32, c.t(), c.topk());
                Tensor ids = poisoned(DType.I32, c.t(), c.topk());
                Tensor valuesLeft = poisoned(DType.F32, c.t(), c.topk());
                Tensor idsLeft = poisoned(DType.I32, c.t(), c.topk());
                boolean[] took = new boolean[2];
                gpu.dependentLaunches(form == 2);
                try {
                    withProperty(CudaDecodeRouter.ROUTER_PROLOGUE_PROPERTY, form == 0 ? "off" : "on", () -> {
                        for (int run = 0; run < 2; run++) {
                            gpu.addRmsNorm(c.a(), c.b(), sum, c.dnw(), EPS, normed);
                            took[0] = gpu.moeRouterTopk(normed, c.dw(), c.topk(), true, values, ids);
                        }
                        withProperty("orbit.cuda.omitKernels", omit, () -> took[1] = gpu.moeRouterTopk(normed, c.dw(), c.topk(), true, valuesLeft, idsLeft));
                    });
                } finally {
                    gpu.dependentLaunches(false);
                }
                assertTrue(took[0] && took[1], c.what() + ", form " + form + ": the router declined");
                vals[form] = gpu.toHost(values).toFloatArray();
                experts[form] = gpu.toHost(ids).toLongArray();
                assertTrue(Float.isNaN(gpu.toHost(valuesLeft).toFloatArray()[0]), c.what() + ", form " + form + ": the launch left out wrote its outputs");
            }
            for (float v : vals[0]) {
                assertTrue(v > 0f && v <= 1f, c.what() + ": a selected probability " + v);
            }
            for (int form = 1; form < 3; form++) {
                String f = c.what() + (form == 2 ? ", a dependent launch" : "");
                assertBitsEqual(f + ": values", vals[0], vals[form]);
                assertArrayEquals(experts[0], experts[form], f + ": experts");
            }
        }
    }

    /**
     * {@link CudaBackend#prefetchFrozen} with {@code -Dorbit.cuda.l2Ahead=on} and {@code =bulk}: the next router launch (here {@code
     * moeRouterTopk} at 1 and 3 tokens, right after the add and norm that writes its x, under dependent launches) takes
     * {@code moe_router_norm_topk_pre} with the asks (a 20 MiB bf16 weight, a slice not 16-byte aligned, which is left
     * out, an f32 tensor whose bytes are not a multiple of 16, and two more, the last past the three a launch carries) and gives
     * the plain kernel's values and experts bit for bit, the asked tensors unchanged; the asks are carried once (the
     * launch after takes the plain kernel), and with the switch off the router takes the plain kernel (the router's
     * prologue switch off throughout, so that a launch without asks is the plain kernel's). Each launch is shown by
     * leaving its kernel out: the outputs keep their poison.
     */
    @Test
    void framesAskedOfTheL2LeaveTheRoutersBitsAndAreCarriedOnce() {
        withProperty(CudaDecodeRouter.ROUTER_PROLOGUE_PROPERTY, "off", this::asksCarriedOnce);
    }

    private void asksCarriedOnce() {
        SplittableRandom r = rng(315);
        Tensor big = dev(randn(r, 0.1f, 5120, 2048).to(DType.BF16)); // 20 MiB, the q/k/v weights' order of size
        Tensor odd = dev(randn(r, 1f, 333));                           // 1332 bytes
        Tensor misaligned = dev(randn(r, 1f, 64)).slice(0, 1, 63);    // 4 bytes past a 16-byte boundary
        Tensor fourth = dev(randn(r, 1f, 4096));
        Tensor fifth = dev(randn(r, 1f, 4096));
        float[][] before = {gpu.toHost(big).toFloatArray(), gpu.toHost(odd).toFloatArray()};
        for (int[] shape : new int[][]{{1, 2048, 128, 8}, {3, 256, 60, 3}}) {
            Case c = routerCase(r, shape);
            Tensor sum = dev(randn(r, 1f, c.t(), c.h()));
            Tensor normed = dev(randn(r, 1f, c.t(), c.h()));
            gpu.addRmsNorm(c.a(), c.b(), sum, c.dnw(), EPS, normed);
            // form 0 plain (switch off, asks given); 1 and 3 asks carried (a line each, in bulk); 2 and 4 the launch after
            // (asks spent)
            float[][] vals = new float[5][];
            long[][] experts = new long[5][];
            String[] launched = {"^moe_router_norm_topk$", "^moe_router_norm_topk(_rk)?_pre$", "^moe_router_norm_topk$",
                    "^moe_router_norm_topk(_rk)?_pre$", "^moe_router_norm_topk$"};
            String[] mode = {"off", "on", "on", "bulk", "bulk"};
            gpu.dependentLaunches(true);
            try {
                for (int form = 0; form < 5; form++) {
                    int f = form;
                    boolean ask = form == 0 || form % 2 == 1;
                    Tensor values = poisoned(DType.F32, c.t(), c.topk());
                    Tensor ids = poisoned(DType.I32, c.t(), c.topk());
                    Tensor valuesLeft = poisoned(DType.F32, c.t(), c.topk());
                    Tensor idsLeft = poisoned(DType.I32, c.t(), c.topk());
                    boolean[] took = new boolean[2];
                    withProperty(CudaBackend.L2_AHEAD_PROPERTY, mode[form], () -> {
                        gpu.addRmsNorm(c.a(), c.b(), sum, c.dnw(), EPS, normed);
                        if (ask) {
                            gpu.prefetchFrozen(big, misaligned, odd, fourth, fifth);
                        }
                        withProperty("orbit.cuda.omitKernels", launched[f], () -> took[1] = gpu.moeRouterTopk(normed, c.dw(), c.topk(), true, valuesLeft, idsLeft));
                        if (ask) {
                            gpu.prefetchFrozen(big, misaligned, odd, fourth, fifth);
                        }
                        took[0] = gpu.moeRouterTopk(normed, c.dw(), c.topk(), true, values, ids);
                    });
                    assertTrue(took[0] && took[1], c.what() + ", form " + form + ": the router declined");
                    assertTrue(Float.isNaN(gpu.toHost(valuesLeft).toFloatArray()[0]),
                            c.what() + ", form " + form + ": the launch left out (" + launched[form] + ") wrote its outputs");
                    vals[form] = gpu.toHost(values).toFloatArray();
                    experts[form] = gpu.toHost(ids).toLongArray();
                }
            } finally {
                gpu.dependentLaunches(false);
            }
            for (float v : vals[0]) {
                assertTrue(v > 0f && v <= 1f, c.what() + ": a selected probability " + v);
            }
            for (int form = 1; form < 5; form++) {
                assertBitsEqual(c.what() + ", form " + form + ": values", vals[0], vals[form]);
                assertArrayEquals(experts[0], experts[form], c.what() + ", form " + form + ": experts");
            }
        }
        assertBitsEqual("the asked weight", before[0], gpu.toHost(big).toFloatArray());
        assertBitsEqual("the asked f32 tensor", before[1], gpu.toHost(odd).toFloatArray());
    }

    /** A router case: t tokens of width h, e experts, the top topk; rows a and b, a norm weight and bf16 router rows. */
    private record Case(int t, int h, int e, int topk, String what, Tensor a, Tensor b, Tensor dnw, Tensor dw) {
    }

    /** The case of shape {tokens, hidden, experts, top k}, its tensors drawn from r in that order. */
    private Case routerCase(SplittableRandom r, int[] shape) {
        int t = shape[0];
        int h = shape[1];
        int e = shape[2];
        Tensor a = dev(randn(r, 2f, t, h));
        Tensor b = dev(randn(r, 1f, t, h));
        Tensor dnw = dev(Tensor.of(CudaFusedDecodeTest.normWeights(r, h, false), h));
        Tensor dw = dev(randn(r, 0.2f, e, h).to(DType.BF16));
        return new Case(t, h, e, shape[3], "tokens " + t + " H " + h + " E " + e + " top " + shape[3], a, b, dnw, dw);
    }
}
