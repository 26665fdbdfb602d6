package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Exact mode's grouped expert products ({@link CudaExactExperts}) on the device, for every kind of expert weight (INT4
 * symmetric and with zero points, MXFP4, NVFP4, f32, bf16): over ragged groups of rows (experts with none, one, a
 * partial tile, several tiles), each row, in tiles of 16 or of 64 rows, equals bit for bit the per-expert path ({@code -Dorbit.cuda.exactExperts=off}:
 * each expert through the backend's exact product, bf16 weights at that product's 64-row tiles) and the same row
 * computed alone; the values are within 1e-6 + 1e-5·Σ|terms| of double sums over the format's own decoding; rows in
 * launches of 64 (the split sums' bound set low) equal one launch, and blocks that take every range of K in turn
 * ({@code -Dorbit.cuda.exactFold=on}) equal the split sums; a call mixing kinds is declined (and still right).
 * The transposed products (activation gradients, dx = dy · W_e) the same way for quantized and bf16 experts.
 */
class CudaExactExpertsTest {
    private static CudaBackend gpu;
    private static final String[] KINDS = {"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4", "f32", "bf16"};

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
        assertTrue(gpu.exact());
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
            gpu = null;
        }
    }

    /** Host experts of one kind, their dequantized values, and their device copies. */
    private record Experts(ExpertWeights host, ExpertWeights device, float[][] values) {
    }

    private static Experts experts(String kind, SplittableRandom r, int e, int n, int k) {
        Tensor[] dense = new Tensor[e];
        QuantizedTensor[] quant = new QuantizedTensor[e];
        Tensor[] dDense = new Tensor[e];
        QuantizedTensor[] dQuant = new QuantizedTensor[e];
        float[][] values = new float[e][];
        for (int i = 0; i < e; i++) {
            switch (kind) {
                case "f32", "bf16" -> {
                    Tensor f = CudaTestBase.randn(r, 0.5f, n, k);
                    if (kind.equals("bf16")) {
                        Tensor b = Tensor.allocate(Arena.ofAuto(), DType.BF16, n, k);
                        b.copyFrom(f);
                        f = b;
                    }
                    dense[i] = f;
                    values[i] = f.toFloatArray();
                    dDense[i] = gpu.toDevice(f);
                }
                default -> {
                    quant[i] = CudaQuantTest.random(kind, r, n, k);
                    values[i] = CudaQuantTest.dequantizeRef(quant[i]);
                    dQuant[i] = gpu.toDevice(quant[i]);
                }
            }
        }
        return new Experts(new ExpertWeights(n, k, dense, quant), new ExpertWeights(n, k, dDense, dQuant), values);
    }

    private static void free(Experts x) {
        gpu.synchronize();
        for (int i = 0; i < x.device().experts(); i++) {
            if (x.device().dense(i) != null) {
                gpu.free(x.device().dense(i));
            }
            if (x.device().quantized(i) != null) {
                gpu.free(x.device().quantized(i));
            }
        }
    }

    private static int[] offsets(int[] rows) {
        int[] o = new int[rows.length + 1];
        for (int i = 0; i < rows.length; i++) {
            o[i + 1] = o[i] + rows[i];
        }
        return o;
    }

    private static float[] product(Tensor dx, ExpertWeights w, int[] offsets, int n) {
        Tensor out = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, offsets[offsets.length - 1], n);
        try {
            gpu.moeExpertMatmul(dx, w, offsets, out, 0);
            return gpu.toHost(out).toFloatArray();
        } finally {
            gpu.free(out);
        }
    }

    private static float[] perExpert(Tensor dx, ExpertWeights w, int[] offsets, int n, boolean bf16) {
        return onThePerExpertPath(bf16, () -> product(dx, w, offsets, n));
    }

    /** {@code run} with the grouped kernels off (bf16 weights at the grouped kernels' 64-row tiles). */
    private static float[] onThePerExpertPath(boolean bf16, java.util.function.Supplier<float[]> run) {
        System.setProperty("orbit.cuda.exactExperts", "off");
        if (bf16) {
            System.setProperty("orbit.cuda.exactMmaRows", "1");
            System.setProperty("orbit.cuda.exactMmaWarps", "4");
        }
        try {
            return run.get();
        } finally {
            System.clearProperty("orbit.cuda.exactExperts");
            System.clearProperty("orbit.cuda.exactMmaRows");
            System.clearProperty("orbit.cuda.exactMmaWarps");
        }
    }

    private static void assertBitwise(String what, float[] a, float[] b) {
        CudaTestBase.assertWithin(what, a, b, new double[a.length]);
    }

    /**
     * Every kind at two shapes: N = 96 (one full and one partial block of weight rows), K = 256 in ranges; N = 40,
     * K = 2048 in more ranges. Rows: experts with 0, 1, 70 (a tile and a partial one), 3, 0 and 130 rows.
     */
    @Test
    void groupedRowsEqualThePerExpertPathBitForBit() {
        int[] rows = {0, 1, 70, 3, 0, 130};
        for (int[] nk : new int[][]{{96, 256}, {40, 2048}}) {
            for (String kind : KINDS) {
                check(kind, nk[0], nk[1], rows, 301 + nk[0] + kind.length());
            }
        }
    }

    /**
     * INT4's two forms of exact mode's forward products ({@code -Dorbit.cuda.exactInt4=codes}, the default, which the
     * test above runs, and {@code planes}): in the planes form too the grouped products equal the per-expert path (each
     * expert through the dense INT4 product, which follows the switch), in tiles of 16 and 64 and each row alone,
     * within the double sums' bound; and at K = 2048 the two forms round differently somewhere while each stays within
     * that bound (the switch reaches the kernels, the dense product included).
     */
    @Test
    void int4FormsEachKeepTheGroupedAndDenseProductsAlike() {
        int[] rows = {0, 1, 70, 3, 0, 130};
        for (String kind : new String[]{"int4-g32", "int4-g32-asym"}) {
            System.setProperty("orbit.cuda.exactInt4", "planes");
            try {
                check(kind, 96, 256, rows, 341 + kind.length());
            } finally {
                System.clearProperty("orbit.cuda.exactInt4");
            }
            SplittableRandom r = CudaTestBase.rng(343 + kind.length());
            Experts x = experts(kind, r, rows.length, 96, 2048);
            int[] o = offsets(rows);
            int p = o[rows.length];
            Tensor hx = CudaTestBase.randn(r, 1f, p, 2048);
            Tensor dx = gpu.toDevice(hx);
            try {
                float[] codes = product(dx, x.device(), o, 96);
                float[] codesDense = perExpert(dx, x.device(), o, 96, false);
                System.setProperty("orbit.cuda.exactInt4", "planes");
                float[] planes;
                float[] planesDense;
                try {
                    planes = product(dx, x.device(), o, 96);
                    planesDense = perExpert(dx, x.device(), o, 96, false);
                } finally {
                    System.clearProperty("orbit.cuda.exactInt4");
                }
                String what = kind + " experts N=96 K=2048 rows " + Arrays.toString(rows);
                assertBitwise(what + ", codes form: grouped vs the dense products", codesDense, codes);
                assertBitwise(what + ", planes form: grouped vs the dense products", planesDense, planes);
                assertReference(what + ", codes form", hx.toFloatArray(), x.values(), o, 96, 2048, codes);
                assertReference(what + ", planes form", hx.toFloatArray(), x.values(), o, 96, 2048, planes);
                int differ = 0;
                for (int i = 0; i < codes.length; i++) {
                    differ += Float.floatToRawIntBits(codes[i]) != Float.floatToRawIntBits(planes[i]) ? 1 : 0;
                }
                assertTrue(differ > 0, what + ": the codes and planes forms gave the same bits everywhere");
                System.out.println("exact INT4 " + what + ": each form's grouped and dense products alike, " + differ + " of "
                        + codes.length + " outputs rounded differently between the forms, both within the bound");
            } finally {
                gpu.free(dx);
                free(x);
            }
        }
    }

    /**
     * dx = dy · W_e over the same ragged groups, for the quantized and bf16 kinds: W [96, 256] (the sum over 96 rows of
     * W in 3 chunks; 4 blocks of output columns) and W [64, 96] (a partial block of columns: its second group of 32
     * past the end); at Qwen3-30B-A3B's widths the gradients through down (W [2048, 768]) and gate (W [768, 2048]).
     */
    @Test
    void transposedGroupedRowsEqualThePerExpertPath() {
        int[] rows = {0, 1, 70, 3, 0, 130};
        for (int[] nk : new int[][]{{96, 256}, {64, 96}}) {
            for (String kind : KINDS) {
                if (!kind.equals("f32")) {
                    checkTransposed(kind, nk[0], nk[1], rows, 321 + nk[0] + kind.length());
                }
            }
        }
        int[] decode = new int[128];
        SplittableRandom r = CudaTestBase.rng(322);
        for (int i = 0; i < 512; i++) {
            decode[r.nextInt(128)]++;
        }
        checkTransposed("int4-g32", 2048, 768, decode, 323);
        checkTransposed("int4-g32", 768, 2048, decode, 324);
    }

    private void checkTransposed(String kind, int n, int k, int[] rows, long seed) {
        SplittableRandom r = CudaTestBase.rng(seed);
        Experts x = experts(kind, r, rows.length, n, k);
        int[] o = offsets(rows);
        int p = o[rows.length];
        Tensor hdy = CudaTestBase.randn(r, 1f, p, n);
        Tensor ddy = gpu.toDevice(hdy);
        Tensor out = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, p, k);
        String what = "transposed " + kind + " experts W [" + n + ", " + k + "] rows " + (rows.length > 8 ? p + " over "
                + rows.length + " experts" : Arrays.toString(rows));
        try {
            assertTrue(new CudaExactExperts(gpu.context()).matmulTransposed(ddy, x.device(), o, out), what + ": taken by the grouped kernels");
            float[] grouped = gpu.toHost(out).toFloatArray();
            float[] folded = folded(() -> {
                assertTrue(new CudaExactExperts(gpu.context()).matmulTransposed(ddy, x.device(), o, out), what + ": taken, folded");
                return gpu.toHost(out).toFloatArray();
            });
            assertBitwise(what + ": the ranges of K in one block vs the split sums", grouped, folded);
            float[] per = onThePerExpertPath(kind.equals("bf16"), () -> {
                gpu.moeExpertMatmulTransposed(ddy, x.device(), o, out, 0);
                return gpu.toHost(out).toFloatArray();
            });
            assertBitwise(what + ": grouped vs per expert", per, grouped);
            assertReference(what, hdy.toFloatArray(), x.values(), o, n, k, grouped, true);
            System.out.println("exact grouped experts " + what + ": bit for bit the per-expert path, within f32 of double sums");
        } finally {
            gpu.free(ddy);
            gpu.free(out);
            free(x);
        }
    }

    /** The split sums' bound set low: a call's rows in launches of 64 give the bits of one launch. */
    @Test
    void rowsInLaunchesEqualOneLaunch() {
        int[] rows = {0, 1, 70, 3, 0, 130};
        int n = 96;
        int k = 256;
        SplittableRandom r = CudaTestBase.rng(311);
        Experts x = experts("int4-g32", r, rows.length, n, k);
        int[] o = offsets(rows);
        Tensor dx = gpu.toDevice(CudaTestBase.randn(r, 1f, o[rows.length], k));
        try {
            float[] whole = product(dx, x.device(), o, n);
            System.setProperty("orbit.cuda.exactSplitBytes", "65536");
            float[] inLaunches;
            try {
                inLaunches = product(dx, x.device(), o, n);
            } finally {
                System.clearProperty("orbit.cuda.exactSplitBytes");
            }
            assertBitwise("grouped INT4 experts, rows in launches of 64 vs one launch", whole, inLaunches);
        } finally {
            gpu.free(dx);
            free(x);
        }
    }

    /**
     * Qwen3-30B-A3B's expert widths at a decode step of 64 tokens, 8 of 128 experts each (random routing, grouped by
     * expert): gate/up (N 768, K 2048) and down (N 2048, K 768), INT4 group-32.
     */
    @Test
    void aDecodeStepAtRealWidths() {
        SplittableRandom r = CudaTestBase.rng(312);
        int experts = 128;
        int[] rows = new int[experts];
        for (int t = 0; t < 64; t++) {
            int[] chosen = r.ints(0, experts).distinct().limit(8).toArray();
            for (int e : chosen) {
                rows[e]++;
            }
        }
        check("int4-g32", 768, 2048, rows, 313);
        check("int4-g32", 2048, 768, rows, 314);
    }

    /**
     * The offsets on the device ({@code moeExpertMatmulRouted}: the tile table made by {@code exact_group_tiles} for the
     * most tiles the rows can take): every kind over the ragged groups, in tiles of 16 and 64 rows, in one launch and in
     * launches of 64 rows (the split sums' bound set low, so tiles cross a launch's ends), bit for bit the host offsets'
     * products, also from x's rows one float off a 16-byte boundary (a view, read through a copy); with accumulate, bit
     * for bit {@code moeExpertMatmulAccumulate} into the same random y; a decode step at
     * Qwen3-30B-A3B's widths (128 experts, most with rows, K in 16 ranges); a call with an expert of another kind is
     * declined and leaves y as it was.
     */
    @Test
    void deviceOffsetsGiveTheHostOffsetsBits() {
        int[] rows = {0, 1, 70, 3, 0, 130};
        for (String kind : KINDS) {
            checkRouted(kind, 96, 256, rows, 331 + kind.length());
        }
        checkRouted("int4-g32", 40, 2048, rows, 332);
        int[] decode = new int[128];
        SplittableRandom r = CudaTestBase.rng(333);
        for (int i = 0; i < 512; i++) {
            decode[r.nextInt(128)]++;
        }
        checkRouted("int4-g32", 768, 2048, decode, 334);
        checkRouted("int4-g32", 2048, 768, decode, 335);

        Experts q = experts("int4-g32", r, 2, 64, 128);
        Experts f = experts("f32", r, 2, 64, 128);
        ExpertWeights mixed = new ExpertWeights(64, 128, new Tensor[]{null, f.device().dense(1)},
                new QuantizedTensor[]{q.device().quantized(0), null});
        Tensor off = gpu.toDevice(Tensor.ofInts(new int[]{0, 5, 14}, 3));
        Tensor dx = gpu.toDevice(CudaTestBase.randn(r, 1f, 14, 128));
        Tensor y = gpu.toDevice(CudaTestBase.randn(r, 1f, 14, 64));
        try {
            float[] before = gpu.toHost(y).toFloatArray();
            assertFalse(gpu.moeExpertMatmulRouted(dx, mixed, off, 1f, y, false), "a quantized and an f32 expert in one call");
            assertFalse(gpu.moeExpertMatmulRouted(dx, mixed, off, 0.5f, y, true), "the same, accumulating");
            assertBitwise("y after the declined calls", before, gpu.toHost(y).toFloatArray());
        } finally {
            gpu.free(off);
            gpu.free(dx);
            gpu.free(y);
            free(q);
            free(f);
        }
    }

    private void checkRouted(String kind, int n, int k, int[] rows, long seed) {
        SplittableRandom r = CudaTestBase.rng(seed);
        Experts x = experts(kind, r, rows.length, n, k);
        int[] o = offsets(rows);
        int p = o[rows.length];
        Tensor dx = gpu.toDevice(CudaTestBase.randn(r, 1f, p, k));
        Tensor off = gpu.toDevice(Tensor.ofInts(o, o.length));
        Tensor y0 = CudaTestBase.randn(r, 1f, p, n);
        Tensor y = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, p, n);
        String what = kind + " experts N=" + n + " K=" + k + " rows " + (rows.length > 8 ? p + " over " + rows.length + " experts"
                : Arrays.toString(rows)) + ", offsets on the device";
        try {
            float[] host = product(dx, x.device(), o, n);
            for (String tile : new String[]{null, "16", "64"}) {
                for (String bound : new String[]{null, "65536"}) {
                    setOrClear("orbit.cuda.exactExpertTile", tile);
                    setOrClear("orbit.cuda.exactSplitBytes", bound);
                    String how = what + (tile == null ? "" : ", tiles of " + tile) + (bound == null ? "" : ", launches of 64 rows");
                    try {
                        gpu.allocator().copy(Tensor.of(nan(p * n), p, n), y);
                        assertTrue(gpu.moeExpertMatmulRouted(dx, x.device(), off, 1f, y, false), how + ": taken");
                        assertBitwise(how + " vs the host offsets", host, gpu.toHost(y).toFloatArray());
                    } finally {
                        System.clearProperty("orbit.cuda.exactExpertTile");
                        System.clearProperty("orbit.cuda.exactSplitBytes");
                    }
                }
            }
            for (String tile : new String[]{"16", "64"}) {
                gpu.allocator().copy(Tensor.of(nan(p * n), p, n), y);
                System.setProperty("orbit.cuda.exactExpertTile", tile);
                try {
                    assertBitwise(what + ", tiles of " + tile + ", the ranges of K in one block", host, folded(() -> {
                        assertTrue(gpu.moeExpertMatmulRouted(dx, x.device(), off, 1f, y, false), what + ": taken, folded");
                        return gpu.toHost(y).toFloatArray();
                    }));
                } finally {
                    System.clearProperty("orbit.cuda.exactExpertTile");
                }
            }
            // x's rows one float past a 16-byte boundary (a view into a larger buffer): the kernels read a copy of them
            gpu.allocator().copy(Tensor.of(nan(p * n), p, n), y);
            Tensor shifted = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, (long) p * k + 1);
            try {
                Tensor view = shifted.slice(0, 1, (long) p * k + 1).reshape(p, k);
                gpu.allocator().copy(dx, view);
                assertTrue(CudaAllocator.address(view) % 16 != 0, "the view is off a 16-byte boundary");
                assertTrue(gpu.moeExpertMatmulRouted(view, x.device(), off, 1f, y, false), what + ", x unaligned: taken");
                assertBitwise(what + ", x's rows off a 16-byte boundary vs the host offsets", host, gpu.toHost(y).toFloatArray());
            } finally {
                gpu.free(shifted);
            }
            gpu.allocator().copy(y0, y);
            gpu.moeExpertMatmulAccumulate(dx, x.device(), o, 0.37f, y, false);
            float[] want = gpu.toHost(y).toFloatArray();
            gpu.allocator().copy(y0, y);
            assertTrue(gpu.moeExpertMatmulRouted(dx, x.device(), off, 0.37f, y, true), what + ", accumulating: taken");
            assertBitwise(what + ", y += 0.37 · products vs moeExpertMatmulAccumulate", want, gpu.toHost(y).toFloatArray());
            System.out.println("exact grouped experts " + what + ": bit for bit the host offsets' products, alone, from unaligned "
                    + "rows and accumulated");
        } finally {
            gpu.free(dx);
            gpu.free(off);
            gpu.free(y);
            free(x);
        }
    }

    /** {@code run} with every range of K in one block wherever a call has ranges ({@code -Dorbit.cuda.exactFold=on}). */
    private static float[] folded(java.util.function.Supplier<float[]> run) {
        System.setProperty("orbit.cuda.exactFold", "on");
        try {
            return run.get();
        } finally {
            System.clearProperty("orbit.cuda.exactFold");
        }
    }

    private static void setOrClear(String key, String value) {
        if (value == null) {
            System.clearProperty(key);
        } else {
            System.setProperty(key, value);
        }
    }

    private static float[] nan(int n) {
        float[] v = new float[n];
        Arrays.fill(v, Float.NaN);
        return v;
    }

    /** A call whose experts with rows are of two kinds is declined by the grouped kernels; the per-expert path answers. */
    @Test
    void mixedKindsAreDeclined() {
        SplittableRandom r = CudaTestBase.rng(315);
        int n = 64;
        int k = 128;
        Experts q = experts("int4-g32", r, 2, n, k);
        Experts f = experts("f32", r, 2, n, k);
        ExpertWeights mixed = new ExpertWeights(n, k, new Tensor[]{null, f.device().dense(1)},
                new QuantizedTensor[]{q.device().quantized(0), null});
        int[] o = offsets(new int[]{5, 9});
        Tensor dx = gpu.toDevice(CudaTestBase.randn(r, 1f, 14, k));
        Tensor out = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, 14, n);
        try {
            assertFalse(new CudaExactExperts(gpu.context()).matmul(dx, mixed, o, out), "a quantized and an f32 expert in one call");
            float[] got = product(dx, mixed, o, n);
            float[] xv = gpu.toHost(dx).toFloatArray();
            float[][] values = {q.values()[0], f.values()[1]};
            assertReference("mixed INT4 / f32 experts (per-expert path)", xv, values, o, n, k, got);
        } finally {
            gpu.free(dx);
            gpu.free(out);
            free(q);
            free(f);
        }
    }

    private void check(String kind, int n, int k, int[] rows, long seed) {
        SplittableRandom r = CudaTestBase.rng(seed);
        Experts x = experts(kind, r, rows.length, n, k);
        int[] o = offsets(rows);
        int p = o[rows.length];
        Tensor hx = CudaTestBase.randn(r, 1f, p, k);
        Tensor dx = gpu.toDevice(hx);
        String what = kind + " experts N=" + n + " K=" + k + " rows " + (rows.length > 8 ? p + " over " + rows.length + " experts"
                : Arrays.toString(rows));
        Tensor probe = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, p, n);
        try {
            assertTrue(new CudaExactExperts(gpu.context()).matmul(dx, x.device(), o, probe), what + ": taken by the grouped kernels");
            float[] grouped = product(dx, x.device(), o, n);
            float[] per = perExpert(dx, x.device(), o, n, kind.equals("bf16"));
            assertBitwise(what + ": grouped vs per expert", per, grouped);
            assertBitwise(what + ": the ranges of K in one block vs the split sums", grouped, folded(() -> product(dx, x.device(), o, n)));
            for (String tile : new String[]{"16", "64"}) {   // the kernels of 16-row and 64-row tiles of x
                System.setProperty("orbit.cuda.exactExpertTile", tile);
                try {
                    assertBitwise(what + ": tiles of " + tile + " rows vs per expert", per, product(dx, x.device(), o, n));
                    assertBitwise(what + ": tiles of " + tile + " rows, the ranges of K in one block, vs per expert", per,
                            folded(() -> product(dx, x.device(), o, n)));
                } finally {
                    System.clearProperty("orbit.cuda.exactExpertTile");
                }
            }
            assertReference(what, hx.toFloatArray(), x.values(), o, n, k, grouped);
            // rows alone: the first and last row of each expert, as a one-row call of that expert
            for (int e = 0; e < rows.length; e++) {
                for (int row : rows[e] == 0 ? new int[0] : new int[]{o[e], o[e + 1] - 1}) {
                    int[] one = new int[rows.length + 1];
                    for (int i = e + 1; i <= rows.length; i++) {
                        one[i] = 1;
                    }
                    float[] alone = product(dx.slice(0, row, row + 1), x.device(), one, n);
                    assertBitwise(what + ": row " + row + " (expert " + e + ") alone vs in the call",
                            Arrays.copyOfRange(grouped, row * n, (row + 1) * n), alone);
                }
            }
            System.out.println("exact grouped experts " + what + ": bit for bit the per-expert path and each row alone");
        } finally {
            gpu.free(probe);
            gpu.free(dx);
            free(x);
        }
    }

    /** {@link #assertReference(String, float[], float[][], int[], int, int, float[], boolean)} of x · W_eᵀ. */
    private static void assertReference(String what, float[] xv, float[][] values, int[] o, int n, int k, float[] got) {
        assertReference(what, xv, values, o, n, k, got, false);
    }

    /**
     * got within 1e-6 + 1e-5·Σ|terms| of the double sums of each row with its expert's decoded weight W_e [n, k]: x rows of
     * k values times W_eᵀ (n outputs), or, transposed, x rows of n values times W_e (k outputs).
     */
    private static void assertReference(String what, float[] xv, float[][] values, int[] o, int n, int k, float[] got,
                                        boolean transposed) {
        int p = o[o.length - 1];
        int in = transposed ? n : k;
        int out = transposed ? k : n;
        float[] ref = new float[p * out];
        double[] tol = new double[p * out];
        int checked = 0;
        for (int e = 0; e + 1 < o.length; e++) {
            float[] w = values[e];
            for (int row = o[e]; row < o[e + 1]; row++) {
                for (int j = 0; j < out; j++) {
                    double d = 0;
                    double a = 0;
                    for (int q = 0; q < in; q++) {
                        double t = (double) xv[row * in + q] * w[transposed ? q * k + j : j * k + q];
                        d += t;
                        a += Math.abs(t);
                    }
                    ref[row * out + j] = (float) d;
                    tol[row * out + j] = 1e-6 + 1e-5 * a;
                    checked++;
                }
            }
        }
        assertEquals(p * out, checked);
        CudaTestBase.assertWithin(what + " against double sums", ref, got, tol);
    }
}
