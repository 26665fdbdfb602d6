package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.NotCapturableException;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * {@link Backend#matmulLowRank} on the device: up to three bf16 weights that read the same x (an attention block's q, k
 * and v, or its o) with their LoRA terms in two launches, the terms' A products first ({@code narrow_matmul3_f32}),
 * then the base products with each term's B added to its outputs: at 1 to {@value CudaMatmulOps#QGEMV_MAX_ROWS} rows
 * of x the GEMV ({@code bgemv_lr_m*}, f32 x), at {@value #DMMA_MIN_ROWS} to {@value #DMMA_MAX_ROWS} the tensor-core
 * decode kernels ({@code dmma.cu}, x rounded to bf16 once), below their bound of weight rows cuBLAS from the same
 * bf16 x. {@link CudaMatmulOps} holds the dense products these share.
 */
final class CudaLowRankOps {
    /**
     * Rows of x for which {@link #matmulLowRank} takes the tensor-core decode kernels ({@code dmma.cu}): above the GEMV's
     * (whose f32 rows stay exact), at most 64 (8 n-tiles of 8 tokens a warp). {@code -Dorbit.cuda.dmma=off} declines.
     */
    static final int DMMA_MIN_ROWS = CudaMatmulOps.QGEMV_MAX_ROWS + 1;
    static final int DMMA_MAX_ROWS = 64;
    private static final boolean DMMA = !"off".equals(System.getProperty("orbit.cuda.dmma"));
    private static final int DMMA_ROWS = 128;      // DM_ROWS: weight rows a block
    private static final int DMMA_THREADS = 256;   // DM_THREADS
    private static final int DMMA_KC = 64;         // DM_KC: values of K a stage
    private static final int DMMA_STAGES = 4;      // DM_ST
    private static final int DMMA_RMAX = 64;       // DM_RMAX
    /**
     * Blocks an SM the splits of K aim at: one and a half, the count of splits rounded to the nearest (q, k and v of
     * Qwen3-30B-A3B, 40 row blocks on 132 SMs: 5 splits, 200 blocks). On the H200, batch 64 of the decode step with 5
     * splits against 2 (the largest power of two within one block an SM, the default before): 20.108 ms against 20.433
     * and 20.368 in one JVM, 20.398 against 20.563 in another call (4: 20.480; 3: 20.591; 6: 20.503).
     */
    private static final double DMMA_SPLIT_BLOCKS_AN_SM = 1.5;
    private static final int DMMA_SPLITS = 8;      // DM_SPLITS: ranges of K at most
    /**
     * Weight rows a call needs in all (every weight's rows together) to take the tensor-core decode kernels: with fewer,
     * filling the device takes deep splits of K, whose partial sums cost more than they save (on the H200, Qwen3-30B-A3B's
     * o projection, 2048 rows over K = 4096, took 27.5 µs at 64 rows against 23.7 for cuBLAS and the separate terms,
     * while q, k and v, 5120 rows together, took 31.3 against 36.7; {@code GpuDecodeOpsBench lowrank}).
     * {@code -Dorbit.cuda.dmmaMinRows=N} moves the bound.
     */
    static int dmmaMinRows() {
        return Integer.getInteger("orbit.cuda.dmmaMinRows", 4096);
    }

    /**
     * {@code -Dorbit.cuda.dmmaChunk=128}: stages of 128 values of K (a row's 256 bytes a copy round, four stages in most
     * of an SM's shared memory) instead of 64, where K is a multiple of 128; read at each call. The same sums in the same
     * order wherever the splits of K fall on the same values.
     */
    private static int dmmaChunk(int k) {
        return Integer.getInteger("orbit.cuda.dmmaChunk", DMMA_KC) == 2 * DMMA_KC && k % (2 * DMMA_KC) == 0 ? 2 * DMMA_KC : DMMA_KC;
    }

    /** {@code -Dorbit.cuda.dmmaSplits=N}: that many ranges of K (1 to 8) instead of the most that fit a block an SM; read at each call. */
    private static int dmmaSplitsSet() {
        return Integer.getInteger("orbit.cuda.dmmaSplits", 0);
    }
    /** Partial tiles the split products leave (f32: 8 MiB) and row blocks a call at most (a counter each). */
    private static final int DMMA_PART_FLOATS = 2 << 20;
    private static final int DMMA_COUNTERS = 4096;

    private final CudaContext ctx;
    private final CudaMatmulOps matmul;
    private final Kernel dmma32;
    private final Kernel dmma64;
    private final Kernel dmmaWide32;
    private final Kernel dmmaWide64;
    /** dmma.cu's partial tiles and its counters (kept zero between launches), made at the first call outside a capture. */
    private Tensor dmmaPart;
    private Tensor dmmaCounters;

    CudaLowRankOps(CudaContext ctx, CudaMatmulOps matmul) {
        this.ctx = ctx;
        this.matmul = matmul;
        this.dmma32 = ctx.kernel("dmma", "dmma_bf16_m32_f32");
        this.dmma64 = ctx.kernel("dmma", "dmma_bf16_m64_f32");
        this.dmmaWide32 = ctx.kernel("dmma", "dmma_bf16_wide_m32_f32");
        this.dmmaWide64 = ctx.kernel("dmma", "dmma_bf16_wide_m64_f32");
    }

    /**
     * {@link Backend#matmulLowRank} for {@value #DMMA_MIN_ROWS} to {@value #DMMA_MAX_ROWS} rows of x, up to three bf16
     * weights of rows a multiple of 128, K a multiple of 64, and f32 LoRA factors of rank at most 64 (a multiple of 4)
     * on at least one of them: one {@code narrow_matmul3_f32} launch for the terms' x · Aᵀ (the sums of {@link
     * CudaMatmulOps#matmulShared}) that also writes x rounded to bf16, then one {@code dmma.cu} launch for the base
     * products on tensor cores (x and the weights in bf16, f32 sums, split over K in a fixed order) with each term's s ·
     * (x · Aᵀ) · Bᵀ added in f32. Below {@link #dmmaMinRows} weight rows in all (an attention block's o), or where the split
     * products' partial tiles would not fit their buffer, the same first launch, then a cuBLAS product from its bf16 x
     * for each weight and each term added as {@link CudaMatmulOps#matmulAxpyF32} adds it (where {@code stagedForm}):
     * the numbers of the unfused steps (x to bf16 and cuBLAS, {@code narrow_matmul_f32}, the axpy) in one launch fewer
     * ({@code -Dorbit.cuda.lowRankStaged=off}, read at each call, declines those calls instead). Returns false, writing
     * nothing, for any other call. Fewer rows of x take {@link #gemvLowRank}.
     */
    boolean matmulLowRank(Tensor x, Tensor[] ws, Backend.LowRankTerm[] terms, Tensor[] ys, boolean stagedForm) {
        if (gemvLowRank(x, ws, terms, ys)) {
            return true;
        }
        long rowBlocks = lowRankRowBlocks(x, ws, terms, ys);
        if (rowBlocks == 0) {
            return false;
        }
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        int tile = m <= 32 ? 32 : 64;
        int kc = dmmaChunk(k);
        int splits = rowBlocks * DMMA_ROWS >= dmmaMinRows() ? dmmaSplits(rowBlocks, k / kc) : 0;
        boolean staged = splits == 0;
        if (staged && (!stagedForm || "off".equals(System.getProperty("orbit.cuda.lowRankStaged")))) {
            return false;
        }
        ctx.dev("matmulLowRank x", x);
        if (!staged) {
            dmmaWorkspace();
        }
        // the terms' x · Aᵀ (packed to the front of the launch) and x in bf16
        Tensor xb = ctx.scratch(CudaContext.Scratch.X_BF16, DType.BF16, (long) m * k);
        PackedTerms packed = packTerms(terms, m);
        Tensor loAll = packed.all();
        long[] lo = packed.lo();
        matmul.launchNarrow3(x, m, k, packed.aw(), packed.ay(), packed.an(), packed.blocks(), CudaAllocator.address(xb));
        if (staged) {
            for (int i = 0, at = 0; i < ws.length; i++) {
                if (ws[i].size(0) > 0) {
                    ctx.cublas.gemm(CudaAllocator.address(xb), CudaAllocator.address(ws[i]), CudaAllocator.address(ys[i]), m,
                            ws[i].size(0), k, true);
                }
                if (terms[i] != null) {
                    int r = terms[i].a().size(0);
                    Tensor xa = loAll.slice(0, at, at + (long) m * r).reshape(m, r);   // [m, r]: this term's x · Aᵀ
                    matmul.matmulAxpyF32(xa, terms[i].b(), terms[i].scale(), ys[i]);
                    at += m * r;
                }
            }
            return true;
        }
        Object[] args = new Object[6 + 7 * 3];
        args[0] = xb;
        args[1] = m;
        args[2] = k;
        args[3] = dmmaPart;
        args[4] = dmmaCounters;
        args[5] = 0;   // y overwritten
        for (int i = 0; i < 3; i++) {
            boolean here = i < ws.length;
            Backend.LowRankTerm t = here ? terms[i] : null;
            args[6 + 7 * i] = here ? CudaAllocator.address(ws[i]) : 0L;
            args[7 + 7 * i] = here ? CudaAllocator.address(ys[i]) : 0L;
            args[8 + 7 * i] = here ? ws[i].size(0) : 0;
            args[9 + 7 * i] = t != null ? lo[i] : 0L;
            args[10 + 7 * i] = t != null ? CudaAllocator.address(t.b()) : 0L;
            args[11 + 7 * i] = t != null ? t.scale() : 0f;
            args[12 + 7 * i] = t != null ? t.a().size(0) : 0;
        }
        Kernel kernel = kc == DMMA_KC ? (tile == 32 ? dmma32 : dmma64) : (tile == 32 ? dmmaWide32 : dmmaWide64);
        int rowBytes = 2 * kc + 16; // ROWB: a staged row of kc bf16 values and 16 bytes of padding
        ctx.launch2dShared(kernel, rowBlocks, splits, DMMA_THREADS, DMMA_STAGES * (DMMA_ROWS + tile) * rowBytes, args);
        return true;
    }

    /**
     * {@link Backend#matmulLowRank} for 1 to {@value CudaMatmulOps#QGEMV_MAX_ROWS} rows of x (a decode step of few
     * sequences): up to three bf16 weights, K a multiple of 8, f32 LoRA factors of rank at most {@value #DMMA_RMAX}, a
     * multiple of 4. One {@code narrow_matmul3_f32} launch for the terms' x · Aᵀ (the sums of {@link
     * CudaMatmulOps#matmulShared}), then one {@code bgemv_lr} launch for the base products (the GEMV's sums of {@link
     * CudaMatmulOps#matmul}: f32 x, the weights exact) with each term's s · (x · Aᵀ) · Bᵀ added to its outputs in f32:
     * two launches where the unfused steps take a GEMV a weight, the A products and a B product a term; one launch
     * ({@code bgemv_lra_m*}, the same bits) where the GEMV's blocks hold eight warps, its first blocks the A products'
     * and the rest waiting for them before their terms ({@code -Dorbit.cuda.lowRankA=separate} keeps the two).
     * {@code -Dorbit.cuda.lowRankGemv=off}, read at each call, declines these calls (the caller runs those steps).
     * False, with nothing written, for any other call.
     */
    private boolean gemvLowRank(Tensor x, Tensor[] ws, Backend.LowRankTerm[] terms, Tensor[] ys) {
        if (!CudaMatmulOps.QGEMV || "off".equals(System.getProperty("orbit.cuda.lowRankGemv"))) {
            return false;
        }
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        if (m < 1 || m > CudaMatmulOps.QGEMV_MAX_ROWS || k % 8 != 0 || !lowRankForms(x, ws, terms, ys, 1)) {
            return false;
        }
        ctx.dev("matmulLowRank x", x);
        PackedTerms packed = packTerms(terms, m);
        long[] w = new long[3];
        long[] y = new long[3];
        int[] n = new int[3];
        long[] b = new long[3];
        float[] scales = new float[3];
        int[] ranks = new int[3];
        for (int i = 0; i < ws.length; i++) {
            w[i] = CudaAllocator.address(ws[i]);
            y[i] = CudaAllocator.address(ys[i]);
            n[i] = ws[i].size(0);
            if (terms[i] != null) {
                b[i] = CudaAllocator.address(terms[i].b());
                scales[i] = terms[i].scale();
                ranks[i] = terms[i].a().size(0);
            }
        }
        if ("separate".equals(System.getProperty("orbit.cuda.lowRankA")) || !matmul.launchNarrow3Gemv(x, m, k, packed.aw(), packed.ay(),
                packed.an(), packed.blocks(), w, y, n, packed.lo(), b, scales, ranks)) {
            matmul.launchNarrow3(x, m, k, packed.aw(), packed.ay(), packed.an(), packed.blocks(), 0L);
            matmul.qgemv.launchBf16LowRank(x, m, k, w, y, n, packed.lo(), b, scales, ranks);
        }
        return true;
    }

    /**
     * The terms' x · Aᵀ packed into one scratch buffer, each [m, r] after the one before: every weight's lo address (0: no
     * term), and the A products' weights, outputs and rows packed to the front for {@code narrow_matmul3_f32}, over
     * {@code blocks} row blocks.
     */
    private record PackedTerms(Tensor all, long[] lo, long[] aw, long[] ay, int[] an, long blocks) {
    }

    private PackedTerms packTerms(Backend.LowRankTerm[] terms, int m) {
        long loFloats = 0;
        for (Backend.LowRankTerm t : terms) {
            loFloats += t == null ? 0 : (long) m * t.a().size(0);
        }
        Tensor all = ctx.scratch(CudaContext.Scratch.LORA_LO, DType.F32, loFloats);
        long[] lo = new long[3];
        long[] aw = new long[3];
        long[] ay = new long[3];
        int[] an = new int[3];
        long blocks = 0;
        for (int i = 0, j = 0, at = 0; i < terms.length; i++) {
            if (terms[i] != null) {
                int r = terms[i].a().size(0);
                lo[i] = CudaAllocator.address(all) + 4L * at;
                at += m * r;
                aw[j] = CudaAllocator.address(terms[i].a());
                ay[j] = lo[i];
                an[j] = r;
                blocks += (r + 7) / 8;
                j++;
            }
        }
        return new PackedTerms(all, lo, aw, ay, an, blocks);
    }

    /**
     * Whether the weights, outputs and terms of a {@link #matmulLowRank} call have the forms its kernels take: one to
     * three bf16 weights [N, K] with N a multiple of {@code rowMultiple}, f32 x and outputs, f32 terms of rank 4 to
     * {@value #DMMA_RMAX} (a multiple of 4), all 16-byte aligned, at least one term. Throws where the shapes do not
     * agree.
     */
    private static boolean lowRankForms(Tensor x, Tensor[] ws, Backend.LowRankTerm[] terms, Tensor[] ys, int rowMultiple) {
        if (ws.length == 0 || ws.length > 3 || ws.length != ys.length || terms.length != ws.length || x.dtype() != DType.F32
                || !x.isContiguous() || CudaAllocator.address(x) % 16 != 0) {
            return false;
        }
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        boolean anyTerm = false;
        for (int i = 0; i < ws.length; i++) {
            Tensor w = ws[i];
            if (w.dtype() != DType.BF16 || w.rank() != 2 || !w.isContiguous() || w.dim(1) != k || w.size(0) % rowMultiple != 0
                    || CudaAllocator.address(w) % 16 != 0 || ys[i].dtype() != DType.F32 || !ys[i].isContiguous()) {
                return false;
            }
            if (ys[i].size(-1) != w.size(0) || CudaContext.rows(ys[i]) != m) {
                throw new IllegalArgumentException("matmulLowRank: x " + x + " · wᵀ " + w + " -> y " + ys[i] + " do not agree");
            }
            Backend.LowRankTerm t = terms[i];
            if (t != null) {
                Tensor a = t.a();
                Tensor b = t.b();
                if (a.dtype() != DType.F32 || b.dtype() != DType.F32 || !a.isContiguous() || !b.isContiguous() || a.rank() != 2
                        || b.rank() != 2 || a.size(0) == 0 || a.size(0) > DMMA_RMAX || a.size(0) % 4 != 0
                        || CudaAllocator.address(a) % 16 != 0 || CudaAllocator.address(b) % 16 != 0) {
                    return false;
                }
                if (a.dim(1) != k || b.dim(1) != a.dim(0) || b.dim(0) != w.dim(0)) {
                    throw new IllegalArgumentException("matmulLowRank: the low-rank term a " + a + ", b " + b + " does not fit x " + x
                            + " · wᵀ " + w);
                }
                anyTerm = true;
            }
        }
        return anyTerm;
    }

    /**
     * The 128-row blocks of the weights of a {@link #matmulLowRank} call the kernels take, or 0 where they do not (see
     * there); throws where the shapes do not agree.
     */
    private long lowRankRowBlocks(Tensor x, Tensor[] ws, Backend.LowRankTerm[] terms, Tensor[] ys) {
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        if (!DMMA || m < DMMA_MIN_ROWS || m > DMMA_MAX_ROWS || k % DMMA_KC != 0 || !lowRankForms(x, ws, terms, ys, DMMA_ROWS)) {
            return 0;
        }
        long rowBlocks = 0;
        for (Tensor w : ws) {
            rowBlocks += w.size(0) / DMMA_ROWS;
        }
        return rowBlocks <= DMMA_COUNTERS ? rowBlocks : 0;
    }

    /**
     * Ranges of K for {@code rowBlocks} blocks of rows over {@code chunks} chunks of a stage: the count (at most
     * {@value #DMMA_SPLITS} and the chunks) nearest {@value #DMMA_SPLIT_BLOCKS_AN_SM} blocks an SM, or the count set
     * ({@link #dmmaSplitsSet}), uneven ranges where it does not divide the chunks, and the partial tiles of
     * 64 rows of x within their buffer; 0 where even one range's do not fit. It depends on the shapes and the device,
     * never on the rows of x (a row's sums are the same in any batch).
     */
    private int dmmaSplits(long rowBlocks, int chunks) {
        return dmmaSplits(rowBlocks, chunks, ctx.device.multiprocessors(), dmmaSplitsSet());
    }

    /** {@link #dmmaSplits(long, int)} on a device of {@code sms} SMs, {@code set} the count asked for (0: none). */
    static int dmmaSplits(long rowBlocks, int chunks, int sms, int set) {
        double target = DMMA_SPLIT_BLOCKS_AN_SM * sms;
        int splits = set > 0 ? Math.min(set, DMMA_SPLITS) : (int) Math.max(1, Math.min(DMMA_SPLITS, Math.round(target / rowBlocks)));
        while (splits > 1 && (splits > chunks || (long) splits * rowBlocks * 64 * DMMA_ROWS > DMMA_PART_FLOATS)) {
            splits--;
        }
        return (long) splits * rowBlocks * 64 * DMMA_ROWS > DMMA_PART_FLOATS ? 0 : splits;
    }

    /** dmma.cu's partial tiles and zeroed counters, kept for the backend's life (made outside a capture, like the routings). */
    private void dmmaWorkspace() {
        if (dmmaPart != null) {
            return;
        }
        if (ctx.allocator.inCapture()) {
            throw new NotCapturableException("the first tensor-core decode product (its workspace is"
                    + " allocated); a captured step's measuring run makes it");
        }
        dmmaPart = ctx.allocator.allocate(MemoryCategory.RUNTIME_RESERVE, DType.F32, DMMA_PART_FLOATS);
        dmmaCounters = ctx.allocator.allocate(MemoryCategory.RUNTIME_RESERVE, DType.I32, DMMA_COUNTERS);
        ctx.allocator.zero(dmmaCounters);
    }
}
