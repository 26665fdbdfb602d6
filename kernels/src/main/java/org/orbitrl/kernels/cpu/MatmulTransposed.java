package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;

/**
 * {@code dx = dy · w}: dy [M, N] f32, w [N, K] f32, bf16 or quantized, dx [M, K] f32 — the
 * activation gradient through a frozen weight. Every element is {@code Σ_j dy[i,j]·w[j,p]} with
 * j ascending, one FMA per term, whether it is computed in a vector lane or by the scalar tail,
 * so a row of dx depends only on its row of dy. Work is split over rows of dy and columns of dx.
 */
final class MatmulTransposed {
    private MatmulTransposed() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    /** Columns of dx per task: 4 vectors wide blocks, a w panel of N × this stays in L2. */
    private static final int COLS = 256;
    private static final int ROWS = 32;

    static void run(WorkerPool pool, Tensor dy, Tensor w, Tensor dx) {
        int n = w.size(0);
        int k = w.size(1);
        int m = Math.toIntExact(dy.numel() / Math.max(1, n));
        boolean bf16 = w.dtype() == DType.BF16;
        MemorySegment ds = dy.segment();
        MemorySegment ws = w.segment();
        MemorySegment xs = dx.segment();
        long d0 = dy.byteOffset();
        long w0 = w.byteOffset();
        long x0 = dx.byteOffset();
        long wRow = (long) k * w.dtype().bytes();
        if (m == 0 || k == 0) {
            return;
        }
        // rows of dy per task; then enough column tiles (whole 4-vector blocks) to feed every thread
        int rpt = m <= 2 * ROWS ? m : ROWS;
        int mTiles = Matmul.ceilDiv(m, rpt);
        int kTilesWanted = Math.max(1, pool.threads() * 4 / mTiles);
        int block = 4 * L;
        int cpt = Math.min(COLS, Math.max(block, Matmul.ceilDiv(Matmul.ceilDiv(k, kTilesWanted), block) * block));
        int kTiles = Matmul.ceilDiv(k, cpt);
        pool.parallelFor(mTiles * kTiles, t -> {
            int i0 = (t % mTiles) * rpt;
            int p0 = (t / mTiles) * cpt;
            tile(bf16, ds, d0, n, ws, w0, wRow, xs, x0, k, i0, Math.min(m, i0 + rpt), p0, Math.min(k, p0 + cpt));
        });
    }

    /** dx[i0..i1, p0..p1). */
    private static void tile(boolean bf16, MemorySegment ds, long d0, int n, MemorySegment ws, long w0, long wRow,
                             MemorySegment xs, long x0, int k, int i0, int i1, int p0, int p1) {
        long dRow = n * 4L;
        long xRow = k * 4L;
        int p = p0;
        for (; p + 4 * L <= p1; p += 4 * L) {
            int i = i0;
            for (; i + 4 <= i1; i += 4) {
                if (bf16) {
                    bf16x4(ds, d0 + i * dRow, dRow, n, ws, w0 + p * 2L, wRow, xs, x0 + i * xRow + p * 4L, xRow);
                } else {
                    f32x4(ds, d0 + i * dRow, dRow, n, ws, w0 + p * 4L, wRow, xs, x0 + i * xRow + p * 4L, xRow);
                }
            }
            for (; i < i1; i++) {
                for (int c = p; c < p + 4 * L; c += L) {
                    oneVector(bf16, ds, d0 + i * dRow, n, ws, w0, wRow, c, xs, x0 + i * xRow);
                }
            }
        }
        for (; p + L <= p1; p += L) {
            for (int i = i0; i < i1; i++) {
                oneVector(bf16, ds, d0 + i * dRow, n, ws, w0, wRow, p, xs, x0 + i * xRow);
            }
        }
        for (; p < p1; p++) {
            int es = bf16 ? 2 : 4;
            for (int i = i0; i < i1; i++) {
                float acc = 0;
                for (int j = 0; j < n; j++) {
                    long wo = w0 + j * wRow + (long) p * es;
                    float wv = bf16 ? VectorMath.bf16Scalar(ws, wo) : ws.get(F32, wo);
                    acc = Math.fma(ds.get(F32, d0 + i * dRow + j * 4L), wv, acc);
                }
                xs.set(F32, x0 + i * xRow + p * 4L, acc);
            }
        }
    }

