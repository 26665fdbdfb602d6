package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Launcher;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A decode batch's dense products with their LoRA terms in two launches ({@link CudaBackend#matmulLowRank}:
 * {@code narrow_matmul3_f32} for the terms' x·Aᵀ and x in bf16, then {@code dmma.cu} on tensor cores; up to 16 rows of x,
 * the A products and then {@code bgemv_lr} on f32 x) against a double
 * reference of {@code y = bf16(x)·Wᵀ + s·(x·Aᵀ)·Bᵀ}: the base product takes x rounded to bf16, the term's A product the
 * f32 x. Tolerance per element: 1e-6 + 1e-5·S + 1e-5·|s|·Σ_r |B_r|·(|lo_r| + Σ_k |x·A_r|), with S = Σ_k |bf16(x)·W|
 * (f32 sums in another order, the f32 rounding of lo carried through B).
 */
class CudaLowRankMatmulTest extends CudaTestBase {

    /** One call: m rows of x [m, k], weights of ns[i] rows, ranks[i] (0: no term), scale s. */
    private record Case(int m, int k, int[] ns, int[] ranks, float s) {
    }

    @Test
    void baseProductsAndLoraTermsAgainstADoubleReference() {
        SplittableRandom r = rng(71);
        Case[] cases = {
                new Case(64, 2048, new int[]{1024, 128, 128}, new int[]{32, 32, 32}, 2f),      // q, k, v scaled down
                new Case(40, 512, new int[]{256, 128}, new int[]{16, 0}, 0.5f),                 // a weight without a term
                new Case(17, 4096, new int[]{128}, new int[]{32}, 1f),                          // o: long K, 32-token tiles
                new Case(33, 192, new int[]{128, 128, 128}, new int[]{4, 8, 64}, -1.5f),        // 3 chunks of K, ranks 4..64
                new Case(64, 128, new int[]{640}, new int[]{12}, 0.25f),                        // 5 row blocks, 2 chunks
                new Case(24, 64, new int[]{128, 256}, new int[]{8, 8}, 1f)};                    // one chunk: K unsplit
        withProperty("orbit.cuda.dmmaMinRows", "128", () -> {
            for (Case c : cases) {
                check(r, c);
            }
        });
        check(r, new Case(64, 2048, new int[]{4096, 512, 512}, new int[]{32, 32, 32}, 2f));  // Qwen3-30B-A3B's q, k, v
        for (String splits : new String[]{"3", "5", "7"}) { // ranges of K not a power of two (uneven: 32 chunks in 3)
            withProperty("orbit.cuda.dmmaSplits", splits,
                    () -> check(r, new Case(64, 2048, new int[]{4096, 512, 512}, new int[]{32, 32, 32}, 2f)));
        }
    }

    /**
     * Up to {@value CudaMatmulOps#QGEMV_MAX_ROWS} rows of x (a decode step of few sequences) the GEMV form takes the call:
     * the A products, then one launch for the base products of f32 x (the weights exact) with each term added to its
     * outputs. Against the double reference of {@code y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ} with the same tolerance: Qwen3-30B-A3B's q,
     * k and v and its o at one row, a weight without a term, row counts that are not a multiple of a block's rows, ranks 4
     * to 64, and 1, 3, 4, 5, 8, 9 and 16 rows of x (each row chunk of the kernels).
     */
    @Test
    void fewRowsTakeTheGemvWithTheTermsFolded() {
        SplittableRandom r = rng(76);
        Case[] cases = {
                new Case(1, 2048, new int[]{4096, 512, 512}, new int[]{32, 32, 32}, 2f),    // Qwen3-30B-A3B's q, k, v
                new Case(1, 4096, new int[]{2048}, new int[]{32}, 2f),                      // its o
                new Case(3, 512, new int[]{256, 128, 384}, new int[]{16, 0, 8}, -0.5f),     // a weight without a term
                new Case(4, 1024, new int[]{100, 37}, new int[]{4, 64}, 0.25f),             // ragged rows, ranks 4 and 64
                new Case(5, 2048, new int[]{4096, 512, 512}, new int[]{32, 32, 32}, 1f),
                new Case(8, 264, new int[]{130}, new int[]{12}, 1.5f),                      // K of 33 loads a row
                new Case(9, 64, new int[]{48, 16, 8}, new int[]{8, 8, 8}, 1f),              // K of one load a warp's lanes
                new Case(16, 4096, new int[]{2048}, new int[]{32}, -1f)};
        for (Case c : cases) {
            check(r, c, false);
        }
    }

