package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * The tensor-core path of {@code moeMatmulGrouped} (INT4 and MXFP4 experts, more than one token) against
 * references computed here from the format classes' own dequantization, on ragged routings that
 * give experts exactly 0, 1, 2, 5, 9, 10, 17, 32, 41 and 64 rows (so every x-row chunk size of the
 * kernel is taken, and experts with more rows than a chunk are done in several), expert row counts
 * N not a multiple of the kernel's 16-row warp tile or 64-row block, K not a multiple of its 256-value
 * stage, symmetric and zero-point INT4, x per token and per pair, f32 and bf16.
 *
 * <p>Tolerance: the kernel's weight values are exact and its only rounding beyond f32 accumulation
 * is x to bf16 (round to nearest even), so the reference takes x rounded the same way and
 * |err| ≤ 1e-6 + 1e-5·Σ|x·w| (the fused GEMV's bound). K not a multiple of 64 falls back to the
 * GEMV (x exact): there the reference takes x unrounded at the same bound.
 */
class CudaMoeGroupedMmaTest extends CudaTestBase {

    /** Expert ids [tokens, topk] giving expert e exactly counts[e] pairs, distinct within a token, tokens shuffled. */
    static int[] routeWithCounts(SplittableRandom r, int tokens, int topk, int[] counts) {
        List<Integer> sorted = new ArrayList<>();
        for (int e = 0; e < counts.length; e++) {
            if (counts[e] > tokens) {
                throw new IllegalArgumentException("expert " + e + " cannot take " + counts[e] + " of " + tokens + " tokens");
            }
            for (int i = 0; i < counts[e]; i++) {
                sorted.add(e);
            }
        }
        if (sorted.size() != tokens * topk) {
            throw new IllegalArgumentException("counts sum to " + sorted.size() + ", not " + tokens + " x " + topk);
        }
        // slot j of token t takes sorted[j * tokens + t]: an expert's run (≤ tokens long) never meets a token twice
        int[] perm = new int[tokens];
        for (int t = 0; t < tokens; t++) {
            perm[t] = t;
        }
        for (int t = tokens - 1; t > 0; t--) {
            int o = r.nextInt(t + 1);
            int v = perm[t];
            perm[t] = perm[o];
            perm[o] = v;
        }
        int[] ids = new int[tokens * topk];
        for (int t = 0; t < tokens; t++) {
            for (int j = 0; j < topk; j++) {
                ids[perm[t] * topk + j] = sorted.get(j * tokens + t);
            }
        }
        return ids;
    }

    @Test
    void tensorCoreGroupedMatchesTheReference() {
        SplittableRandom r = rng(95);
        int e = 7;
        // {tokens, topk, counts...}: pairs per expert of the layer 28 (chunk 32), 10 (chunk 16), 4 (chunk 8)
        int[][] routings = {{64, 3, 0, 1, 5, 17, 64, 64, 41}, {32, 2, 0, 1, 5, 17, 9, 32, 0}, {12, 2, 0, 10, 1, 1, 5, 5, 2}};
        int[][] shapes = {{40, 320}, {136, 192}, {24, 96}}; // {N, K}; K = 96: not a multiple of 64, the GEMV
        for (String format : new String[]{"int4-g32", "int4-g32-asym"}) {
            for (int[] s : shapes) {
                int n = s[0];
                int k = s[1];
                boolean tc = k % 64 == 0;
                QuantizedTensor stacked = CudaQuantTest.random(format, r, e * n, k);
                float[] wf = CudaQuantTest.dequantizeRef(stacked);
                QuantizedTensor dw = gpu.toDevice(stacked);
                try {
                    checkRoutings(r, e, routings, dw, wf, n, k, tc, format);
                } finally {
                    gpu.free(dw);
                }
            }
        }
    }

    /**
     * MXFP4 experts on the tensor cores ({@code qmma_mxfp4_grouped_*}): every one of the 16 E2M1 codes (both zeros
     * among them) in random bytes, E8M0 scales from 2^-127 (0, whose group products are subnormal) to 2^20, K of 384
     * (a last weight stage of half its groups) and 256, and K 320 (not a multiple of 128: the GEMV, x exact); the
     * routings, x forms and bound of {@link #tensorCoreGroupedMatchesTheReference} (the decoded values exact, x the only
     * rounded operand).
     */
    @Test
    void mxfp4ExpertsOnTheTensorCoresMatchTheReference() {
        SplittableRandom r = rng(98);
        int e = 7;
        int[][] routings = {{64, 3, 0, 1, 5, 17, 64, 64, 41}, {32, 2, 0, 1, 5, 17, 9, 32, 0}, {12, 2, 0, 10, 1, 1, 5, 5, 2}};
        int[] exponents = {0, 1, 100, 118, 122, 127, 131, 147};
        for (int[] s : new int[][]{{40, 384}, {136, 256}, {24, 320}}) {
            int n = s[0];
            int k = s[1];
            boolean tc = k % 128 == 0;
            QuantizedTensor stacked = CudaQuantTest.random("mxfp4", r, e * n, k);
            java.lang.foreign.MemorySegment codes = stacked.codes().segment();
            for (long i = 0; i < stacked.codes().byteSize(); i++) {
                codes.set(java.lang.foreign.ValueLayout.JAVA_BYTE, stacked.codes().byteOffset() + i, (byte) r.nextInt(256));
            }
            java.lang.foreign.MemorySegment scales = stacked.scales().segment();
            for (long i = 0; i < stacked.scales().byteSize(); i++) {
                scales.set(java.lang.foreign.ValueLayout.JAVA_BYTE, stacked.scales().byteOffset() + i,
                        (byte) exponents[r.nextInt(exponents.length)]);
            }
            float[] wf = CudaQuantTest.dequantizeRef(stacked);
            QuantizedTensor dw = gpu.toDevice(stacked);
            try {
                checkRoutings(r, e, routings, dw, wf, n, k, tc, "mxfp4");
            } finally {
                gpu.free(dw);
            }
        }
    }

    /**
     * At K 4096 (DeepSeek V4's experts), where four weight stages and 8 staged x rows leave room for one block an SM, a
     * plain launch takes two stages and two blocks: INT4 and MXFP4 experts against the double reference (the tolerance
     * of {@link #checkRoutings}) at 1 to 8 rows an expert, and bit for bit the four-stage kernel's products
     * ({@code -Dorbit.cuda.moeStages=4}: the same steps over K, the same sums).
     */
    @Test
    void twoStagesAtLongKGiveTheFourStageSums() {
        SplittableRandom r = rng(99);
        int e = 5;
        int n = 136;
        int k = 4096;
        int[][] routings = {{16, 2, 8, 1, 7, 0, 16}, {3, 1, 1, 0, 1, 1, 0}};
        for (String format : new String[]{"int4-g32", "mxfp4"}) {
            QuantizedTensor stacked = CudaQuantTest.random(format, r, e * n, k);
            float[] wf = CudaQuantTest.dequantizeRef(stacked);
            QuantizedTensor dw = gpu.toDevice(stacked);
            try {
                checkRoutings(r, e, routings, dw, wf, n, k, true, format);
                int tokens = 16;
                int[] ids = routeWithCounts(r, tokens, 2, new int[]{8, 1, 7, 0, 16});
                try (MoeRouting routing = gpu.moe().moeRouting(e, ids.length)) {
                    gpu.moe().moeRoute(dev(Tensor.ofInts(ids, tokens, 2)), routing);
                    Tensor x = dev(randn(r, 1f, tokens, k));
                    Tensor two = poisoned(DType.F32, ids.length, n);
                    Tensor four = poisoned(DType.F32, ids.length, n);
                    gpu.moe().moeMatmulGrouped(x, dw, routing, two);
                    System.setProperty("orbit.cuda.moeStages", "4");
                    try {
                        gpu.moe().moeMatmulGrouped(x, dw, routing, four);
                    } finally {
                        System.clearProperty("orbit.cuda.moeStages");
                    }
                    assertBitsEqual(format + " K " + k + ": two stages against four", gpu.toHost(four).toFloatArray(),
                            gpu.toHost(two).toFloatArray());
                }
            } finally {
                gpu.free(dw);
            }
        }
    }

    @Test
    void tensorCoresAgreeWithTheGemvOnBf16X() {
        // bf16 x: both paths multiply the same exact values; they differ only in f32 summation order
        SplittableRandom r = rng(96);
        int e = 16;
        int n = 64;
        int k = 512;
        int tokens = 24;
        int topk = 4;
        QuantizedTensor stacked = CudaQuantTest.random("int4-g32", r, e * n, k);
        float[] wf = CudaQuantTest.dequantizeRef(stacked);
        QuantizedTensor dw = gpu.toDevice(stacked);
        int[] counts = new int[e];
        for (int i = 0; i < tokens * topk; i++) {
            counts[(i * 7) % e]++; // 6 rows each
        }
        int[] ids = routeWithCounts(r, tokens, topk, counts);
        try (MoeRouting routing = gpu.moe().moeRouting(e, ids.length)) {
            gpu.moe().moeRoute(dev(Tensor.ofInts(ids, tokens, topk)), routing);
            float[] xv = bf16Round(randn(r, 1f, tokens, k).toFloatArray());
            Tensor x = dev(Tensor.of(xv, tokens, k).to(DType.BF16));
            Tensor yTc = poisoned(DType.F32, ids.length, n);
            Tensor yGemv = poisoned(DType.F32, ids.length, n);
            gpu.moe().moeMatmulGrouped(x, dw, routing, yTc);
            gpu.moe().moeGroupedTensorCores(false);
            try {
                gpu.moe().moeMatmulGrouped(x, dw, routing, yGemv);
            } finally {
                gpu.moe().moeGroupedTensorCores(true);
            }
            float[][] ref = reference(xv, topk, ids, wf, n, k);
            double[] tol = tolerance(ref[1]);
            assertWithin("moeMatmulGrouped tensor cores vs the reference", ref[0], gpu.toHost(yTc).toFloatArray(), tol);
            double[] tol2 = tol.clone();
            for (int i = 0; i < tol2.length; i++) {
                tol2[i] *= 2;
            }
            assertWithin("moeMatmulGrouped tensor cores vs the GEMV", gpu.toHost(yGemv).toFloatArray(), gpu.toHost(yTc).toFloatArray(), tol2);
        } finally {
            gpu.free(dw);
        }
    }

    /**
     * f32 x is rounded to bf16 as the kernel stages it, to nearest even: its products equal, bit for bit, those of the
     * same x rounded to bf16 on the host first ({@code Tensor.to(BF16)}), over x whose values include exact ties of
     * both parities (the 16 bits below a bf16 exactly 0x8000), values one unit beside a tie, subnormals and signed
     * zeros, for one matrix at K 2048 and 768 (8 rows an expert) and for gate and up in one launch.
     */
    @Test
    void f32XIsRoundedAsTheHostRoundsIt() {
        SplittableRandom r = rng(97);
        int e = 8;
        int tokens = 32;
        int topk = 2;
        int[] counts = new int[e];
        for (int i = 0; i < tokens * topk; i++) {
            counts[(i * 3) % e]++; // 8 rows an expert: 8-row chunks
        }
        int[] ids = routeWithCounts(r, tokens, topk, counts);
        for (int k : new int[]{2048, 768}) {
            int n = 136;
            float[] xv = randn(r, 1f, tokens, k).toFloatArray();
            for (int i = 0; i < xv.length; i++) {
                int bits = Float.floatToRawIntBits(xv[i]);
                switch (i % 8) {
                    case 0 -> xv[i] = Float.intBitsToFloat((bits & 0xFFFE0000) | 0x8000);            // a tie, even: down
                    case 1 -> xv[i] = Float.intBitsToFloat((bits & 0xFFFE0000) | 0x18000);           // a tie, odd: up
                    case 2 -> xv[i] = Float.intBitsToFloat((bits & 0xFFFF0000) | 0x7FFF);            // just below a tie
                    case 3 -> xv[i] = Float.intBitsToFloat((bits & 0xFFFF0000) | 0x8001);            // just above one
                    case 4 -> xv[i] = Float.intBitsToFloat((bits & 0x8000FFFF) | (r.nextInt(1, 0x7F) << 16)); // subnormal
                    case 5 -> xv[i] = (i & 8) == 0 ? 0.0f : -0.0f;
                    default -> { }
                }
            }
            QuantizedTensor stacked = CudaQuantTest.random("int4-g32", r, e * n, k);
            QuantizedTensor dw = gpu.toDevice(stacked);
            try (MoeRouting routing = gpu.moe().moeRouting(e, ids.length)) {
                gpu.moe().moeRoute(dev(Tensor.ofInts(ids, tokens, topk)), routing);
                Tensor x = Tensor.of(xv, tokens, k);
                Tensor yF32 = poisoned(DType.F32, ids.length, n);
                Tensor yBf16 = poisoned(DType.F32, ids.length, n);
                gpu.moe().moeMatmulGrouped(dev(x), dw, routing, yF32);
                gpu.moe().moeMatmulGrouped(dev(x.to(DType.BF16)), dw, routing, yBf16);
                assertBitsEqual("moeMatmulGrouped K " + k + ": f32 x against x rounded on the host",
                        gpu.toHost(yBf16).toFloatArray(), gpu.toHost(yF32).toFloatArray());
                if (k == 2048) {
                    QuantizedTensor up = gpu.toDevice(CudaQuantTest.random("int4-g32", r, e * n, k));
                    try {
                        Tensor aF32 = poisoned(DType.BF16, ids.length, n);
                        Tensor aBf16 = poisoned(DType.BF16, ids.length, n);
                        gpu.moe().moeSwigluGrouped(dev(x), dw, up, routing, aF32);
                        gpu.moe().moeSwigluGrouped(dev(x.to(DType.BF16)), dw, up, routing, aBf16);
                        assertBitsEqual("moeSwigluGrouped: f32 x against x rounded on the host",
                                gpu.toHost(aBf16).toFloatArray(), gpu.toHost(aF32).toFloatArray());
                    } finally {
                        gpu.free(up);
                    }
                }
            } finally {
                gpu.free(dw);
            }
        }
    }

    /**
     * Each routing ({tokens, topk, pairs of each expert...}) through {@code moeMatmulGrouped} over the device experts dw
     * (wf: their decoded values), x per token and per pair, f32 and bf16, against double sums of x (rounded to bf16 where
     * the tensor cores take the call, {@code tc}).
     */
    private void checkRoutings(SplittableRandom r, int e, int[][] routings, QuantizedTensor dw, float[] wf, int n, int k, boolean tc,
                               String format) {
        for (int[] rt : routings) {
            int tokens = rt[0];
            int topk = rt[1];
            int[] ids = routeWithCounts(r, tokens, topk, java.util.Arrays.copyOfRange(rt, 2, rt.length));
            try (MoeRouting routing = gpu.moe().moeRouting(e, ids.length)) {
                gpu.moe().moeRoute(dev(Tensor.ofInts(ids, tokens, topk)), routing);
                for (boolean perPair : new boolean[]{false, true}) {
                    for (boolean bf16 : new boolean[]{false, true}) {
                        int xRows = perPair ? ids.length : tokens;
                        float[] xv = randn(r, 1f, xRows, k).toFloatArray();
                        if (bf16) {
                            xv = bf16Round(xv);
                        }
                        Tensor x = Tensor.of(xv, xRows, k);
                        Tensor y = poisoned(DType.F32, ids.length, n);
                        gpu.moe().moeMatmulGrouped(dev(bf16 ? x.to(DType.BF16) : x), dw, routing, y);
                        float[][] ref = reference(tc ? bf16Round(xv) : xv, perPair ? 1 : topk, ids, wf, n, k);
                        String what = "moeMatmulGrouped " + (tc ? "tensor cores " : "GEMV ") + format + " N " + n + " K " + k
                                + " tokens " + tokens + " topk " + topk + (perPair ? " x per pair" : " x per token")
                                + (bf16 ? " bf16" : " f32");
                        assertWithin(what, ref[0], gpu.toHost(y).toFloatArray(), tolerance(ref[1]));
                    }
                }
            }
        }
    }

    private static double[] tolerance(float[] absDot) {
        double[] tol = new double[absDot.length];
        for (int i = 0; i < tol.length; i++) {
            tol[i] = 1e-6 + 1e-5 * absDot[i];
        }
        return tol;
    }

    /** {y[p] = x[p / div] · W_{ids[p]}ᵀ, Σ|x·w| per element}, double sums, [pairs, n] each. */
    private static float[][] reference(float[] x, int div, int[] ids, float[] wf, int n, int k) {
        float[] y = new float[ids.length * n];
        float[] a = new float[y.length];
        for (int p = 0; p < ids.length; p++) {
            int xr = p / div;
            long wBase = (long) ids[p] * n * k;
            for (int o = 0; o < n; o++) {
                double s = 0;
                double abs = 0;
                for (int i = 0; i < k; i++) {
                    double v = (double) x[xr * k + i] * wf[(int) (wBase + (long) o * k + i)];
                    s += v;
                    abs += Math.abs(v);
                }
                y[p * n + o] = (float) s;
                a[p * n + o] = (float) abs;
            }
        }
        return new float[][]{y, a};
    }
}
