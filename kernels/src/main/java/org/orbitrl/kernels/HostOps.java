package org.orbitrl.kernels;

import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Plain host-memory implementations of the {@link Backend} operations that have a default. They
 * are correct for any backend whose tensors live in host memory, and serve as references.
 */
public final class HostOps {
    private HostOps() {
    }

    /** dx [M, K] = dy [M, N] · w [N, K]. Reduction over N in ascending order for every element. */
    public static void matmulTransposed(Tensor dy, Tensor w, Tensor dx) {
        int n = w.size(0);
        int k = w.size(1);
        int m = Math.toIntExact(dy.numel() / n);
        check(dy, dx, n, k, m, w.toString());
        float[] ws = w.toFloatArray();
        float[] d = dy.toFloatArray();
        float[] out = new float[m * k];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                float g = d[i * n + j];
                for (int p = 0; p < k; p++) {
                    out[i * k + p] += g * ws[j * k + p];
                }
            }
        }
        MemorySegment.copy(out, 0, dx.segment(), ValueLayout.JAVA_FLOAT_UNALIGNED, dx.byteOffset(), out.length);
    }

    /** dx [M, K] = dy [M, N] · w [N, K] for a quantized w. */
    public static void matmulQuantizedTransposed(Tensor dy, QuantizedTensor w, Tensor dx) {
        int n = Math.toIntExact(w.rows());
        int k = Math.toIntExact(w.cols());
        int m = Math.toIntExact(dy.numel() / n);
        check(dy, dx, n, k, m, w.toString());
        float[] d = dy.toFloatArray();
        float[] out = new float[m * k];
        float[] row = new float[k];
        for (int j = 0; j < n; j++) {
            w.format().dequantizeRow(w, j, row);
            for (int i = 0; i < m; i++) {
                float g = d[i * n + j];
                for (int p = 0; p < k; p++) {
                    out[i * k + p] += g * row[p];
                }
            }
        }
        MemorySegment.copy(out, 0, dx.segment(), ValueLayout.JAVA_FLOAT_UNALIGNED, dx.byteOffset(), out.length);
    }

    private static void check(Tensor dy, Tensor dx, int n, int k, int m, String w) {
        if (dy.dtype() != DType.F32 || dx.dtype() != DType.F32 || dy.dim(-1) != n || dx.dim(-1) != k
                || dx.numel() != (long) m * k) {
            throw new IllegalArgumentException("matmulTransposed: dy " + dy + " · w " + w + " -> dx " + dx + " do not agree");
        }
        dy.requireContiguous("matmulTransposed dy");
        dx.requireContiguous("matmulTransposed dx");
    }

    /** dst f32 [n, h] row i = src row rows[i]; src f32, or bf16 (a paged KV cache's rows) widened to f32. */
    public static void gatherRows(Tensor src, Tensor rows, Tensor dst) {
        int h = src.size(-1);
        int n = Math.toIntExact(rows.numel());
        if (dst.dim(-1) != h || dst.numel() != (long) n * h || (src.dtype() != DType.F32 && src.dtype() != DType.BF16)
                || dst.dtype() != DType.F32) {
            throw new IllegalArgumentException("gatherRows: " + n + " rows of " + src + " into " + dst);
        }
        src.requireContiguous("gatherRows src");
        dst.requireContiguous("gatherRows dst");
        long srcRows = src.numel() / h;
        for (int i = 0; i < n; i++) {
            long r = rows.getLong(i);
            if (r < 0 || r >= srcRows) {
                throw new IndexOutOfBoundsException("gatherRows: row " + r + " of " + srcRows);
            }
            copyRow(src, r, dst, i, h);
        }
    }

    /** Row r of src (f32, or bf16 widened exactly) into f32 row i of dst; rows of h values, both contiguous. */
    public static void copyRow(Tensor src, long r, Tensor dst, long i, int h) {
        if (src.dtype() == DType.F32) {
            MemorySegment.copy(src.segment(), src.byteOffset() + r * h * 4, dst.segment(), dst.byteOffset() + i * h * 4, (long) h * 4);
            return;
        }
        MemorySegment s = src.segment();
        MemorySegment d = dst.segment();
        long so = src.byteOffset() + r * h * 2;
        long d0 = dst.byteOffset() + i * h * 4;
        for (int c = 0; c < h; c++) {
            d.set(ValueLayout.JAVA_FLOAT_UNALIGNED, d0 + 4L * c, Numerics.bf16ToFloat(s.get(ValueLayout.JAVA_SHORT_UNALIGNED, so + 2L * c)));
        }
    }

    public static void scatterAddRows(Tensor src, Tensor rows, Tensor weights, Tensor dst) {
        int h = src.size(-1);
        int n = Math.toIntExact(rows.numel());
        if (dst.dim(-1) != h || src.numel() != (long) n * h || src.dtype() != DType.F32 || dst.dtype() != DType.F32
                || (weights != null && weights.numel() != n)) {
            throw new IllegalArgumentException("scatterAddRows: " + src + " into " + dst + " at " + n + " rows");
        }
        src.requireContiguous("scatterAddRows src");
        dst.requireContiguous("scatterAddRows dst");
        MemorySegment s = src.segment();
        MemorySegment d = dst.segment();
        long dstRows = dst.numel() / h;
        for (int i = 0; i < n; i++) {
            long r = rows.getLong(i);
            if (r < 0 || r >= dstRows) {
                throw new IndexOutOfBoundsException("scatterAddRows: row " + r + " of " + dstRows);
            }
            float w = weights == null ? 1f : weights.getFloat(i);
            long so = src.byteOffset() + (long) i * h * 4;
            long dO = dst.byteOffset() + r * h * 4;
            for (int c = 0; c < h; c++) {
                float v = d.get(ValueLayout.JAVA_FLOAT_UNALIGNED, dO + c * 4L)
                        + w * s.get(ValueLayout.JAVA_FLOAT_UNALIGNED, so + c * 4L);
                d.set(ValueLayout.JAVA_FLOAT_UNALIGNED, dO + c * 4L, v);
            }
        }
    }

    public static void addBias(Tensor y, Tensor bias) {
        int n = Math.toIntExact(bias.numel());
        if (y.dim(-1) != n || y.dtype() != DType.F32) {
            throw new IllegalArgumentException("addBias: bias " + bias + " for " + y);
        }
        y.requireContiguous("addBias y");
        float[] b = bias.toFloatArray();
        long rows = y.numel() / n;
        MemorySegment d = y.segment();
        for (long r = 0; r < rows; r++) {
            long o = y.byteOffset() + r * n * 4;
            for (int c = 0; c < n; c++) {
                d.set(ValueLayout.JAVA_FLOAT_UNALIGNED, o + c * 4L, d.get(ValueLayout.JAVA_FLOAT_UNALIGNED, o + c * 4L) + b[c]);
            }
        }
    }

    public static void matmulTN(Tensor a, Tensor b, float alpha, Tensor c) {
        int m = a.size(0);
        int p = a.size(1);
        int q = b.size(1);
        if (b.dim(0) != m || c.dim(0) != p || c.dim(1) != q || a.dtype() != DType.F32 || b.dtype() != DType.F32
                || c.dtype() != DType.F32) {
            throw new IllegalArgumentException("matmulTN: aᵀ " + a + " · b " + b + " -> c " + c + " do not agree");
        }
        float[] as = a.contiguous().toFloatArray();
        float[] bs = b.contiguous().toFloatArray();
        c.requireContiguous("matmulTN c");
        float[] cs = c.toFloatArray();
        for (int i = 0; i < p; i++) {
            for (int j = 0; j < q; j++) {
                float acc = 0;
                for (int t = 0; t < m; t++) {
                    acc += as[t * p + i] * bs[t * q + j];
                }
                cs[i * q + j] += alpha * acc;
            }
        }
        MemorySegment.copy(cs, 0, c.segment(), ValueLayout.JAVA_FLOAT_UNALIGNED, c.byteOffset(), cs.length);
    }

    public static void axpy(float alpha, Tensor x, Tensor y) {
        if (x.numel() != y.numel() || x.dtype() != DType.F32 || y.dtype() != DType.F32) {
            throw new IllegalArgumentException("axpy: " + x + " into " + y);
        }
        x.requireContiguous("axpy x");
        y.requireContiguous("axpy y");
        MemorySegment xs = x.segment();
        MemorySegment ys = y.segment();
        long n = x.numel();
        for (long i = 0; i < n; i++) {
            long yo = y.byteOffset() + i * 4;
            ys.set(ValueLayout.JAVA_FLOAT_UNALIGNED, yo, ys.get(ValueLayout.JAVA_FLOAT_UNALIGNED, yo)
                    + alpha * xs.get(ValueLayout.JAVA_FLOAT_UNALIGNED, x.byteOffset() + i * 4));
        }
    }
}