    /**
     * The GEMV form's A products in the GEMV's own launch ({@code bgemv_lra_m*}, the default) give the bits of the two
     * launches ({@code -Dorbit.cuda.lowRankA=separate}: {@code narrow_matmul3_f32}, then {@code bgemv_lr}) in one launch
     * on the dependent path where those take two: q, k and v and o of Qwen3-30B-A3B at 1, 4, 5, 8 and 16 rows (one to
     * four chunks of the A products' rows), a weight without a term, ranks 4 and 64; three runs on the same counters, each
     * output NaN before it (a row block that passed its wait early would read the lo of no run or a NaN). A K of 64
     * (blocks of one warp) keeps the two launches.
     */
    @Test
    void aProductsInTheGemvLaunchKeepTheBits() {
        SplittableRandom r = rng(77);
        Case[] cases = {
                new Case(1, 2048, new int[]{4096, 512, 512}, new int[]{32, 32, 32}, 2f),
                new Case(1, 4096, new int[]{2048}, new int[]{32}, 2f),
                new Case(4, 512, new int[]{256, 128, 384}, new int[]{16, 0, 8}, -0.5f),
                new Case(5, 1024, new int[]{100, 37}, new int[]{4, 64}, 0.25f),
                new Case(8, 2048, new int[]{4096, 512, 512}, new int[]{32, 32, 32}, 1f),
                new Case(16, 4096, new int[]{2048}, new int[]{32}, -1f),
                new Case(3, 64, new int[]{48, 16, 8}, new int[]{8, 8, 8}, 1f)};
        boolean dependentBefore = gpu.dependentLaunches();
        try {
            gpu.dependentLaunches(gpu.dependentLaunchesSupported());   // launches counted on the dependent path
            for (Case c : cases) {
                int m = c.m();
                int k = c.k();
                int count = c.ns().length;
                Tensor[] ws = new Tensor[count];
                Backend.LowRankTerm[] terms = new Backend.LowRankTerm[count];
                for (int i = 0; i < count; i++) {
                    ws[i] = dev(randn(r, 0.5f, c.ns()[i], k).to(DType.BF16));
                    int rank = c.ranks()[i];
                    terms[i] = rank == 0 ? null : new Backend.LowRankTerm(dev(randn(r, 0.05f, rank, k)), dev(randn(r, 0.5f, c.ns()[i], rank)),
                            c.s());
                }
                String what = "m=" + m + " k=" + k + " n=" + Arrays.toString(c.ns()) + " r=" + Arrays.toString(c.ranks());
                for (int run = 0; run < 3; run++) {
                    Tensor x = dev(randn(r, 1f, m, k));
                    Tensor[] two = new Tensor[count];
                    Tensor[] one = new Tensor[count];
                    for (int i = 0; i < count; i++) {
                        two[i] = poisoned(DType.F32, m, c.ns()[i]);
                        one[i] = poisoned(DType.F32, m, c.ns()[i]);
                    }
                    long[] launches = new long[2];
                    withProperty("orbit.cuda.lowRankA", "separate", () -> {
                        long before = Launcher.dependentLaunches();
                        assertTrue(gpu.matmulLowRank(x, ws, terms, two), what + ": the GEMV form takes the call");
                        launches[0] = Launcher.dependentLaunches() - before;
                    });
                    long before = Launcher.dependentLaunches();
                    assertTrue(gpu.matmulLowRank(x, ws, terms, one), what + ": the GEMV form takes the call");
                    launches[1] = Launcher.dependentLaunches() - before;
                    for (int i = 0; i < count; i++) {
                        assertBitsEqual(what + ", run " + run + ", weight " + i, gpu.toHost(two[i]).toFloatArray(),
                                gpu.toHost(one[i]).toFloatArray());
                    }
                    if (gpu.dependentLaunchesSupported()) {
                        assertEquals(2, launches[0], what + ": the A products and the GEMV apart");
                        assertEquals(k == 64 ? 2 : 1, launches[1], what + (k == 64 ? ": blocks of one warp keep two launches" : ": one launch"));
                    }
                }
            }
        } finally {
            gpu.dependentLaunches(dependentBefore);
        }
    }

