package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * The products of exact mode: {@code y = x · wᵀ} where every output row is computed by the same
 * instructions in the same order whatever the number of rows and wherever the row sits in the
 * batch, so a token's logits in a one-row decode step equal, bit for bit, its logits in a
 * training forward over the whole sequence; f32 x times the exact weight values, at f32 precision.
 *
 * <p>Where K is a multiple of 8 (every projection of the supported models), the tensor-core kernels of {@code
 * exact_mma.cu}: x and the weight as sums of bf16 planes (a bf16 weight as it is; an f32 one, or a quantized one
 * dequantized to f32, split into three; an INT4 one, by default, as its codes with each group's sums scaled, through
 * {@link CudaExactExperts#matmulQuantized}), the products of the planes accumulated in f32 over K's 16-value chunks in
 * order within each of a few ranges of K, the ranges' sums added in order. The ranges depend on N, K, the block's tile
 * and the device's SM count ({@link #splits}), never on the rows, so rollout and training on one kind of GPU take the
 * same. Otherwise, and with {@code -Dorbit.cuda.exactMma=off} (read at each call), the CUDA-core kernel {@code
 * exact_matmul_f32} of {@code train.cu} (a warp an output column, 8 rows a block). The kernels and tiles round
 * differently (each within f32 rounding of the exact sum), so this switch and the tiles' ({@link #blockRows}) must not
 * change between a rollout and the training step that recomputes it.
 */
final class CudaExactOps {
    private static final int ROWS_PER_BLOCK = 8;  // EXACT_ROWS in train.cu
    private static final int BLOCK = 256;         // 8 warps, one output column each
    private static final int MMA_TILE = 64;       // EM_TOK in exact_mma.cu: tokens a block
    private static final int MMA_STAGES = 4;      // EM_ST
    private static final int MMA_KC = 32;         // EM_KC
    private static final int SPLIT_BLOCK = 256;
    static final long SPLIT_BYTES = 64L << 20;  // the split sums of one launch at most

    private final CudaContext ctx;
    private final CudaMatmulOps matmul;
    private final CudaExactExperts experts;
    private final Kernel exact;
    private final Kernel mma1;
    private final Kernel mma1w8;
    private final Kernel mma1r2;
    private final Kernel mma3;
    private final Kernel mma1Fold;
    private final Kernel mma1w8Fold;
    private final Kernel mma1r2Fold;
    private final Kernel mma3Fold;
    private final Kernel split;
    private final Kernel sum;
    private final Kernel transposed;

    CudaExactOps(CudaContext ctx, CudaMatmulOps matmul, CudaExactExperts experts) {
        this.ctx = ctx;
        this.matmul = matmul;
        this.experts = experts;
        this.exact = ctx.kernel("train", "exact_matmul_f32");
        this.mma1 = ctx.kernel("exact_mma", "exact_mma_j1");
        this.mma1w8 = ctx.kernel("exact_mma", "exact_mma_j1w8");
        this.mma1r2 = ctx.kernel("exact_mma", "exact_mma_j1r2");
        this.mma3 = ctx.kernel("exact_mma", "exact_mma_j3");
        this.mma1Fold = ctx.kernel("exact_mma", "exact_mma_j1_fold");
        this.mma1w8Fold = ctx.kernel("exact_mma", "exact_mma_j1w8_fold");
        this.mma1r2Fold = ctx.kernel("exact_mma", "exact_mma_j1r2_fold");
        this.mma3Fold = ctx.kernel("exact_mma", "exact_mma_j3_fold");
        this.split = ctx.kernel("exact_mma", "exact_split_planes");
        this.sum = ctx.kernel("exact_mma", "exact_sum_splits");
        this.transposed = ctx.kernel("exact_mma", "exact_planes_t");
    }

    /** Whether products over {@code k} take the tensor-core kernels (see the class comment). */
    static boolean tensorCores(int k) {
        return k > 0 && k % 8 == 0 && !"off".equals(System.getProperty("orbit.cuda.exactMma"));
    }

    void matmul(Tensor x, Tensor w, Tensor y) {
        ctx.devContiguous("matmul x", x, DType.F32);
        ctx.devContiguous("matmul y", y, DType.F32);
        ctx.devContiguous("matmul w", w, null);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        if (w.rank() != 2 || w.dim(1) != k || y.size(-1) != w.dim(0) || CudaContext.rows(y) != m) {
            throw new IllegalArgumentException("matmul: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        if (w.dtype() != DType.F32 && w.dtype() != DType.BF16) {
            throw new IllegalArgumentException("matmul: weight must be f32 or bf16, got " + w);
        }
        int n = w.size(0);
        if (m == 0 || n == 0) {
            return;
        }
        if (!tensorCores(k)) {
            launch(x, w, w.dtype() == DType.BF16, y, m, n, k);
        } else if (w.dtype() == DType.BF16) {
            launchMma(x, aligned(w, CudaContext.Scratch.EXACT_PLANES), 1, y, m, n, k);
        } else {
            launchMma(x, planes(w), 3, y, m, n, k);
        }
    }

    void matmulQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        ctx.devContiguous("matmulQuantized x", x, DType.F32);
        ctx.devContiguous("matmulQuantized y", y, DType.F32);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        int n = Math.toIntExact(w.rows());
        if (w.cols() != k || y.size(-1) != n || CudaContext.rows(y) != m) {
            throw new IllegalArgumentException("matmulQuantized: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        if (m == 0 || n == 0) {
            return;
        }
        if (tensorCores(k) && experts.matmulQuantized(x, w, y)) {
            return; // INT4 in the codes form, as the grouped expert products take it
        }
        Tensor wf = ctx.scratch(CudaContext.Scratch.EXACT_DEQUANT, DType.F32, (long) n * k); // [n, k]
        matmul.dequantize(w, wf);
        if (tensorCores(k)) {
            launchMma(x, planes(wf), 3, y, m, n, k);
        } else {
            launch(x, wf, false, y, m, n, k);
        }
    }

    /**
     * Exact mode's dx [M, K] = dy [M, N] · w [N, K] (w f32 or bf16, or quantized through {@code q}) on the tensor-core
     * kernels, as dy · (wᵀ)ᵀ over the planes of wᵀ ({@code exact_planes_t}): f32 arithmetic on the exact weight values,
     * as the forward. Returns false, doing nothing, where N is not a multiple of 8 or the kernels are switched off (the
     * caller then takes its f32 cuBLAS product). An activation gradient need not be batch-invariant; this is for speed.
     */
    boolean matmulTransposed(Tensor dy, Tensor w, QuantizedTensor q, Tensor dx) {
        int n = q != null ? Math.toIntExact(q.rows()) : w.size(0);
        int k = q != null ? Math.toIntExact(q.cols()) : w.size(1);
        if (!tensorCores(n) || (w != null && (w.rank() != 2 || (w.dtype() != DType.F32 && w.dtype() != DType.BF16)))) {
            return false;
        }
        ctx.devContiguous("matmulTransposed dy", dy, DType.F32);
        ctx.devContiguous("matmulTransposed dx", dx, DType.F32);
        int m = CudaContext.rows(dy);
        if (dy.size(-1) != n || dx.size(-1) != k || CudaContext.rows(dx) != m) {
            throw new IllegalArgumentException("matmulTransposed: dy " + dy + " · w " + (q != null ? q : w) + " -> dx " + dx
                    + " do not agree (expected dy [M, " + n + "], dx [M, " + k + "])");
        }
        if (m == 0 || k == 0) {
            return true;
        }
        Tensor src = w;
        if (q != null) {
            src = ctx.scratch(CudaContext.Scratch.EXACT_DEQUANT, DType.F32, (long) n * k); // [n, k]
            matmul.dequantize(q, src);
        } else {
            ctx.devContiguous("matmulTransposed w", w, null);
        }
        int planes = src.dtype() == DType.BF16 ? 1 : 3;
        Tensor p = ctx.scratch(CudaContext.Scratch.EXACT_PLANES, DType.BF16, (long) planes * n * k);
        ctx.launch2d(transposed, (k + 31) / 32, (n + 31) / 32, 256, src, src.dtype() == DType.BF16 ? 1 : 0, p, n, k, planes);
        launchMma(dy, p, planes, dx, m, k, n);
        return true;
    }

    private void launch(Tensor x, Tensor w, boolean bf16, Tensor y, int m, int n, int k) {
        int chunks = (m + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
        if (chunks > 65535) {
            throw new IllegalArgumentException("exact matmul: " + m + " rows exceed " + 65535 * ROWS_PER_BLOCK + " per call");
        }
        long grid = (n + (BLOCK / 32) - 1) / (BLOCK / 32);
        ctx.launch2d(exact, grid, chunks, BLOCK, x, w, bf16 ? 1 : 0, y, m, n, k);
    }

    /**
     * The tensor-core product over {@code planes} bf16 planes of [n, k] each, one after the other from {@code w}: K in
     * {@link #splits} ranges, their sums added in order by {@code exact_sum_splits}; the rows in launches of at most
     * {@link #rowsPerLaunch} (each row's sums are its own, so where a launch's rows end changes nothing). Where {@link
     * #folds}, one launch whose blocks take every range in turn and add the sums as exact_sum_splits does.
     */
    private void launchMma(Tensor x, Tensor w, int planes, Tensor y, int m, int n, int k) {
        int warps = warps(planes);
        int blockRows = blockRows(planes);
        int nTiles = (n + blockRows - 1) / blockRows;
        int splits = splits(nTiles, k, ctx.device.multiprocessors());
        if ((long) nTiles * splits > 65535) {
            throw new IllegalArgumentException("exact matmul: " + n + " output columns exceed " + 65535L * blockRows + " per call");
        }
        Tensor xa = aligned(x, CudaContext.Scratch.EXACT_X);
        int stage = MMA_TILE * (4 * MMA_KC + 16) + planes * blockRows * (2 * MMA_KC + 16);
        int shared = MMA_STAGES * stage + 3 * MMA_TILE * (2 * MMA_KC + 16);
        long mTiles = (m + MMA_TILE - 1) / MMA_TILE;
        if (folds(mTiles * nTiles, splits, ctx.device.multiprocessors())) {
            Kernel fold = planes == 3 ? mma3Fold : blockRows == 32 * warps ? mma1r2Fold : warps == 8 ? mma1w8Fold : mma1Fold;
            ctx.launch2dShared(fold, mTiles, nTiles, 32 * warps, shared, CudaAllocator.address(xa), m, k, w, (long) n * k,
                    CudaAllocator.address(y), n, splits);
            return;
        }
        Kernel kernel = planes == 3 ? mma3 : blockRows == 32 * warps ? mma1r2 : warps == 8 ? mma1w8 : mma1;
        int step = rowsPerLaunch(splits, n);
        for (int r0 = 0; r0 < m; r0 += step) {
            int rows = Math.min(step, m - r0);
            long xAddr = CudaAllocator.address(xa) + (long) r0 * k * 4;
            long yAddr = CudaAllocator.address(y) + (long) r0 * n * 4;
            if (splits == 1) {
                ctx.launch2dShared(kernel, (rows + MMA_TILE - 1) / MMA_TILE, nTiles, 32 * warps, shared,
                        xAddr, rows, k, w, (long) n * k, yAddr, n, 1);
            } else {
                long parts = (long) splits * rows * n;
                Tensor part = ctx.scratch(CudaContext.Scratch.EXACT_SPLITS, DType.F32, parts);
                ctx.launch2dShared(kernel, (rows + MMA_TILE - 1) / MMA_TILE, nTiles * splits, 32 * warps, shared,
                        xAddr, rows, k, w, (long) n * k, part, n, splits);
                ctx.launch(sum, ctx.gridFor((long) rows * n, SPLIT_BLOCK), SPLIT_BLOCK, part, splits, (long) rows * n, yAddr);
            }
        }
    }

    /**
     * Warps a block of the tensor-core product over {@code planes} weight planes: 4. With {@code
     * -Dorbit.cuda.exactMmaRows=1} (see {@link #blockRows}) a one-plane product takes 8, or 4 with {@code
     * -Dorbit.cuda.exactMmaWarps=4} (both read at each call).
     */
    static int warps(int planes) {
        return planes == 1 && !rowPairs(planes) && !"4".equals(System.getProperty("orbit.cuda.exactMmaWarps")) ? 8 : 4;
    }

    /**
     * Weight rows a block of the product over {@code planes} planes covers: for one plane (a bf16 weight) 32 a warp in
     * blocks of 4 warps, each x fragment a warp loads serving two tiles of 16 rows; for three, 16 a warp (64). {@code
     * -Dorbit.cuda.exactMmaRows=1} (read at each call) takes 16 a warp for one plane too, the earlier form. Like the
     * switch off, the switches are not to be changed between a rollout and the step that recomputes it: the row tiles
     * set the ranges of K.
     */
    static int blockRows(int planes) {
        return 16 * warps(planes) * (rowPairs(planes) ? 2 : 1);
    }

    private static boolean rowPairs(int planes) {
        return planes == 1 && !"1".equals(System.getProperty("orbit.cuda.exactMmaRows"));
    }

    /**
     * Ranges of K a product over {@code nTiles} tiles of weight rows takes: enough blocks for two waves of the
     * device's {@code sms} at one tile of 64 tokens (a decode batch), each range at least 4 stages of 32 values, at
     * most 64 ranges. A function of N, K and the device alone: every batch of rows takes the same ranges.
     */
    static int splits(int nTiles, int k, int sms) {
        int chunks = (k + MMA_KC - 1) / MMA_KC;
        int wanted = (2 * sms + nTiles - 1) / nTiles;
        return Math.max(1, Math.min(wanted, Math.min(64, chunks / 4)));
    }

    /** Blocks a product must have unsplit, per SM, for {@link #folds} to take its ranges of K in one block each. */
    static final int FOLD_BLOCKS_PER_SM = 8;

    /**
     * Whether a product of {@code blocks} blocks without its {@code splits} ranges of K (row tiles x weight-row tiles) has
     * each block take every range in turn ({@code _fold} kernels: each range summed as a split block sums it, the sums
     * added in order as they end, as {@code exact_sum_splits} adds them: the same bits, without the split sums' round trip
     * through memory and the launch that adds them): where it has ranges and {@value #FOLD_BLOCKS_PER_SM} blocks an SM
     * without them (training and prefill sizes, and a decode step's grouped experts, whose tiles of 16 rows times their
     * weight-row blocks are blocks enough; a dense decode product keeps the splits, which are its parallelism). {@code
     * -Dorbit.cuda.exactFold=on|off} (read at each call) takes it wherever there are ranges, or never.
     */
    static boolean folds(long blocks, int splits, int sms) {
        if (splits == 1) {
            return false;
        }
        String set = System.getProperty("orbit.cuda.exactFold", "auto");
        return switch (set) {
            case "on" -> true;
            case "off" -> false;
            case "auto" -> blocks >= (long) FOLD_BLOCKS_PER_SM * sms;
            default -> throw new IllegalArgumentException("-Dorbit.cuda.exactFold=" + set + ": expected auto, on or off");
        };
    }

    /**
     * Rows a launch takes so that the split sums of its rows stay within {@code -Dorbit.cuda.exactSplitBytes} (64 MiB by
     * default; read at each call), at least 64; all of them when unsplit.
     */
    static int rowsPerLaunch(int splits, int n) {
        if (splits == 1) {
            return Integer.MAX_VALUE;
        }
        long rows = Long.getLong("orbit.cuda.exactSplitBytes", SPLIT_BYTES) / (4L * splits * n);
        return (int) Math.max(MMA_TILE, Math.min(Integer.MAX_VALUE / 2, rows) / MMA_TILE * MMA_TILE);
    }

    /** An f32 [n, k] weight as its three bf16 planes [3, n·k] (exact_split_planes), in a reused buffer. */
    private Tensor planes(Tensor wf) {
        long n = wf.numel();
        Tensor p = ctx.scratch(CudaContext.Scratch.EXACT_PLANES, DType.BF16, 3 * n);
        ctx.launch(split, ctx.gridFor(n, SPLIT_BLOCK), SPLIT_BLOCK, wf, p, n);
        return p;
    }

    /** {@code t} where it starts on a 16-byte boundary (as the kernels' copies need), else a copy of it in a reused buffer. */
    private Tensor aligned(Tensor t, CudaContext.Scratch buffer) {
        if (CudaAllocator.address(t) % 16 == 0) {
            return t;
        }
        Tensor c = ctx.scratch(buffer, t.dtype(), t.numel());
        ctx.allocator.copy(t.reshape(t.numel()), c);
        return c;
    }
}
