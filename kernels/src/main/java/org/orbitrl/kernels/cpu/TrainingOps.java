package org.orbitrl.kernels.cpu;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;

import static org.orbitrl.kernels.cpu.CpuBackend.f32;
import static org.orbitrl.kernels.cpu.CpuBackend.headTensor;
import static org.orbitrl.kernels.cpu.CpuBackend.rows;
import static org.orbitrl.kernels.cpu.CpuBackend.sameShape;
import static org.orbitrl.kernels.cpu.CpuBackend.split;
import static org.orbitrl.kernels.cpu.CpuBackend.tasks;

/**
 * The training-path operations of {@link CpuBackend}: argument checks and the split of work over
 * the pool (rows, columns or key/value heads; never a reduction). Contracts as in
 * {@link org.orbitrl.kernels.Backend}.
 */
final class TrainingOps {
    private TrainingOps() {
    }

    static void rmsNormBackward(WorkerPool pool, Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx) {
        f32("rmsNormBackward x", x);
        f32("rmsNormBackward dy", dy);
        f32("rmsNormBackward dx", dx);
        sameShape("rmsNormBackward", x, dy);
        sameShape("rmsNormBackward", x, dx);
        int h = x.size(-1);
        if (weight.numel() != h || (weight.dtype() != DType.F32 && weight.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("rmsNormBackward: weight " + weight + " must be F32 or BF16 of hidden size " + h);
        }
        weight.requireContiguous("rmsNormBackward weight");
        boolean bf16 = weight.dtype() == DType.BF16;
        int rows = rows(x);
        int tasks = tasks(pool, (long) rows * h, rows);
        pool.parallelFor(tasks, t -> {
            for (int r = split(rows, tasks, t, 1); r < split(rows, tasks, t + 1, 1); r++) {
                long off = (long) r * h * 4;
                BackwardKernels.rmsNorm(x.segment(), x.byteOffset() + off, weight.segment(), weight.byteOffset(), bf16, eps,
                        dy.segment(), dy.byteOffset() + off, dx.segment(), dx.byteOffset() + off, h);
            }
        });
    }

    static void swigluBackward(WorkerPool pool, Tensor gate, Tensor up, Tensor dout, Tensor dgate, Tensor dup) {
        for (Tensor t : new Tensor[]{gate, up, dout, dgate, dup}) {
            f32("swigluBackward argument", t);
            sameShape("swigluBackward", gate, t);
        }
        long n = gate.numel();
        int tasks = tasks(pool, n, Math.toIntExact(Math.max(1, n / VectorMath.L)));
        pool.parallelFor(tasks, t -> {
            long from = n * t / tasks / VectorMath.L * VectorMath.L;
            long to = t == tasks - 1 ? n : n * (t + 1) / tasks / VectorMath.L * VectorMath.L;
            BackwardKernels.swiglu(gate.segment(), gate.byteOffset(), up.segment(), up.byteOffset(), dout.segment(),
                    dout.byteOffset(), dgate.segment(), dgate.byteOffset(), dup.segment(), dup.byteOffset(), from, to);
        });
    }

    static void attentionBackward(WorkerPool pool, Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart,
                                  AttentionSpec spec, Tensor dq, Tensor dk, Tensor dv) {
        headTensor("attentionBackward q", q);
        headTensor("attentionBackward k", k);
        headTensor("attentionBackward v", v);
        headTensor("attentionBackward dout", dout);
        f32("attentionBackward dq", dq);
        f32("attentionBackward dk", dk);
        f32("attentionBackward dv", dv);
        int t = q.size(0);
        int hq = q.size(1);
        int s = k.size(0);
        int hkv = k.size(1);
        if (hkv == 0 || k.dim(2) != q.dim(2) || v.dim(0) != s || v.dim(1) != hkv || hq % hkv != 0
                || !java.util.Arrays.equals(dout.shape(), new long[]{t, hq, v.dim(2)})
                || !java.util.Arrays.equals(dq.shape(), q.shape()) || !java.util.Arrays.equals(dk.shape(), k.shape())
                || !java.util.Arrays.equals(dv.shape(), v.shape())) {
            throw new IllegalArgumentException("attentionBackward: q " + q + ", k " + k + ", v " + v + ", dout " + dout
                    + " -> dq " + dq + ", dk " + dk + ", dv " + dv + " do not agree");
        }
        if (queryStart < 0 || queryStart + t > s) {
            throw new IllegalArgumentException("attentionBackward: queries at positions [" + queryStart + ", "
                    + (queryStart + t) + ") but only " + s + " keys are given");
        }
        if (spec.sinks() != null && spec.sinks().numel() != hq) {
            throw new IllegalArgumentException("attentionBackward: sinks " + spec.sinks() + " must hold one value per query head");
        }
        AttentionBackward.run(pool, q, k, v, dout, queryStart, spec, dq, dk, dv);
    }

    static void axpy(WorkerPool pool, float alpha, Tensor x, Tensor y) {
        f32("axpy x", x);
        f32("axpy y", y);
        if (x.numel() != y.numel()) {
            throw new IllegalArgumentException("axpy: " + x + " into " + y + ": sizes differ");
        }
        long n = x.numel();
        int tasks = tasks(pool, n, Math.toIntExact(Math.max(1, n / VectorMath.L)));
        pool.parallelFor(tasks, t -> {
            long from = n * t / tasks / VectorMath.L * VectorMath.L;
            long to = t == tasks - 1 ? n : n * (t + 1) / tasks / VectorMath.L * VectorMath.L;
            Accumulate.axpy(alpha, x.segment(), x.byteOffset(), y.segment(), y.byteOffset(), from, to);
        });
    }

    /** dst f32 [n, h] row i = src row rows[i]; src f32, or bf16 (a paged KV cache's rows) widened to f32. */
    static void gatherRows(WorkerPool pool, Tensor src, Tensor rows, Tensor dst) {
        if (src.dtype() == DType.BF16) {
            src.requireContiguous("gatherRows src");
        } else {
            f32("gatherRows src", src);
        }
        f32("gatherRows dst", dst);
        int h = src.size(-1);
        long[] r = rowIndices("gatherRows", rows, src.numel() / Math.max(1, h));
        if (dst.dim(-1) != h || dst.numel() != (long) r.length * h) {
            throw new IllegalArgumentException("gatherRows: " + r.length + " rows of " + src + " into " + dst);
        }
        int tasks = tasks(pool, (long) r.length * h, r.length);
        pool.parallelFor(tasks, t -> {
            for (int i = split(r.length, tasks, t, 1); i < split(r.length, tasks, t + 1, 1); i++) {
                org.orbitrl.kernels.HostOps.copyRow(src, r[i], dst, i, h);
            }
        });
    }

    /** dst rows[i] += weights[i] · src row i, i ascending for every element: tasks own column ranges. */
    static void scatterAddRows(WorkerPool pool, Tensor src, Tensor rows, Tensor weights, Tensor dst) {
        f32("scatterAddRows src", src);
        f32("scatterAddRows dst", dst);
        int h = src.size(-1);
        long[] r = rowIndices("scatterAddRows", rows, dst.numel() / Math.max(1, h));
        if (dst.dim(-1) != h || src.numel() != (long) r.length * h || (weights != null && weights.numel() != r.length)) {
            throw new IllegalArgumentException("scatterAddRows: " + src + " into " + dst + " at " + r.length + " rows"
                    + (weights == null ? "" : " with weights " + weights));
        }
        float[] w = weights == null ? null : weights.toFloatArray();
        int colBlock = Math.max(VectorMath.L, 256);
        int colTiles = Matmul.ceilDiv(h, colBlock);
        int tasks = tasks(pool, (long) r.length * h, colTiles);
        pool.parallelFor(tasks, t -> {
            for (int ct = split(colTiles, tasks, t, 1); ct < split(colTiles, tasks, t + 1, 1); ct++) {
                int c0 = ct * colBlock;
                Accumulate.scatterAdd(src.segment(), src.byteOffset(), r, w, dst.segment(), dst.byteOffset(), h, c0,
                        Math.min(h, c0 + colBlock));
            }
        });
    }

    static void addBias(WorkerPool pool, Tensor y, Tensor bias) {
        f32("addBias y", y);
        int n = Math.toIntExact(bias.numel());
        if (y.dim(-1) != n) {
            throw new IllegalArgumentException("addBias: bias " + bias + " for " + y);
        }
        float[] b = bias.toFloatArray();
        int rows = rows(y);
        int tasks = tasks(pool, (long) rows * n, rows);
        pool.parallelFor(tasks, t -> {
            for (int r = split(rows, tasks, t, 1); r < split(rows, tasks, t + 1, 1); r++) {
                Accumulate.addBias(y.segment(), y.byteOffset() + (long) r * n * 4, b, n);
            }
        });
    }

    private static long[] rowIndices(String op, Tensor rows, long limit) {
        if (rows.dtype() != DType.I32 && rows.dtype() != DType.I64) {
            throw new IllegalArgumentException(op + ": rows must be I32 or I64, got " + rows);
        }
        long[] r = rows.toLongArray();
        for (int i = 0; i < r.length; i++) {
            if (r[i] < 0 || r[i] >= limit) {
                throw new IndexOutOfBoundsException(op + ": row " + r[i] + " (entry " + i + ") outside [0, " + limit + ")");
            }
        }
        return r;
    }
}