    private void check(SplittableRandom r, Case c) {
        check(r, c, true);
    }

    /** One call against the double reference; {@code xToBf16}: the base products take x rounded to bf16 (the tensor cores'). */
    private void check(SplittableRandom r, Case c, boolean xToBf16) {
        int m = c.m();
        int k = c.k();
        int count = c.ns().length;
        float[] x = randn(r, 1f, m, k).toFloatArray();
        float[] xb = xToBf16 ? bf16Round(x) : x;
        Tensor[] ws = new Tensor[count];
        Tensor[] ys = new Tensor[count];
        float[][] wf = new float[count][];
        float[][] af = new float[count][];
        float[][] bf = new float[count][];
        Backend.LowRankTerm[] terms = new Backend.LowRankTerm[count];
        for (int i = 0; i < count; i++) {
            Tensor w = randn(r, 0.5f, c.ns()[i], k).to(DType.BF16);
            wf[i] = w.toFloatArray();
            ws[i] = dev(w);
            ys[i] = poisoned(DType.F32, m, c.ns()[i]);
            int rank = c.ranks()[i];
            if (rank > 0) {
                Tensor a = randn(r, 0.05f, rank, k);
                Tensor b = randn(r, 0.5f, c.ns()[i], rank);
                af[i] = a.toFloatArray();
                bf[i] = b.toFloatArray();
                terms[i] = new Backend.LowRankTerm(dev(a), dev(b), c.s());
            }
        }
        String what = "matmulLowRank m=" + m + " k=" + k + " n=" + Arrays.toString(c.ns()) + " r=" + Arrays.toString(c.ranks());
        assertTrue(gpu.matmulLowRank(dev(Tensor.of(x, m, k)), ws, terms, ys), what + ": the fused path takes the call");
        for (int i = 0; i < count; i++) {
            int n = c.ns()[i];
            int rank = c.ranks()[i];
            float[] want = new float[m * n];
            double[] tol = new double[m * n];
            for (int row = 0; row < m; row++) {
                double[] lo = new double[rank];
                double[] loAbs = new double[rank];
                for (int q = 0; q < rank; q++) {
                    for (int j = 0; j < k; j++) {
                        double v = (double) x[row * k + j] * af[i][q * k + j];
                        lo[q] += v;
                        loAbs[q] += Math.abs(v);
                    }
                }
                for (int o = 0; o < n; o++) {
                    double d = 0;
                    double abs = 0;
                    for (int j = 0; j < k; j++) {
                        double v = (double) xb[row * k + j] * wf[i][o * k + j];
                        d += v;
                        abs += Math.abs(v);
                    }
                    double term = 0;
                    double termTol = 0;
                    for (int q = 0; q < rank; q++) {
                        double b = bf[i][o * rank + q];
                        term += lo[q] * b;
                        termTol += Math.abs(b) * (Math.abs(lo[q]) + loAbs[q]);
                    }
                    want[row * n + o] = (float) (d + c.s() * term);
                    tol[row * n + o] = 1e-6 + 1e-5 * abs + 1e-5 * Math.abs(c.s()) * termTol;
                }
            }
            assertWithin(what + " weight " + i, want, gpu.toHost(ys[i]).toFloatArray(), tol);
        }
    }