    /** Four rows of dx, four vectors of columns starting at byte offset w (in w's row 0) and x. */
    private static void f32x4(MemorySegment ds, long d, long dRow, int n, MemorySegment ws, long w, long wRow,
                              MemorySegment xs, long x, long xRow) {
        FloatVector c00 = FloatVector.zero(F), c01 = FloatVector.zero(F), c02 = FloatVector.zero(F), c03 = FloatVector.zero(F);
        FloatVector c10 = FloatVector.zero(F), c11 = FloatVector.zero(F), c12 = FloatVector.zero(F), c13 = FloatVector.zero(F);
        FloatVector c20 = FloatVector.zero(F), c21 = FloatVector.zero(F), c22 = FloatVector.zero(F), c23 = FloatVector.zero(F);
        FloatVector c30 = FloatVector.zero(F), c31 = FloatVector.zero(F), c32 = FloatVector.zero(F), c33 = FloatVector.zero(F);
        long vb = L * 4L;
        for (int j = 0; j < n; j++) {
            long wj = w + j * wRow;
            FloatVector w0 = FloatVector.fromMemorySegment(F, ws, wj, LE);
            FloatVector w1 = FloatVector.fromMemorySegment(F, ws, wj + vb, LE);
            FloatVector w2 = FloatVector.fromMemorySegment(F, ws, wj + 2 * vb, LE);
            FloatVector w3 = FloatVector.fromMemorySegment(F, ws, wj + 3 * vb, LE);
            FloatVector g = FloatVector.broadcast(F, ds.get(F32, d + j * 4L));
            c00 = w0.fma(g, c00);
            c01 = w1.fma(g, c01);
            c02 = w2.fma(g, c02);
            c03 = w3.fma(g, c03);
            g = FloatVector.broadcast(F, ds.get(F32, d + dRow + j * 4L));
            c10 = w0.fma(g, c10);
            c11 = w1.fma(g, c11);
            c12 = w2.fma(g, c12);
            c13 = w3.fma(g, c13);
            g = FloatVector.broadcast(F, ds.get(F32, d + 2 * dRow + j * 4L));
            c20 = w0.fma(g, c20);
            c21 = w1.fma(g, c21);
            c22 = w2.fma(g, c22);
            c23 = w3.fma(g, c23);
            g = FloatVector.broadcast(F, ds.get(F32, d + 3 * dRow + j * 4L));
            c30 = w0.fma(g, c30);
            c31 = w1.fma(g, c31);
            c32 = w2.fma(g, c32);
            c33 = w3.fma(g, c33);
        }
        store4(xs, x, c00, c01, c02, c03);
        store4(xs, x + xRow, c10, c11, c12, c13);
        store4(xs, x + 2 * xRow, c20, c21, c22, c23);
        store4(xs, x + 3 * xRow, c30, c31, c32, c33);
    }

    private static void bf16x4(MemorySegment ds, long d, long dRow, int n, MemorySegment ws, long w, long wRow,
                               MemorySegment xs, long x, long xRow) {
        FloatVector c00 = FloatVector.zero(F), c01 = FloatVector.zero(F), c02 = FloatVector.zero(F), c03 = FloatVector.zero(F);
        FloatVector c10 = FloatVector.zero(F), c11 = FloatVector.zero(F), c12 = FloatVector.zero(F), c13 = FloatVector.zero(F);
        FloatVector c20 = FloatVector.zero(F), c21 = FloatVector.zero(F), c22 = FloatVector.zero(F), c23 = FloatVector.zero(F);
        FloatVector c30 = FloatVector.zero(F), c31 = FloatVector.zero(F), c32 = FloatVector.zero(F), c33 = FloatVector.zero(F);
        long vb = L * 2L;
        for (int j = 0; j < n; j++) {
            long wj = w + j * wRow;
            FloatVector w0 = VectorMath.bf16(ws, wj);
            FloatVector w1 = VectorMath.bf16(ws, wj + vb);
            FloatVector w2 = VectorMath.bf16(ws, wj + 2 * vb);
            FloatVector w3 = VectorMath.bf16(ws, wj + 3 * vb);
            FloatVector g = FloatVector.broadcast(F, ds.get(F32, d + j * 4L));
            c00 = w0.fma(g, c00);
            c01 = w1.fma(g, c01);
            c02 = w2.fma(g, c02);
            c03 = w3.fma(g, c03);
            g = FloatVector.broadcast(F, ds.get(F32, d + dRow + j * 4L));
            c10 = w0.fma(g, c10);
            c11 = w1.fma(g, c11);
            c12 = w2.fma(g, c12);
            c13 = w3.fma(g, c13);
            g = FloatVector.broadcast(F, ds.get(F32, d + 2 * dRow + j * 4L));
            c20 = w0.fma(g, c20);
            c21 = w1.fma(g, c21);
            c22 = w2.fma(g, c22);
            c23 = w3.fma(g, c23);
            g = FloatVector.broadcast(F, ds.get(F32, d + 3 * dRow + j * 4L));
            c30 = w0.fma(g, c30);
            c31 = w1.fma(g, c31);
            c32 = w2.fma(g, c32);
            c33 = w3.fma(g, c33);
        }
        store4(xs, x, c00, c01, c02, c03);
        store4(xs, x + xRow, c10, c11, c12, c13);
        store4(xs, x + 2 * xRow, c20, c21, c22, c23);
        store4(xs, x + 3 * xRow, c30, c31, c32, c33);
    }

