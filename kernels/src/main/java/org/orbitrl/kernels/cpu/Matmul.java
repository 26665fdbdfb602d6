package org.orbitrl.kernels.cpu;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * {@code y = x · wᵀ} over the worker pool: x [M, K] f32, w [N, K] f32 or bf16, y [M, N] f32.
 *
 * <p>The output is cut into tiles of (rows of x) × (rows of w), one task each; a tile is walked
 * in 4×4 register blocks ({@link DotKernels}), w-rows outer so four weight rows stay in L1 while
 * every 4-row block of x passes over them. At decode (M ≤ 16) a tile spans all rows of x and the
 * tasks split N, so the weights stream once at memory bandwidth. The reduction over K is never
 * split: an element's value depends only on its x row, its w row and K.
 */
final class Matmul {
    private Matmul() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Rows of x per task at prefill; 64 rows of K = 2048 f32 are 512 KiB (L2). */
    private static final int PREFILL_ROWS = 64;
    /** Rows of w per task at prefill. */
    private static final int PREFILL_COLS = 64;
    /** Below this many multiply-adds a matmul runs on the calling thread. */
    private static final long INLINE_WORK = 1 << 15;

    static void run(WorkerPool pool, Tensor x, Tensor w, Tensor y) {
        run(pool, x, w, y, PREFILL_ROWS, PREFILL_COLS, 4);
    }

    /**
     * As {@link #run(WorkerPool, Tensor, Tensor, Tensor)} with explicit tiles: {@code prefillRows} ×
     * {@code prefillCols} per task when M > 16, and about {@code decodeTasksPerThread} tasks per
     * thread over N otherwise. The tiles change speed only, never a result.
     */
    static void run(WorkerPool pool, Tensor x, Tensor w, Tensor y, int prefillRows, int prefillCols,
                    int decodeTasksPerThread) {
        int k = w.size(1);
        int n = w.size(0);
        int m = Math.toIntExact(x.numel() / Math.max(1, k));
        boolean bf16 = w.dtype() == DType.BF16;
        MemorySegment xs = x.segment();
        MemorySegment ws = w.segment();
        MemorySegment ys = y.segment();
        long x0 = x.byteOffset();
        long w0 = w.byteOffset();
        long y0 = y.byteOffset();
        long xRow = k * 4L;
        long wRow = k * (bf16 ? 2L : 4L);
        long yRow = n * 4L;
        if (m == 0 || n == 0) {
            return;
        }
        if (k == 0) {
            for (long i = 0; i < (long) m * n; i++) {
                ys.set(F32, y0 + i * 4, 0f);
            }
            return;
        }

        int rowsPerTask;
        int colsPerTask;
        if (m <= 16) {
            rowsPerTask = m;
            int pieces = pool.threads() * decodeTasksPerThread;
            colsPerTask = roundUp4(Math.max(16, ceilDiv(n, pieces)));
        } else {
            rowsPerTask = prefillRows;
            colsPerTask = prefillCols;
        }
        if ((long) m * n * k < INLINE_WORK) {
            rowsPerTask = m;
            colsPerTask = n;
        }
        int mTiles = ceilDiv(m, rowsPerTask);
        int nTiles = ceilDiv(n, colsPerTask);
        int rpt = rowsPerTask;
        int cpt = colsPerTask;
        pool.parallelFor(mTiles * nTiles, t -> {
            int i0 = (t % mTiles) * rpt;
            int j0 = (t / mTiles) * cpt;
            tile(bf16, xs, x0, xRow, ws, w0, wRow, ys, y0, yRow, k,
                    i0, Math.min(m, i0 + rpt), j0, Math.min(n, j0 + cpt));
        });
    }

    /** Computes y[i0..i1, j0..j1). */
    static void tile(boolean bf16, MemorySegment xs, long x0, long xRow, MemorySegment ws, long w0, long wRow,
                     MemorySegment ys, long y0, long yRow, int k, int i0, int i1, int j0, int j1) {
        int j = j0;
        for (; j + 4 <= j1; j += 4) {
            long w = w0 + j * wRow;
            int i = i0;
            for (; i + 4 <= i1; i += 4) {
                long x = x0 + i * xRow;
                long y = y0 + i * yRow + j * 4L;
                if (bf16) {
                    DotKernels.bf16x4x4(xs, x, xRow, ws, w, wRow, k, ys, y, yRow);
                } else {
                    DotKernels.f32x4x4(xs, x, xRow, ws, w, wRow, k, ys, y, yRow);
                }
            }
            for (; i < i1; i++) {
                long x = x0 + i * xRow;
                long y = y0 + i * yRow + j * 4L;
                if (bf16) {
                    DotKernels.bf16x1x4(xs, x, ws, w, wRow, k, ys, y);
                } else {
                    DotKernels.f32x1x4(xs, x, ws, w, wRow, k, ys, y);
                }
            }
        }
        for (; j < j1; j++) {
            long w = w0 + j * wRow;
            int i = i0;
            for (; i + 4 <= i1; i += 4) {
                long x = x0 + i * xRow;
                long y = y0 + i * yRow + j * 4L;
                if (bf16) {
                    DotKernels.bf16x4x1(xs, x, xRow, ws, w, k, ys, y, yRow);
                } else {
                    DotKernels.f32x4x1(xs, x, xRow, ws, w, k, ys, y, yRow);
                }
            }
            for (; i < i1; i++) {
                long x = x0 + i * xRow;
                float v = bf16 ? DotKernels.bf16x1x1(xs, x, ws, w, k) : DotKernels.f32x1x1(xs, x, ws, w, k);
                ys.set(F32, y0 + i * yRow + j * 4L, v);
            }
        }
    }

    static int ceilDiv(int a, int b) {
        return (a + b - 1) / b;
    }

    private static int roundUp4(int v) {
        return (v + 3) & ~3;
    }
}