    /**
     * Stages of 128 values of K ({@code -Dorbit.cuda.dmmaChunk=128}) against the double reference, and bit for bit
     * against stages of 64 where the splits of K fall on the same values: Qwen3-30B-A3B's q, k and v (2 splits, set by
     * hand: 3 would split 32 chunks of 64 at 10 and 21, 16 of 128 at 5 and 10), o (K = 4096, 8 splits, 17 rows: 32-token
     * tiles), and K = 1024 in 4 splits set by hand.
     */
    @Test
    void wideStagesGiveTheBitsOfNarrowOnes() {
        SplittableRandom r = rng(73);
        withProperty("orbit.cuda.dmmaChunk", "128", () -> check(r, new Case(48, 2048, new int[]{4096, 512, 512}, new int[]{32, 32, 32}, 2f)));
        withProperty("orbit.cuda.dmmaMinRows", "128", () -> {
            withProperty("orbit.cuda.dmmaSplits", "2", () -> sameBits(r, 64, 2048, new int[]{4096, 512, 512}, 32));
            sameBits(r, 17, 4096, new int[]{2048}, 32);
            withProperty("orbit.cuda.dmmaSplits", "4", () -> sameBits(r, 40, 1024, new int[]{256, 128}, 16));
        });
    }

    /** One call's outputs with stages of 64 and of 128 values of K, the same inputs, compared bit for bit. */
    private void sameBits(SplittableRandom r, int m, int k, int[] ns, int rank) {
        Tensor x = dev(randn(r, 1f, m, k));
        Tensor[] ws = new Tensor[ns.length];
        Backend.LowRankTerm[] terms = new Backend.LowRankTerm[ns.length];
        for (int i = 0; i < ns.length; i++) {
            ws[i] = dev(randn(r, 0.5f, ns[i], k).to(DType.BF16));
            terms[i] = new Backend.LowRankTerm(dev(randn(r, 0.05f, rank, k)), dev(randn(r, 0.5f, ns[i], rank)), 1.5f);
        }
        float[][][] outs = new float[2][ns.length][];
        String[] chunks = {"64", "128"};
        for (int v = 0; v < 2; v++) {
            Tensor[] ys = new Tensor[ns.length];
            for (int i = 0; i < ns.length; i++) {
                ys[i] = poisoned(DType.F32, m, ns[i]);
            }
            String chunk = chunks[v];
            withProperty("orbit.cuda.dmmaChunk", chunk, () -> assertTrue(gpu.matmulLowRank(x, ws, terms, ys),
                    "stages of " + chunk + ": the fused path takes the call"));
            for (int i = 0; i < ns.length; i++) {
                outs[v][i] = gpu.toHost(ys[i]).toFloatArray();
            }
        }
        for (int i = 0; i < ns.length; i++) {
            for (int j = 0; j < outs[0][i].length; j++) {
                assertEquals(Float.floatToRawIntBits(outs[0][i][j]), Float.floatToRawIntBits(outs[1][i][j]),
                        "m=" + m + " k=" + k + " n=" + Arrays.toString(ns) + ": weight " + i + " element " + j + " with stages of 128 "
                                + outs[1][i][j] + ", of 64 " + outs[0][i][j]);
            }
        }
    }

    /**
     * A row's result depends on that row alone: the first rows of a 64-row call equal, bit for bit, the same rows in a
     * call of 20 (32-token tiles instead of 64), whatever the other rows hold; in the default 8 ranges of K and in 3
     * uneven ones (the LoRA term of row m joins range m % 3).
     */
    @Test
    void aRowsResultDoesNotDependOnTheBatch() {
        withProperty("orbit.cuda.dmmaMinRows", "128", this::batchInvariance);
        withProperty("orbit.cuda.dmmaMinRows", "128", () -> withProperty("orbit.cuda.dmmaSplits", "3", this::batchInvariance));
    }

