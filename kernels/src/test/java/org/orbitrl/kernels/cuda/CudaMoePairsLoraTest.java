package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Launcher;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The per-pair decode experts' LoRA launches against references computed here in double from the inputs, or against the
 * bits of the launches they stand for: gate, up, their terms and the SwiGLU in one tensor-core launch ({@link
 * CudaBackend#moeSwigluPairs}), a projection and its term in one ({@link CudaBackend#moeExpertMatmulPairsLora}), two
 * LoRAs' A over the same pairs in one launch, and the A kernels' loads through shared memory. The pair products
 * without terms are {@link CudaMoePairsTest}'s.
 *
 * <p>Tolerance of a product with its term, {@code x·W_eᵀ + s·lo·B_eᵀ} in f32 arithmetic: {@code 1e-6 + 1e-5·(Σ|x·w| +
 * |s|·Σ|lo·b|)}, each test saying how it reaches its output.
 */
class CudaMoePairsLoraTest extends CudaTestBase {
    /**
     * Gate, up, their LoRA terms and the SwiGLU in one tensor-core launch ({@link CudaBackend#moeSwigluPairs}) for INT4
     * experts back to back, against a double reference of {@code silu(x·G_eᵀ + s_g·lo_g·Bg_eᵀ) · (x·U_eᵀ + s_u·lo_u·Bu_eᵀ)}
     * with x rounded to bf16 (as the tensor-core products round it): with both terms, one, none; x per token and per
     * pair; 5 to 32 pairs an expert (8-row chunks in four stages and two blocks an SM, or two stages and three, from
     * {@code orbit.cuda.moeGateUpStages}; 16-row chunks above 6). Below {@link CudaMoePairs#STACKED_PAIRS} pairs the GEMV
     * launch takes the call ({@link CudaMoeDecodePairs}: the reference then with f32 x), and with it off the call
     * declines and writes nothing. Tolerance: each of g and u within {@code e = 1e-6 + 1e-5·(Σ|x·w| + |s|·Σ|lo·b|)}, so
     * act within {@code 1e-6 + 1.1·e_g·|u| + |silu(g)|·e_u + 1e-6·|act|}.
     */
    @Test
    void gateUpTheirLoraTermsAndTheSwigluInOneLaunch() {
        SplittableRandom r = rng(911);
        int experts = 16;
        int n = 96;
        int k = 256;
        int rank = 8;
        for (String format : new String[]{"int4-g32", "int4-g32-asym"}) {
            QuantizedTensor hg = CudaQuantTest.random(format, r, experts * n, k);
            QuantizedTensor hu = CudaQuantTest.random(format, r, experts * n, k);
            float[] wg = CudaQuantTest.dequantizeRef(hg);
            float[] wu = CudaQuantTest.dequantizeRef(hu);
            QuantizedTensor dg = gpu.toDevice(hg);
            QuantizedTensor du = gpu.toDevice(hu);
            try {
                QuantizedTensor[] qg = new QuantizedTensor[experts];
                QuantizedTensor[] qu = new QuantizedTensor[experts];
                Tensor[] bg = new Tensor[experts];
                Tensor[] bu = new Tensor[experts];
                float[][] bgh = new float[experts][];
                float[][] buh = new float[experts][];
                for (int e = 0; e < experts; e++) {
                    qg[e] = CudaMoeOps.expert(dg, e, n);
                    qu[e] = CudaMoeOps.expert(du, e, n);
                    bgh[e] = randn(r, 0.5f, n, rank).toFloatArray();
                    buh[e] = randn(r, 0.5f, n, rank).toFloatArray();
                    bg[e] = dev(Tensor.of(bgh[e], n, rank));
                    bu[e] = dev(Tensor.of(buh[e], n, rank));
                }
                ExpertWeights gate = new ExpertWeights(n, k, new Tensor[experts], qg);
                ExpertWeights up = new ExpertWeights(n, k, new Tensor[experts], qu);
                ExpertWeights gateB = new ExpertWeights(n, rank, bg, new QuantizedTensor[experts]);
                ExpertWeights upB = new ExpertWeights(n, rank, bu, new QuantizedTensor[experts]);
                // {tokens, topk, x per pair, terms: 3 both, 1 gate's, 2 up's, 0 none}
                for (int[] c : new int[][]{{16, 8, 0, 3}, {64, 8, 0, 3}, {20, 4, 1, 1}, {24, 4, 0, 3}, {32, 4, 0, 2}, {16, 8, 1, 0}, {3, 4, 0, 3}}) {
                    int tokens = c[0];
                    int topk = c[1];
                    boolean perPair = c[2] == 1;
                    boolean withGate = (c[3] & 1) != 0;
                    boolean withUp = (c[3] & 2) != 0;
                    int pairs = tokens * topk;
                    int xRows = perPair ? pairs : tokens;
                    int xDiv = perPair ? 1 : topk;
                    float[] x = randn(r, 1f, xRows, k).toFloatArray();
                    boolean below = pairs < CudaMoePairs.STACKED_PAIRS;   // the GEMV launch: f32 x
                    float[] xr = below ? x : bf16Round(x);
                    int[] ids = CudaFusedDecodeTest.routes(r, tokens, topk, experts);
                    float[] log = randn(r, 1f, pairs, rank).toFloatArray();
                    float[] lou = randn(r, 1f, pairs, rank).toFloatArray();
                    float sg = 0.75f;
                    float su = -1.25f;
                    Backend.PairLora gl = withGate ? new Backend.PairLora(dev(Tensor.of(log, pairs, rank)), gateB, sg) : null;
                    Backend.PairLora ul = withUp ? new Backend.PairLora(dev(Tensor.of(lou, pairs, rank)), upB, su) : null;
                    Tensor act = poisoned(DType.F32, pairs, n);
                    String what = format + ", " + pairs + " pairs" + (perPair ? ", x per pair" : "") + (withGate ? ", gate's LoRA" : "")
                            + (withUp ? ", up's LoRA" : "");
                    Tensor dx = dev(Tensor.of(x, xRows, k));
                    Tensor dIds = dev(Tensor.ofInts(ids, tokens, topk));
                    if (below) {
                        withProperty("orbit.cuda.moeDecodePairs", "off", () -> assertTrue(!gpu.moeSwigluPairs(dx, xDiv, gate, up, dIds,
                                gl, ul, act), what + ": below the bound, the GEMV launch off, the call declines"));
                        float[] got = gpu.toHost(act).toFloatArray();
                        for (float v : got) {
                            assertTrue(Float.isNaN(v), what + ": a declined call writes nothing");
                        }
                    }
                    float[] want = new float[pairs * n];
                    double[] tol = new double[want.length];
                    for (int p = 0; p < pairs; p++) {
                        int e = ids[p];
                        for (int o = 0; o < n; o++) {
                            double g = 0;
                            double u = 0;
                            double ag = 0;
                            double au = 0;
                            for (int i = 0; i < k; i++) {
                                double xv = xr[(p / xDiv) * k + i];
                                g += xv * wg[(e * n + o) * k + i];
                                u += xv * wu[(e * n + o) * k + i];
                                ag += Math.abs(xv * wg[(e * n + o) * k + i]);
                                au += Math.abs(xv * wu[(e * n + o) * k + i]);
                            }
                            for (int j = 0; j < rank; j++) {
                                if (withGate) {
                                    g += sg * (double) log[p * rank + j] * bgh[e][o * rank + j];
                                    ag += Math.abs(sg * (double) log[p * rank + j] * bgh[e][o * rank + j]);
                                }
                                if (withUp) {
                                    u += su * (double) lou[p * rank + j] * buh[e][o * rank + j];
                                    au += Math.abs(su * (double) lou[p * rank + j] * buh[e][o * rank + j]);
                                }
                            }
                            double silu = g / (1 + Math.exp(-g));
                            double a = silu * u;
                            want[p * n + o] = (float) a;
                            tol[p * n + o] = 1e-6 + 1.1 * (1e-6 + 1e-5 * ag) * Math.abs(u) + Math.abs(silu) * (1e-6 + 1e-5 * au)
                                    + 1e-6 * Math.abs(a);
                        }
                    }
                    if (below) {
                        assertTrue(gpu.moeSwigluPairs(dx, xDiv, gate, up, dIds, gl, ul, act), what + ": the GEMV launch takes the call");
                        assertWithin(what + " (GEMV launch)", want, gpu.toHost(act).toFloatArray(), tol);
                        continue;
                    }
                    // 8-row chunks in four stages and two blocks an SM (the default), in two stages and three blocks
                    for (String stages : new String[]{"auto", "2"}) {
                        withProperty("orbit.cuda.moeGateUpStages", stages, () -> {
                            String v = what + " (gate-up stages " + stages + ")";
                            Tensor out = poisoned(DType.F32, pairs, n);
                            assertTrue(gpu.moeSwigluPairs(dx, xDiv, gate, up, dIds, gl, ul, out), v + ": stacked INT4 experts take the fused launch");
                            assertWithin(v, want, gpu.toHost(out).toFloatArray(), tol);
                        });
                    }
                }
            } finally {
                gpu.free(dg);
                gpu.free(du);
            }
        }
    }

    /**
     * A projection and its LoRA term in one tensor-core launch ({@link CudaBackend#moeExpertMatmulPairsLora}: rollout's
     * down product) for INT4 experts back to back, against a double reference of {@code x·W_eᵀ + s·lo·B_eᵀ} with x rounded
     * to bf16: short K (three, four and two blocks an SM) and a K of 1024 (four stages, two blocks); x per pair and per token; 8 and 32 pairs an expert; below
     * {@link CudaMoePairs#STACKED_PAIRS} pairs the call declines and writes nothing. Tolerance:
     * {@code 1e-6 + 1e-5·(Σ|x·w| + |s|·Σ|lo·b|)}.
     */
    @Test
    void aProjectionAndItsLoraTermInOneLaunch() {
        SplittableRandom r = rng(913);
        int experts = 16;
        int n = 160;
        int rank = 12;
        for (int k : new int[]{192, 1024}) {
            String format = k == 192 ? "int4-g32" : "int4-g32-asym";
            QuantizedTensor hw = CudaQuantTest.random(format, r, experts * n, k);
            float[] wf = CudaQuantTest.dequantizeRef(hw);
            QuantizedTensor dw = gpu.toDevice(hw);
            try {
                QuantizedTensor[] q = new QuantizedTensor[experts];
                Tensor[] bs = new Tensor[experts];
                float[][] bh = new float[experts][];
                for (int e = 0; e < experts; e++) {
                    q[e] = CudaMoeOps.expert(dw, e, n);
                    bh[e] = randn(r, 0.5f, n, rank).toFloatArray();
                    bs[e] = dev(Tensor.of(bh[e], n, rank));
                }
                ExpertWeights w = new ExpertWeights(n, k, new Tensor[experts], q);
                ExpertWeights b = new ExpertWeights(n, rank, bs, new QuantizedTensor[experts]);
                // {tokens, topk, x per pair}
                for (int[] c : new int[][]{{16, 8, 1}, {64, 8, 1}, {24, 4, 0}, {2, 4, 1}}) {
                    int tokens = c[0];
                    int topk = c[1];
                    boolean perPair = c[2] == 1;
                    int pairs = tokens * topk;
                    int xRows = perPair ? pairs : tokens;
                    int xDiv = perPair ? 1 : topk;
                    float[] x = randn(r, 1f, xRows, k).toFloatArray();
                    float[] xr = bf16Round(x);
                    int[] ids = CudaFusedDecodeTest.routes(r, tokens, topk, experts);
                    float[] lo = randn(r, 1f, pairs, rank).toFloatArray();
                    float scale = 1.5f;
                    Tensor y = poisoned(DType.F32, pairs, n);
                    String what = format + ", K " + k + ", " + pairs + " pairs" + (perPair ? ", x per pair" : "");
                    Tensor dx = dev(Tensor.of(x, xRows, k));
                    Tensor dIds = dev(Tensor.ofInts(ids, tokens, topk));
                    Backend.PairLora pl = new Backend.PairLora(dev(Tensor.of(lo, pairs, rank)), b, scale);
                    if (pairs < CudaMoePairs.STACKED_PAIRS) {
                        assertTrue(!gpu.moeExpertMatmulPairsLora(dx, xDiv, w, dIds, pl, y), what + ": below the bound the call declines");
                        for (float v : gpu.toHost(y).toFloatArray()) {
                            assertTrue(Float.isNaN(v), what + ": a declined call writes nothing");
                        }
                        continue;
                    }
                    float[] want = new float[pairs * n];
                    double[] tol = new double[want.length];
                    for (int p = 0; p < pairs; p++) {
                        int e = ids[p];
                        for (int o = 0; o < n; o++) {
                            double d = 0;
                            double abs = 0;
                            for (int i = 0; i < k; i++) {
                                double v = (double) xr[(p / xDiv) * k + i] * wf[(e * n + o) * k + i];
                                d += v;
                                abs += Math.abs(v);
                            }
                            for (int j = 0; j < rank; j++) {
                                double v = scale * (double) lo[p * rank + j] * bh[e][o * rank + j];
                                d += v;
                                abs += Math.abs(v);
                            }
                            want[p * n + o] = (float) d;
                            tol[p * n + o] = 1e-6 + 1e-5 * abs;
                        }
                    }
                    for (String shortK : new String[]{"3", "4", "off"}) { // short K in three or four blocks an SM, or two
                        withProperty("orbit.cuda.moeShortK", shortK, () -> {
                            String v = what + " (short K " + shortK + ")";
                            Tensor out = poisoned(DType.F32, pairs, n);
                            assertTrue(gpu.moeExpertMatmulPairsLora(dx, xDiv, w, dIds, pl, out), v + ": stacked INT4 experts take the fused launch");
                            assertWithin(v, want, gpu.toHost(out).toFloatArray(), tol);
                        });
                    }
                }
            } finally {
                gpu.free(dw);
            }
        }
    }

    /**
     * Two LoRAs' A over the same x and pairs in one launch ({@code moe_routed_dense_a2}: the gate's and the up's, ranks
     * 32 and 16, K 2048 in one register pass and 4096 in two, a row of x a pair and a token) give the bits of a call each
     * ({@code moe_routed_dense_a}, checked against the reference above), whatever the other set's shape; so do up to
     * {@value CudaMoePairs#DIRECT_PAIRS} pairs ({@code moe_pairs_dense_r1x2} against a {@code moe_pairs_dense_r1} each: 8,
     * 24 and 64 pairs).
     */
    @Test
    void twoLorasAOfTheSamePairsInOneLaunch() {
        SplittableRandom r = rng(910);
        int experts = 16;
        int topk = 8;
        for (int[] c : new int[][]{{24, 2048, 1}, {12, 4096, 8}, {1, 2048, 8}, {3, 768, 1}, {8, 2048, 8}}) {
            int tokens = c[0];
            int k = c[1];
            int xDiv = c[2] == 1 ? 1 : topk;
            int pairs = tokens * topk;   // above CudaMoePairs.DIRECT_PAIRS, or up to it (a pair's blocks each)
            int[] ranks = {32, 16};
            ExpertWeights[] sets = loraASets(r, experts, ranks, k);
            Tensor x = dev(randn(r, 1f, pairs / xDiv, k));
            Tensor ids = dev(Tensor.ofInts(CudaFusedDecodeTest.routes(r, tokens, topk, experts), tokens, topk));
            Tensor[] alone = new Tensor[2];
            for (int i = 0; i < 2; i++) {   // a call each; the first groups the pairs, which the rest reuse
                alone[i] = poisoned(DType.F32, pairs, ranks[i]);
                gpu.moeExpertMatmulPairs(x, xDiv, sets[i], ids, 1f, alone[i], false);
            }
            Tensor[] both = {poisoned(DType.F32, pairs, ranks[0]), poisoned(DType.F32, pairs, ranks[1])};
            boolean dependentBefore = gpu.dependentLaunches();
            gpu.dependentLaunches(gpu.dependentLaunchesSupported());   // counted on the dependent path
            long launches = Launcher.dependentLaunches();
            gpu.moeExpertMatmulPairsShared(x, xDiv, sets, ids, both);
            long used = Launcher.dependentLaunches() - launches;
            gpu.dependentLaunches(dependentBefore);
            for (int i = 0; i < 2; i++) {
                float[] want = gpu.toHost(alone[i]).toFloatArray();
                float[] got = gpu.toHost(both[i]).toFloatArray();
                for (int j = 0; j < want.length; j++) {
                    assertEquals(Float.floatToRawIntBits(want[j]), Float.floatToRawIntBits(got[j]), "K " + k + " xDiv " + xDiv + " set " + i
                            + " element " + j + ": alone " + want[j] + ", in one launch " + got[j]);
                }
            }
            if (gpu.dependentLaunchesSupported()) {
                assertEquals(1, used, "one launch for both sets");
            }
        }
    }

    /**
     * The tensor-core LoRA A kernels with their loads streamed through shared memory (the default, {@code
     * moe_routed_tcp_a}, {@code _a2}) give the bits of those that hold them in registers ({@code -Dorbit.cuda.moeLoraA=tc}):
     * the same products in the same order. Ranks 32, 16 and 48 (a partial second slice), K 768 to 4096, one and two
     * rounds of 16 pairs, x a row a pair and a token, y overwritten and added into.
     */
    @Test
    void loraALoadsThroughSharedMemoryKeepTheBits() {
        SplittableRandom r = rng(911);
        int experts = 8;
        int topk = 4;
        for (int[] c : new int[][]{{24, 2048, 32, 1}, {40, 768, 48, 8}, {20, 4096, 16, 4}}) {
            int tokens = c[0];
            int k = c[1];
            int n = c[2];
            int xDiv = c[3] == 1 ? 1 : topk;
            int pairs = tokens * topk;   // above CudaMoePairs.DIRECT_PAIRS
            Tensor[] w = new Tensor[experts];
            Tensor[] w2 = new Tensor[experts];
            for (int e = 0; e < experts; e++) {
                w[e] = dev(randn(r, 0.05f, n, k));
                w2[e] = dev(randn(r, 0.05f, 16, k));
            }
            ExpertWeights set = new ExpertWeights(n, k, w, new QuantizedTensor[experts]);
            ExpertWeights[] sets = {set, new ExpertWeights(16, k, w2, new QuantizedTensor[experts])};
            Tensor x = dev(randn(r, 1f, pairs / xDiv, k));
            Tensor ids = dev(Tensor.ofInts(CudaFusedDecodeTest.routes(r, tokens, topk, experts), tokens, topk));
            float[] y0 = randn(r, 1f, pairs, n).toFloatArray();
            long[][][] out = new long[2][][];
            for (int way = 0; way < 2; way++) {
                String before = System.getProperty(CudaMoePairs.LORA_A_PROPERTY);
                if (way == 1) {
                    System.setProperty(CudaMoePairs.LORA_A_PROPERTY, "tc");
                } else {
                    System.clearProperty(CudaMoePairs.LORA_A_PROPERTY);
                }
                try {
                    Tensor y = poisoned(DType.F32, pairs, n);
                    gpu.moeExpertMatmulPairs(x, xDiv, set, ids, 1f, y, false);
                    Tensor acc = dev(Tensor.of(y0, pairs, n));
                    gpu.moeExpertMatmulPairs(x, xDiv, set, ids, 0.5f, acc, true);
                    Tensor[] both = {poisoned(DType.F32, pairs, n), poisoned(DType.F32, pairs, 16)};
                    gpu.moeExpertMatmulPairsShared(x, xDiv, sets, ids, both);
                    out[way] = new long[][]{bitsOf(y), bitsOf(acc), bitsOf(both[0]), bitsOf(both[1])};
                } finally {
                    if (before == null) {
                        System.clearProperty(CudaMoePairs.LORA_A_PROPERTY);
                    } else {
                        System.setProperty(CudaMoePairs.LORA_A_PROPERTY, before);
                    }
                }
            }
            String[] names = {"y", "y += 0.5 product", "two sets, the first", "two sets, the second"};
            for (int i = 0; i < names.length; i++) {
                assertArrayEquals(out[1][i], out[0][i], "K " + k + " rank " + n + " xDiv " + xDiv + ", " + names[i]
                        + ": through shared memory against in registers");
            }
        }
    }

    /**
     * {@code -Dorbit.cuda.pairsCopies=on} ({@code moe_pairs_dense_r1_cp}, {@code moe_pairs_dense_r1x2_cp}: x's row staged
     * by asynchronous copies issued before the expert id is read) gives the plain kernels' bits: a call each and both sets
     * in one launch, at 1, 3 and 8 tokens of top 8 (up to {@link CudaMoePairs#DIRECT_PAIRS} pairs), K 768, 2048 and 4096,
     * x a row a pair and a row a token, plain and as dependent launches after the launch that writes x; each form shown to
     * be the launch by leaving it out (its outputs keep their poison).
     */
    @Test
    void xStagedByCopiesGivesThePlainPairKernelsBits() {
        SplittableRandom r = rng(915);
        int experts = 16;
        int topk = 8;
        for (int[] c : new int[][]{{1, 2048, 8}, {3, 768, 1}, {8, 4096, 8}}) {
            int tokens = c[0];
            int k = c[1];
            int xDiv = c[2] == 1 ? 1 : topk;
            int pairs = tokens * topk;
            int[] ranks = {32, 16};
            ExpertWeights[] sets = loraASets(r, experts, ranks, k);
            Tensor x0 = dev(randn(r, 1f, pairs / xDiv, k));
            Tensor x = poisoned(DType.F32, pairs / xDiv, k);
            Tensor ids = dev(Tensor.ofInts(CudaFusedDecodeTest.routes(r, tokens, topk, experts), tokens, topk));
            long[][][] out = new long[4][][];   // plain, copies; then plain and copies as dependent launches
            for (int form = 0; form < 4; form++) {
                boolean copies = form % 2 == 1;
                boolean dependent = form >= 2;
                Tensor one = poisoned(DType.F32, pairs, ranks[0]);
                Tensor[] both = {poisoned(DType.F32, pairs, ranks[0]), poisoned(DType.F32, pairs, ranks[1])};
                boolean before = gpu.dependentLaunches();
                gpu.dependentLaunches(dependent && gpu.dependentLaunchesSupported());
                try {
                    withProperty(CudaMoePairs.PAIRS_COPIES_PROPERTY, copies ? "on" : "off", () -> {
                        gpu.scale(x0, 1f, x);   // a launch that writes x (exactly x0), right before
                        gpu.moeExpertMatmulPairs(x, xDiv, sets[0], ids, 1f, one, false);
                        gpu.scale(x0, 1f, x);
                        gpu.moeExpertMatmulPairsShared(x, xDiv, sets, ids, both);
                    });
                } finally {
                    gpu.dependentLaunches(before);
                }
                out[form] = new long[][]{bitsOf(one), bitsOf(both[0]), bitsOf(both[1])};
            }
            String what = tokens + " tokens, K " + k + ", xDiv " + xDiv;
            String[] names = {"a call", "both sets, the first", "both sets, the second"};
            for (int form = 1; form < 4; form++) {
                for (int i = 0; i < names.length; i++) {
                    assertArrayEquals(out[0][i], out[form][i], what + ", " + names[i] + ": form " + form + " against the plain kernel");
                }
            }
            Tensor leftOne = poisoned(DType.F32, pairs, ranks[0]);
            Tensor[] leftBoth = {poisoned(DType.F32, pairs, ranks[0]), poisoned(DType.F32, pairs, ranks[1])};
            withProperty(CudaMoePairs.PAIRS_COPIES_PROPERTY, "on", () -> withProperty("orbit.cuda.omitKernels",
                    "^moe_pairs_dense_r1(x2)?_cp$", () -> {
                        gpu.moeExpertMatmulPairs(x0, xDiv, sets[0], ids, 1f, leftOne, false);
                        gpu.moeExpertMatmulPairsShared(x0, xDiv, sets, ids, leftBoth);
                    }));
            for (Tensor t : new Tensor[]{leftOne, leftBoth[0], leftBoth[1]}) {
                assertTrue(Float.isNaN(gpu.toHost(t).toFloatArray()[0]), what + ": the copies' kernels are the launches");
            }
        }
    }

    /** Per rank a set of f32 experts [rank, k] on the device (a LoRA's A each), drawn from r in that order. */
    private ExpertWeights[] loraASets(SplittableRandom r, int experts, int[] ranks, int k) {
        ExpertWeights[] sets = new ExpertWeights[ranks.length];
        for (int i = 0; i < ranks.length; i++) {
            Tensor[] w = new Tensor[experts];
            for (int e = 0; e < experts; e++) {
                w[e] = dev(randn(r, 0.05f, ranks[i], k));
            }
            sets[i] = new ExpertWeights(ranks[i], k, w, new QuantizedTensor[experts]);
        }
        return sets;
    }

    private long[] bitsOf(Tensor t) {
        float[] v = gpu.toHost(t).toFloatArray();
        long[] b = new long[v.length];
        for (int i = 0; i < v.length; i++) {
            b[i] = Float.floatToRawIntBits(v[i]);
        }
        return b;
    }
}