    private static void store4(MemorySegment xs, long x, FloatVector a, FloatVector b, FloatVector c, FloatVector d) {
        a.intoMemorySegment(xs, x, LE);
        b.intoMemorySegment(xs, x + L * 4L, LE);
        c.intoMemorySegment(xs, x + L * 8L, LE);
        d.intoMemorySegment(xs, x + L * 12L, LE);
    }

    /** One row of dx, one vector of columns at column c. */
    private static void oneVector(boolean bf16, MemorySegment ds, long d, int n, MemorySegment ws, long w0, long wRow,
                                  int c, MemorySegment xs, long x) {
        FloatVector acc = FloatVector.zero(F);
        for (int j = 0; j < n; j++) {
            long wo = w0 + j * wRow + (long) c * (bf16 ? 2 : 4);
            FloatVector wv = bf16 ? VectorMath.bf16(ws, wo) : FloatVector.fromMemorySegment(F, ws, wo, LE);
            acc = wv.fma(FloatVector.broadcast(F, ds.get(F32, d + j * 4L)), acc);
        }
        acc.intoMemorySegment(xs, x + c * 4L, LE);
    }

    /**
     * Quantized w: tasks own rows of dy; each decodes w one row at a time (j ascending) and adds
     * {@code dy[i,j]·w[j,:]} into its rows of dx, so the full-precision weight never exists.
     */
    static void runQuantized(WorkerPool pool, Tensor dy, QuantizedTensor w, Tensor dx) {
        int n = Math.toIntExact(w.rows());
        int k = Math.toIntExact(w.cols());
        int m = Math.toIntExact(dy.numel() / Math.max(1, n));
        MemorySegment ds = dy.segment();
        MemorySegment xs = dx.segment();
        long d0 = dy.byteOffset();
        long x0 = dx.byteOffset();
        int rowsPerTask = Math.max(16, Matmul.ceilDiv(m, pool.threads()));
        int tasks = Matmul.ceilDiv(m, rowsPerTask);
        pool.parallelFor(tasks, t -> {
            int i0 = t * rowsPerTask;
            int i1 = Math.min(m, i0 + rowsPerTask);
            float[] row = new float[k];
            int kv = k - k % L;
            for (int i = i0; i < i1; i++) {
                xs.asSlice(x0 + (long) i * k * 4, (long) k * 4).fill((byte) 0);
            }
            for (int j = 0; j < n; j++) {
                w.format().dequantizeRow(w, j, row);
                for (int i = i0; i < i1; i++) {
                    float g = ds.get(F32, d0 + ((long) i * n + j) * 4);
                    FloatVector gv = FloatVector.broadcast(F, g);
                    long x = x0 + (long) i * k * 4;
                    for (int p = 0; p < kv; p += L) {
                        FloatVector.fromArray(F, row, p).fma(gv, FloatVector.fromMemorySegment(F, xs, x + p * 4L, LE))
                                .intoMemorySegment(xs, x + p * 4L, LE);
                    }
                    for (int p = kv; p < k; p++) {
                        xs.set(F32, x + p * 4L, Math.fma(row[p], g, xs.get(F32, x + p * 4L)));
                    }
                }
            }
        });
    }
}