    private void batchInvariance() {
        SplittableRandom r = rng(72);
        int k = 1024;
        int n = 256;
        int rank = 16;
        float[] x = randn(r, 1f, 64, k).toFloatArray();
        Tensor w = dev(randn(r, 0.5f, n, k).to(DType.BF16));
        Backend.LowRankTerm[] terms = {new Backend.LowRankTerm(dev(randn(r, 0.05f, rank, k)), dev(randn(r, 0.5f, n, rank)), 2f)};
        Tensor yAll = poisoned(DType.F32, 64, n);
        assertTrue(gpu.matmulLowRank(dev(Tensor.of(x, 64, k)), new Tensor[]{w}, terms, new Tensor[]{yAll}));
        float[] part = Arrays.copyOf(x, 20 * k);
        for (int j = 10 * k; j < 20 * k; j++) {
            part[j] = (float) r.nextGaussian(); // rows 10..19 differ from the 64-row call's
        }
        Tensor ySome = poisoned(DType.F32, 20, n);
        assertTrue(gpu.matmulLowRank(dev(Tensor.of(part, 20, k)), new Tensor[]{w}, terms, new Tensor[]{ySome}));
        float[] all = gpu.toHost(yAll).toFloatArray();
        float[] some = gpu.toHost(ySome).toFloatArray();
        for (int j = 0; j < 10 * n; j++) {
            assertEquals(Float.floatToRawIntBits(all[j]), Float.floatToRawIntBits(some[j]),
                    "row " + j / n + " column " + j % n + ": in 64 rows " + all[j] + ", in 20 " + some[j]);
        }
    }

    /**
     * Below the tensor-core form's bound of weight rows ({@link CudaLowRankOps#dmmaMinRows}: an attention block's o), the
     * staged form: against the double reference, and bit for bit against the unfused steps the caller would take
     * instead (the base product, the A product, the axpy of the term), for one weight (Qwen3-30B-A3B's o: 2048 rows,
     * K = 4096) and for three with one of them without a term, at 17, 40 and 64 rows.
     */
    @Test
    void belowTheBoundTheStagedFormGivesTheUnfusedBits() {
        SplittableRandom r = rng(75);
        check(r, new Case(64, 4096, new int[]{2048}, new int[]{32}, 2f));
        check(r, new Case(20, 512, new int[]{256, 128, 384}, new int[]{16, 0, 8}, -0.5f));
        int[][] shapes = {{17, 4096, 2048, 32}, {64, 4096, 2048, 32}, {40, 512, 256, 16}};
        for (int[] c : shapes) {
            int m = c[0];
            int k = c[1];
            int n = c[2];
            int rank = c[3];
            Tensor x = dev(randn(r, 1f, m, k));
            Tensor w = dev(randn(r, 0.5f, n, k).to(DType.BF16));
            Tensor a = dev(randn(r, 0.05f, rank, k));
            Tensor b = dev(randn(r, 0.5f, n, rank));
            float s = 1.5f;
            Tensor fused = poisoned(DType.F32, m, n);
            assertTrue(gpu.matmulLowRank(x, new Tensor[]{w}, new Backend.LowRankTerm[]{new Backend.LowRankTerm(a, b, s)},
                    new Tensor[]{fused}), m + " rows, " + n + " weight rows: the staged form takes the call");
            Tensor steps = poisoned(DType.F32, m, n);
            Tensor xa = poisoned(DType.F32, m, rank);
            gpu.matmul(x, w, steps);
            gpu.matmul(x, a, xa);
            gpu.matmulAxpy(xa, b, s, steps);
            float[] want = gpu.toHost(steps).toFloatArray();
            float[] got = gpu.toHost(fused).toFloatArray();
            for (int j = 0; j < want.length; j++) {
                assertEquals(Float.floatToRawIntBits(want[j]), Float.floatToRawIntBits(got[j]), "m=" + m + " k=" + k + " n=" + n
                        + ": element " + j + " staged " + got[j] + ", unfused steps " + want[j]);
            }
        }
    }

    /** Calls outside the kernels' shapes are declined and write nothing: the caller's unfused steps run instead. */
    @Test
    void otherShapesAreDeclinedUntouched() {
        withProperty("orbit.cuda.dmmaMinRows", "128", this::declines);
        SplittableRandom r = rng(74);
        int k = 256;
        Tensor w = dev(randn(r, 0.5f, 2048, k).to(DType.BF16));
        Backend.LowRankTerm term = new Backend.LowRankTerm(dev(randn(r, 0.05f, 8, k)), dev(randn(r, 0.5f, 2048, 8)), 1f);
        Tensor y = poisoned(DType.F32, 32, 2048);
        withProperty("orbit.cuda.lowRankStaged", "off", () -> assertFalse(gpu.matmulLowRank(dev(randn(r, 1f, 32, k)),
                new Tensor[]{w}, new Backend.LowRankTerm[]{term}, new Tensor[]{y}),
                "2048 rows: below the default bound of " + CudaLowRankOps.dmmaMinRows() + ", the staged form off"));
        assertUntouched(y);
    }

