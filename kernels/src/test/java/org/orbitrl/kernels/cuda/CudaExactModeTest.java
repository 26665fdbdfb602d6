package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Exact mode on the GPU: a row's result must not depend on the batch it is computed in. Each
 * product is taken once over a batch of rows and again one row at a time (and over a sub-batch
 * at an offset); the results must be bitwise equal, and equal to the product whose blocks take every range of K in turn
 * ({@code -Dorbit.cuda.exactFold=on}, the form of training sizes). Causal attention over a whole sequence must
 * equal, bitwise, the same queries run one at a time against the growing key prefix (as decode
 * does). The values are also checked against the scalar backend: 1e-6 + 1e-5·Σ|terms| for the
 * products, 2e-6 + 2e-5·|ref| for attention.
 */
class CudaExactModeTest {
    private static CudaBackend gpu;
    private static final ScalarBackend cpu = new ScalarBackend();

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

    private static float[] bits(Tensor dev) {
        return gpu.toHost(dev).toFloatArray();
    }

    private static void assertBitwise(String what, float[] a, float[] b) {
        double[] zero = new double[a.length];
        CudaTestBase.assertWithin(what, a, b, zero);
    }

    /**
     * Shapes of the tensor-core kernels (K a multiple of 8): one tile, several tiles of tokens and of weight rows with
     * ragged edges and K past a multiple of the 32-value stage, K in ranges (20 of 80 chunks; 8 of 32; 4 uneven ranges
     * of 17), a LoRA factor's width; the rows in launches of 64 (the split sums' bound set low) against one launch; blocks
     * of one row tile a warp for a bf16 weight too, 8 warps and 4 ({@code -Dorbit.cuda.exactMmaRows=1}, {@code
     * -Dorbit.cuda.exactMmaWarps=4}); and the CUDA-core kernel (K = 12, and with {@code -Dorbit.cuda.exactMma=off}).
     */
    @Test
    void productsAreBatchInvariant() {
        int[][] cases = {{21, 70, 96}, {150, 130, 40}, {67, 96, 2560}, {40, 200, 1024}, {33, 16, 544}, {70, 16, 64},
                {21, 33, 12}};
        for (int[] c : cases) {
            productsAreBatchInvariant(c[0], c[1], c[2]);
        }
        float[] whole = productsAreBatchInvariant(150, 96, 2560);
        System.setProperty("orbit.cuda.exactSplitBytes", "65536");
        try {
            float[] inLaunches = productsAreBatchInvariant(150, 96, 2560);
            assertBitwise("exact 150 x 96 x 2560 in launches of 64 rows vs one launch", whole, inLaunches);
        } finally {
            System.clearProperty("orbit.cuda.exactSplitBytes");
        }
        System.setProperty("orbit.cuda.exactMmaRows", "1");
        try {
            productsAreBatchInvariant(150, 200, 1024);
            productsAreBatchInvariant(21, 70, 96);
            System.setProperty("orbit.cuda.exactMmaWarps", "4");
            productsAreBatchInvariant(150, 130, 1024);
        } finally {
            System.clearProperty("orbit.cuda.exactMmaRows");
            System.clearProperty("orbit.cuda.exactMmaWarps");
        }
        System.setProperty("orbit.cuda.exactMma", "off");
        try {
            productsAreBatchInvariant(21, 70, 96);
        } finally {
            System.clearProperty("orbit.cuda.exactMma");
        }
    }

