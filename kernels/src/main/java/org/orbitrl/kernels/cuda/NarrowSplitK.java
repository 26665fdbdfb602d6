package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * The split-K form of {@code narrow_matmul_f32} (narrow.cuh's {@code narrow_split}) for f32 products of a few rows of w over
 * a long K: DeepSeek V4's hyper-connection mix, y [M, 24] = x [M, 4 · 4096] · wᵀ. Over all of K a warp a row of w gives
 * ⌈N / 8⌉ blocks (3 at 24 rows: 18 µs at one row of x, 40 µs at 32 on an H100, for 1.5 MB of weight); split into pieces
 * of {@value #SPLIT_VALUES} values the product takes ⌈N / 8⌉ · ⌈K / {@value #SPLIT_VALUES}⌉ blocks for each
 * {@value #ROWS} rows of x (96 at 24 rows and K = 16384), each reading its slice of w in one round trip. The splits' sums go
 * to a scratch buffer [splits, M, N]; the last block of each (rows of x, rows of w) to finish, found by a ticket, adds
 * them in split order. One launch, no host read: capturable in a graph.
 *
 * <p>The split count is set by K alone, so a row's bits never depend on M or on which block finishes last. K over
 * {@value #MIN_K} values (longer than any model's hidden size here) keeps a LoRA's A, whose q, k and v products
 * {@link CudaMatmulOps#matmulShared} launches together through {@code narrow_rows}, on the single-pass sums a product
 * of its own gives too. {@code -Dorbit.cuda.narrowSplit=off} (read at each call) keeps every narrow product on
 * {@code narrow_rows}.
 */
final class NarrowSplitK {
    /** K values a split takes (SK_PIECES 16-byte pieces in narrow.cuh). */
    static final int SPLIT_VALUES = 512;
    /** K above which the narrow products split. */
    static final int MIN_K = 8192;
    /** x rows a block takes (at most MA_ROWS in narrow.cuh). */
    static final int ROWS = 8;
    /** Rows of w a block takes (MP_WARPS: a warp a row). */
    private static final int W_ROWS = 8;
    private static final int THREADS = 32 * W_ROWS;

    private NarrowSplitK() {
    }

    /** Whether a narrow product of K {@code k} splits (the caller has checked everything else the narrow path needs). */
    static boolean takes(int k) {
        return k > MIN_K && !"off".equals(System.getProperty("orbit.cuda.narrowSplit"));
    }

    /** Splits of a product of K {@code k}: ⌈k / {@value #SPLIT_VALUES}⌉. */
    static int splits(int k) {
        return (k + SPLIT_VALUES - 1) / SPLIT_VALUES;
    }

    /**
     * y [m, n] = x [m, k] · wᵀ through {@code narrow} (the {@code narrow_matmul_f32} handle) in its split form. Needs
     * {@link #takes}, m ≤ {@link CudaMatmulOps#NARROW_MAX_ROWS}, n ≤ {@link CudaMatmulOps#NARROW_MAX_N}, k % 4 == 0, and x
     * and w 16-byte aligned.
     */
    static void launch(CudaContext ctx, Kernel narrow, Tensor x, Tensor w, Tensor y, int m, int n, int k) {
        int splits = splits(k);
        int rowBlocks = (n + W_ROWS - 1) / W_ROWS;
        int chunks = (m + ROWS - 1) / ROWS;
        if ((long) rowBlocks * chunks > CudaContext.TICKETS) {   // 256 at the narrow path's most rows
            throw new IllegalArgumentException("narrow split product: " + m + " rows of x by " + n + " of w need "
                    + (long) rowBlocks * chunks + " tickets, more than the " + CudaContext.TICKETS + " there are");
        }
        Tensor part = ctx.scratch(CudaContext.Scratch.NARROW_SPLITS, DType.F32, (long) splits * m * n);   // [splits, m, n]
        ctx.launch2dShared(narrow, (long) rowBlocks * splits, chunks, THREADS, 16 * ROWS * (SPLIT_VALUES / 4), x, w, y, m, n, k,
                ROWS, splits, part, ctx.tickets);
    }
}