    private void declines() {
        SplittableRandom r = rng(73);
        int k = 256;
        Tensor w = dev(randn(r, 0.5f, 128, k).to(DType.BF16));
        Tensor odd = dev(randn(r, 0.5f, 96, k).to(DType.BF16));
        Backend.LowRankTerm term = new Backend.LowRankTerm(dev(randn(r, 0.05f, 8, k)), dev(randn(r, 0.5f, 128, 8)), 1f);
        Backend.LowRankTerm oddTerm = new Backend.LowRankTerm(dev(randn(r, 0.05f, 8, k)), dev(randn(r, 0.5f, 96, 8)), 1f);
        for (int m : new int[]{CudaLowRankOps.DMMA_MIN_ROWS - 1, CudaLowRankOps.DMMA_MAX_ROWS + 1}) {
            Tensor y = poisoned(DType.F32, m, 128);
            Tensor xm = dev(randn(r, 1f, m, k));
            withProperty("orbit.cuda.lowRankGemv", "off", () -> assertFalse(gpu.matmulLowRank(xm, new Tensor[]{w},
                    new Backend.LowRankTerm[]{term}, new Tensor[]{y}), m + " rows, the GEMV form off"));
            assertUntouched(y);
        }
        Tensor x4 = dev(randn(r, 1f, 4, k));
        Tensor y4 = poisoned(DType.F32, 4, 128);
        assertFalse(gpu.matmulLowRank(x4, new Tensor[]{dev(randn(r, 0.5f, 128, k))}, new Backend.LowRankTerm[]{term},
                new Tensor[]{y4}), "4 rows, an f32 weight");
        Backend.LowRankTerm wide = new Backend.LowRankTerm(dev(randn(r, 0.05f, 72, k)), dev(randn(r, 0.5f, 128, 72)), 1f);
        assertFalse(gpu.matmulLowRank(x4, new Tensor[]{w}, new Backend.LowRankTerm[]{wide}, new Tensor[]{y4}),
                "4 rows, rank 72: above the A product's 64 rows");
        Backend.LowRankTerm odd6 = new Backend.LowRankTerm(dev(randn(r, 0.05f, 6, k)), dev(randn(r, 0.5f, 128, 6)), 1f);
        assertFalse(gpu.matmulLowRank(x4, new Tensor[]{w}, new Backend.LowRankTerm[]{odd6}, new Tensor[]{y4}),
                "4 rows, rank 6: not a multiple of 4");
        assertFalse(gpu.matmulLowRank(x4, new Tensor[]{w}, new Backend.LowRankTerm[]{null}, new Tensor[]{y4}), "4 rows, no term");
        assertUntouched(y4);
        Tensor x = dev(randn(r, 1f, 32, k));
        Tensor y = poisoned(DType.F32, 32, 128);
        assertFalse(gpu.matmulLowRank(x, new Tensor[]{w}, new Backend.LowRankTerm[]{null}, new Tensor[]{y}), "no term");
        assertUntouched(y);
        Tensor y96 = poisoned(DType.F32, 32, 96);
        assertFalse(gpu.matmulLowRank(x, new Tensor[]{odd}, new Backend.LowRankTerm[]{oddTerm}, new Tensor[]{y96}),
                "96 rows: not a multiple of 128");
        assertUntouched(y96);
        Tensor f32 = dev(randn(r, 0.5f, 128, k));
        assertFalse(gpu.matmulLowRank(x, new Tensor[]{f32}, new Backend.LowRankTerm[]{term}, new Tensor[]{y}), "an f32 weight");
        assertUntouched(y);
    }

    private void assertUntouched(Tensor y) {
        for (float v : gpu.toHost(y).toFloatArray()) {
            assertTrue(Float.isNaN(v), "a declined call wrote " + v);
        }
    }
}