    /** The checks at one shape; returns the bf16 weight's product of the whole batch. */
    private float[] productsAreBatchInvariant(int m, int n, int k) {
        SplittableRandom r = CudaTestBase.rng(91 + m + n + k);
        int rowTile = CudaExactOps.blockRows(1);
        int splits = CudaExactOps.splits((n + rowTile - 1) / rowTile, k, gpu.context().device.multiprocessors());
        String shape = "M=" + m + " N=" + n + " K=" + k + (CudaExactOps.tensorCores(k) ? " (tensor cores, bf16 weight: " + splits
                + " ranges of K, rows a launch " + Math.min(m, CudaExactOps.rowsPerLaunch(splits, n)) + ")" : " (CUDA cores)");
        System.out.println("exact products " + shape);
        float[] bf16Full = null;
        Tensor x = CudaTestBase.randn(r, 1f, m, k);
        Tensor wf = CudaTestBase.randn(r, 0.5f, n, k);
        Tensor wb = Tensor.allocate(Arena.ofAuto(), DType.BF16, n, k);
        wb.copyFrom(wf);
        QuantizedTensor wq = k % 32 == 0 ? CudaQuantTest.random("int4-g32", r, n, k) : null;
        Tensor dx = gpu.toDevice(x);
        Tensor dwf = gpu.toDevice(wf);
        Tensor dwb = gpu.toDevice(wb);
        QuantizedTensor dwq = wq != null ? gpu.toDevice(wq) : null;
        // sub-batches at offsets: inside the first 64-token tile, and across the first tile's edge where there is one
        int[][] parts = m > 64 ? new int[][]{{5, 16}, {60, m - 7}} : new int[][]{{5, 16}};
        try {
            for (String kind : wq != null ? new String[]{"f32", "bf16", "int4-g32"} : new String[]{"f32", "bf16"}) {
                Tensor all = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, m, n);
                run(kind, dx, dwf, dwb, dwq, all);
                float[] full = bits(all);
                if (kind.equals("bf16")) {
                    bf16Full = full;
                }
                System.setProperty("orbit.cuda.exactFold", "on");   // every range of K in one block: the split sums' bits
                try {
                    run(kind, dx, dwf, dwb, dwq, all);
                } finally {
                    System.clearProperty("orbit.cuda.exactFold");
                }
                assertBitwise("exact " + kind + " " + shape + ": the ranges of K in one block vs the split sums", full, bits(all));
                Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
                switch (kind) {
                    case "f32" -> cpu.matmul(x, wf, ref);
                    case "bf16" -> cpu.matmul(x, wb, ref);
                    default -> cpu.matmulQuantized(x, wq, ref);
                }
                float[] wv = kind.equals("int4-g32") ? CudaQuantTest.dequantizeRef(wq) : (kind.equals("f32") ? wf : wb).toFloatArray();
                float[] xv = x.toFloatArray();
                double[] tol = CudaTestBase.absDot(xv, wv, m, n, k);
                double[] exact = new double[m * n];
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < n; j++) {
                        double d = 0;
                        for (int p = 0; p < k; p++) {
                            d += (double) xv[i * k + p] * wv[j * k + p];
                        }
                        exact[i * n + j] = d;
                    }
                }
                for (int i = 0; i < tol.length; i++) {
                    tol[i] = 1e-6 + 1e-5 * tol[i]; // f32 accumulation of exact products (a bf16 rounding of x would need 2^-8)
                }
                CudaTestBase.assertWithin("exact " + kind + " " + shape + " against the scalar backend", ref.toFloatArray(), full, tol);
                float[] exactF = new float[exact.length];
                for (int i = 0; i < exact.length; i++) {
                    exactF[i] = (float) exact[i];
                }
                CudaTestBase.assertWithin("exact " + kind + " " + shape + " against the double sums", exactF, full, tol);
                for (int row = 0; row < m; row += m > 64 ? 7 : 1) {
                    Tensor one = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, 1, n);
                    run(kind, dx.slice(0, row, row + 1), dwf, dwb, dwq, one);
                    float[] expect = java.util.Arrays.copyOfRange(full, row * n, (row + 1) * n);
                    assertBitwise("exact " + kind + " " + shape + ": row " + row + " alone vs in a batch of " + m, expect, bits(one));
                    gpu.free(one);
                }
                for (int[] pr : parts) {
                    int rows = pr[1] - pr[0];
                    Tensor part = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, rows, n);
                    run(kind, dx.slice(0, pr[0], pr[1]), dwf, dwb, dwq, part);
                    assertBitwise("exact " + kind + " " + shape + ": rows " + pr[0] + ".." + (pr[1] - 1) + " as a batch of " + rows
                            + " vs in a batch of " + m, java.util.Arrays.copyOfRange(full, pr[0] * n, pr[1] * n), bits(part));
                    gpu.free(part);
                }
                gpu.free(all);
            }
        } finally {
            gpu.synchronize();
            gpu.free(dx);
            gpu.free(dwf);
            gpu.free(dwb);
            if (dwq != null) {
                gpu.free(dwq);
            }
        }
        return bf16Full;
    }

    /**
     * dx = dy · w in exact mode at f32 precision for f32, bf16 and INT4 weights: the tensor-core kernels over wᵀ's
     * planes (N = 96; N = 2560 in 20 ranges of K), the f32 cuBLAS product where N is not a multiple of 8 (N = 36).
     */
    @Test
    void activationGradientsThroughFrozenWeightsAreF32() {
        int[][] cases = {{37, 96, 64}, {70, 2560, 192}, {37, 36, 64}};
        for (int[] c : cases) {
            activationGradientsAreF32(c[0], c[1], c[2]);
        }
    }

    private void activationGradientsAreF32(int m, int n, int k) {
        SplittableRandom r = CudaTestBase.rng(93 + n);
        Tensor dy = CudaTestBase.randn(r, 1f, m, n);
        Tensor wf = CudaTestBase.randn(r, 0.5f, n, k);
        Tensor wb = Tensor.allocate(Arena.ofAuto(), DType.BF16, n, k);
        wb.copyFrom(wf);
        QuantizedTensor wq = CudaQuantTest.random("int4-g32", r, n, k);
        Tensor ddy = gpu.toDevice(dy);
        Tensor dwf = gpu.toDevice(wf);
        Tensor dwb = gpu.toDevice(wb);
        QuantizedTensor dwq = gpu.toDevice(wq);
        Tensor out = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, m, k);
        String shape = "M=" + m + " N=" + n + " K=" + k + (CudaExactOps.tensorCores(n) ? " (tensor cores)" : " (cuBLAS f32)");
        try {
            for (String kind : new String[]{"f32", "bf16", "int4-g32"}) {
                Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, k);
                float[] wv;
                switch (kind) {
                    case "f32" -> {
                        cpu.matmulTransposed(dy, wf, ref);
                        gpu.matmulTransposed(ddy, dwf, out);
                        wv = wf.toFloatArray();
                    }
                    case "bf16" -> {
                        cpu.matmulTransposed(dy, wb, ref);
                        gpu.matmulTransposed(ddy, dwb, out);
                        wv = wb.toFloatArray();
                    }
                    default -> {
                        cpu.matmulQuantizedTransposed(dy, wq, ref);
                        gpu.matmulQuantizedTransposed(ddy, dwq, out);
                        wv = CudaQuantTest.dequantizeRef(wq);
                    }
                }
                float[] d = dy.toFloatArray();
                double[] tol = new double[m * k];
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < n; j++) {
                        for (int p = 0; p < k; p++) {
                            tol[i * k + p] += Math.abs((double) d[i * n + j] * wv[j * k + p]);
                        }
                    }
                }
                for (int i = 0; i < tol.length; i++) {
                    tol[i] = 1e-6 + 1e-5 * tol[i]; // f32 accumulation, no bf16 rounding (which would need 2^-8)
                }
                CudaTestBase.assertWithin("exact matmulTransposed, " + kind + " weight, " + shape + ", against the scalar backend",
                        ref.toFloatArray(), bits(out), tol);
            }
        } finally {
            gpu.synchronize();
            gpu.free(ddy);
            gpu.free(dwf);
            gpu.free(dwb);
            gpu.free(dwq);
            gpu.free(out);
        }
    }

    private static void run(String kind, Tensor x, Tensor wf, Tensor wb, QuantizedTensor wq, Tensor y) {
        switch (kind) {
            case "f32" -> gpu.matmul(x, wf, y);
            case "bf16" -> gpu.matmul(x, wb, y);
            default -> gpu.matmulQuantized(x, wq, y);
        }
    }

    /**
     * Every shape class of exact attention: the tiled kernel's rows of 64 in prefill and of 8 / 16 in a one-query call
     * (groups of 2 to 24 heads a kv head, so a block holds 32 to 2 queries, or one query's heads in several blocks), key
     * tiles of 64 crossed several times, a window, sinks, v narrower than q/k, and the per-query kernel for heads above
     * 128. The prefill is checked against the scalar backend, then each query alone over its key prefix, and a chunk of
     * later queries at an offset, must give the prefill's bits.
     */
    @Test
    void attentionIsTheSameInPrefillAndDecode() {
        SplittableRandom r = CudaTestBase.rng(92);
        int[][] cases = { // T, Hq, Hkv, D, Dv, window, sinks
            {37, 8, 2, 64, 64, 0, 0}, {70, 4, 4, 128, 128, 16, 0}, {200, 16, 2, 128, 128, 0, 0}, {150, 16, 2, 64, 64, 128, 1},
            {90, 32, 2, 64, 64, 0, 0}, {75, 24, 1, 32, 32, 0, 1}, {66, 6, 3, 96, 40, 0, 0}, {20, 4, 2, 192, 192, 0, 0}};
        for (int[] c : cases) {
            int t = c[0], hq = c[1], hkv = c[2], d = c[3], dv = c[4], win = c[5];
            Tensor q = CudaTestBase.randn(r, 1f, t, hq, d);
            Tensor k = CudaTestBase.randn(r, 1f, t, hkv, d);
            Tensor v = CudaTestBase.randn(r, 1f, t, hkv, dv);
            Tensor sinks = c[6] == 1 ? CudaTestBase.randn(r, 2f, hq) : null;
            AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), win, sinks);
            Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, t, hq, dv);
            cpu.attention(q, k, v, ref, 0, spec);
            Tensor dq = gpu.toDevice(q);
            Tensor dk = gpu.toDevice(k);
            Tensor dv2 = gpu.toDevice(v);
            Tensor dsinks = sinks == null ? null : gpu.toDevice(sinks);
            AttentionSpec gspec = new AttentionSpec(spec.scale(), win, dsinks);
            Tensor out = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, t, hq, dv);
            Tensor step = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, 1, hq, dv);
            int chunk = t / 3;
            Tensor tail = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, t - chunk, hq, dv);
            String name = "exact attention T=" + t + " Hq=" + hq + " Hkv=" + hkv + " D=" + d + " Dv=" + dv + " window=" + win
                    + " sinks=" + (sinks != null);
            try {
                gpu.attention(dq, dk, dv2, out, 0, gspec);
                float[] full = bits(out);
                CudaTestBase.assertClose(name + " against the scalar backend", ref.toFloatArray(), full, 2e-6, 2e-5);
                int row = hq * dv;
                for (int i = 0; i < t; i++) {
                    gpu.attention(dq.slice(0, i, i + 1), dk.slice(0, 0, i + 1), dv2.slice(0, 0, i + 1), step, i, gspec);
                    assertBitwise(name + ": query " + i + " alone vs in prefill",
                            java.util.Arrays.copyOfRange(full, i * row, (i + 1) * row), bits(step));
                }
                gpu.attention(dq.slice(0, chunk, t), dk, dv2, tail, chunk, gspec);
                assertBitwise(name + ": queries " + chunk + ".. at an offset vs in prefill",
                        java.util.Arrays.copyOfRange(full, chunk * row, t * row), bits(tail));
            } finally {
                gpu.synchronize();
                for (Tensor x : new Tensor[]{dq, dk, dv2, dsinks, out, step, tail}) {
                    if (x != null) {
                        gpu.free(x);
                    }
                }
            }
        }
    }

    /**
     * Exact mode's tiled forward keeps each row's log-sum-exp ({@code attentionWithStats}) and the tiled f32 backward,
     * given it and the forward's output, skips its own first pass over the keys: its gradients against the scalar
     * backend's to the tiled backward's tolerance (1e-5 + 1e-4·|ref|) and against the full backward's to 1e-5 of each
     * gradient's largest element (the statistics come from the forward's sums, delta from its output: f32 either way).
     * Offsets, windows, sinks, GQA, head dims 64 and 128, a chunk of queries after a prefix. A 192-wide head (the
     * per-query kernel) keeps none.
     */
    @Test
    void backwardFromTheForwardsStatisticsMatchesTheReference() {
        SplittableRandom r = CudaTestBase.rng(96);
        assertTrue(gpu.keepsAttentionStats(), "exact mode keeps attention statistics");
        int[][] cases = {{40, 40, 0, 8, 2, 64, 0, 0}, {150, 150, 0, 16, 2, 128, 0, 1}, {77, 200, 123, 8, 1, 64, 48, 1},
            {100, 100, 0, 4, 4, 128, 16, 0}}; // T, S, queryStart, Hq, Hkv, D, window, sinks
        for (int[] c : cases) {
            int t = c[0], s = c[1], qs = c[2], hq = c[3], hkv = c[4], d = c[5], win = c[6];
            Tensor q = CudaTestBase.randn(r, 1f, t, hq, d);
            Tensor k = CudaTestBase.randn(r, 1f, s, hkv, d);
            Tensor v = CudaTestBase.randn(r, 1f, s, hkv, d);
            Tensor dout = CudaTestBase.randn(r, 1f, t, hq, d);
            Tensor sinks = c[7] == 1 ? CudaTestBase.randn(r, 2f, hq) : null;
            AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), win, sinks);
            Tensor rq = Tensor.allocate(Arena.ofAuto(), DType.F32, t, hq, d);
            Tensor rk = Tensor.allocate(Arena.ofAuto(), DType.F32, s, hkv, d);
            Tensor rv = Tensor.allocate(Arena.ofAuto(), DType.F32, s, hkv, d);
            cpu.attentionBackward(q, k, v, dout, qs, spec, rq, rk, rv);
            String what = String.format("T=%d S=%d start=%d Hq=%d Hkv=%d D=%d window=%d sinks=%b", t, s, qs, hq, hkv, d, win,
                    sinks != null);
            java.util.List<Tensor> held = new java.util.ArrayList<>();
            java.util.function.Function<Tensor, Tensor> up = x -> {
                Tensor y = gpu.toDevice(x);
                held.add(y);
                return y;
            };
            java.util.function.Function<int[], Tensor> alloc = shape -> {
                Tensor y = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32,
                        java.util.Arrays.stream(shape).asLongStream().toArray());
                held.add(y);
                return y;
            };
            try {
                Tensor dq = up.apply(q), dk = up.apply(k), dv = up.apply(v), ddout = up.apply(dout);
                AttentionSpec gspec = new AttentionSpec(spec.scale(), win, sinks == null ? null : up.apply(sinks));
                Tensor out = alloc.apply(new int[]{t, hq, d});
                Tensor lse = alloc.apply(new int[]{t, hq});
                assertTrue(gpu.attentionWithStats(dq, dk, dv, out, qs, gspec, lse), "statistics kept: " + what);
                Tensor[] full = {alloc.apply(new int[]{t, hq, d}), alloc.apply(new int[]{s, hkv, d}), alloc.apply(new int[]{s, hkv, d})};
                Tensor[] kept = {alloc.apply(new int[]{t, hq, d}), alloc.apply(new int[]{s, hkv, d}), alloc.apply(new int[]{s, hkv, d})};
                gpu.attentionBackward(dq, dk, dv, ddout, qs, gspec, full[0], full[1], full[2]);
                gpu.attentionBackward(dq, dk, dv, out, lse, ddout, qs, gspec, kept[0], kept[1], kept[2]);
                Tensor[] ref = {rq, rk, rv};
                for (int i = 0; i < 3; i++) {
                    String g = "d" + "qkv".charAt(i) + " " + what;
                    float[] got = gpu.toHost(kept[i]).toFloatArray();
                    CudaTestBase.assertClose("exact backward from the forward's statistics, " + g, ref[i].toFloatArray(), got, 1e-5, 1e-4);
                    CudaTestBase.assertCloseToScale("exact backward from the forward's statistics against the full backward, " + g,
                            gpu.toHost(full[i]).toFloatArray(), got, 1e-5);
                }
            } finally {
                gpu.synchronize();
                held.forEach(gpu::free);
            }
        }
        Tensor q = gpu.toDevice(CudaTestBase.randn(r, 1f, 20, 4, 192));
        Tensor k = gpu.toDevice(CudaTestBase.randn(r, 1f, 20, 2, 192));
        Tensor out = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, 20, 4, 192);
        Tensor lse = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, 20, 4);
        try {
            assertTrue(!gpu.attentionWithStats(q, k, k, out, 0, new AttentionSpec(0.07f, 0, null), lse),
                    "a 192-wide head takes the per-query kernel, which keeps no statistics");
        } finally {
            gpu.synchronize();
            for (Tensor x : new Tensor[]{q, k, out, lse}) {
                gpu.free(x);
            }
        }
    }

    /**
     * A batch of sequences decoding one token each over a paged cache (blocks scattered, tables
     * padded, lengths ragged) gives, row for row, bitwise the attention of the same query as the
     * last query of its sequence's exact prefill; with each way of copying the key tiles
     * ({@code orbit.cuda.exactDecodeCopy}) the same bits.
     */
    @Test
    void pagedDecodeEqualsPrefillBitwise() {
        pagedCase(CudaTestBase.rng(93), 8, 2, 64, 16, new int[]{1, 17, 40, 33}, false);
        // Qwen3-30B-A3B's heads (8 query heads a kv head, 128 channels), several key tiles, sinks; 16 heads a kv head
        pagedCase(CudaTestBase.rng(94), 16, 2, 128, 16, new int[]{130, 1, 70, 64, 65}, true);
        pagedCase(CudaTestBase.rng(95), 32, 2, 64, 32, new int[]{100, 3}, false);
    }

    private void pagedCase(SplittableRandom r, int hq, int hkv, int d, int bs, int[] lens, boolean withSinks) {
        int maxBlocks = 0;
        int used = 0;
        for (int len : lens) {
            maxBlocks = Math.max(maxBlocks, (len + bs - 1) / bs);
            used += (len + bs - 1) / bs;
        }
        int poolBlocks = used + 3;
        int rows = poolBlocks * bs;                      // a pool of blocks handed out in a shuffled order
        int[] order = new int[poolBlocks];
        for (int i = 0; i < poolBlocks; i++) {
            order[i] = i;
        }
        for (int i = poolBlocks - 1; i > 0; i--) {
            int j = r.nextInt(i + 1);
            int x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        float[] kc = new float[rows * hkv * d];
        float[] vc = new float[rows * hkv * d];
        for (int i = 0; i < kc.length; i++) {
            kc[i] = (float) r.nextGaussian();
            vc[i] = (float) r.nextGaussian();
        }
        int[] tables = new int[lens.length * maxBlocks];
        int next = 0;
        for (int b = 0; b < lens.length; b++) {
            for (int j = 0; j < (lens[b] + bs - 1) / bs; j++) {
                tables[b * maxBlocks + j] = order[next++];
            }
        }
        for (int b = 0; b < lens.length; b++) {   // the rest of each sequence's last block: never written, here NaN
            for (int p = lens[b]; p < (lens[b] + bs - 1) / bs * bs; p++) {
                int slot = tables[b * maxBlocks + p / bs] * bs + p % bs;
                java.util.Arrays.fill(kc, slot * hkv * d, (slot + 1) * hkv * d, Float.NaN);
                java.util.Arrays.fill(vc, slot * hkv * d, (slot + 1) * hkv * d, Float.NaN);
            }
        }
        Tensor sinks = withSinks ? CudaTestBase.randn(r, 2f, hq) : null;
        Tensor dsinks = sinks == null ? null : gpu.toDevice(sinks);
        Tensor q = CudaTestBase.randn(r, 1f, lens.length, hq, d);
        for (int win : new int[]{0, 9}) {
            AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), win, dsinks);
            Tensor dq = gpu.toDevice(q);
            Tensor dkc = gpu.toDevice(Tensor.of(kc, rows, hkv * d));
            Tensor dvc = gpu.toDevice(Tensor.of(vc, rows, hkv * d));
            Tensor dt = gpu.toDevice(Tensor.ofInts(tables, lens.length, maxBlocks));
            Tensor dl = gpu.toDevice(Tensor.ofInts(lens, lens.length));
            Tensor out = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, lens.length, hq, d);
            try {
                // each way the decode blocks may copy their tiles; the first is the default's
                String[] copies = {"async", "double", "plain"};
                float[][] byCopy = new float[copies.length][];
                float[] nan = new float[lens.length * hq * d];
                java.util.Arrays.fill(nan, Float.NaN);
                for (int m = 0; m < copies.length; m++) {
                    gpu.copyToDevice(Tensor.of(nan, lens.length, hq, d), out);   // what a launch leaves unwritten stays NaN
                    CudaTestBase.withProperty("orbit.cuda.exactDecodeCopy", copies[m],
                            () -> gpu.pagedDecodeAttention(dq, dkc, dvc, dt, dl, bs, hkv, out, spec));
                    byCopy[m] = bits(out);
                }
                for (int m = 1; m < copies.length; m++) {
                    assertBitwise("exact paged decode, Hq " + hq + " D " + d + ", window " + win + ": tiles copied "
                            + copies[m] + " vs " + copies[0], byCopy[0], byCopy[m]);
                }
                float[] paged = byCopy[0];
                int row = hq * d;
                for (int b = 0; b < lens.length; b++) {
                    int len = lens[b];
                    float[] kk = new float[len * hkv * d];
                    float[] vv = new float[len * hkv * d];
                    for (int p = 0; p < len; p++) {
                        int slot = tables[b * maxBlocks + p / bs] * bs + p % bs;
                        System.arraycopy(kc, slot * hkv * d, kk, p * hkv * d, hkv * d);
                        System.arraycopy(vc, slot * hkv * d, vv, p * hkv * d, hkv * d);
                    }
                    // the sequence's prefill: its earlier queries are arbitrary, the last is the decoded one
                    float[] qs = new float[len * row];
                    float[] qb = q.toFloatArray();
                    for (int i = 0; i < qs.length; i++) {
                        qs[i] = (float) r.nextGaussian();
                    }
                    System.arraycopy(qb, b * row, qs, (len - 1) * row, row);
                    Tensor pq = gpu.toDevice(Tensor.of(qs, len, hq, d));
                    Tensor pk = gpu.toDevice(Tensor.of(kk, len, hkv, d));
                    Tensor pv = gpu.toDevice(Tensor.of(vv, len, hkv, d));
                    Tensor po = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, DType.F32, len, hq, d);
                    gpu.attention(pq, pk, pv, po, 0, spec);
                    float[] pre = bits(po);
                    assertBitwise("exact paged decode, Hq " + hq + " Hkv " + hkv + " D " + d + " sinks " + withSinks
                                    + ", sequence " + b + " of length " + len + ", window " + win
                                    + ": decoded vs the last query of its prefill",
                            java.util.Arrays.copyOfRange(pre, (len - 1) * row, len * row),
                            java.util.Arrays.copyOfRange(paged, b * row, (b + 1) * row));
                    for (Tensor x : new Tensor[]{pq, pk, pv, po}) {
                        gpu.free(x);
                    }
                }
            } finally {
                gpu.synchronize();
                for (Tensor x : new Tensor[]{dq, dkc, dvc, dt, dl, out}) {
                    gpu.free(x);
                }
            }
        }
        if (dsinks != null) {
            gpu.free(dsinks);
        }
    }
}
