package org.orbitrl.kernels.cpu;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.FusedQuantMatmul;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * The fast CPU backend: Vector API kernels ({@code FloatVector.SPECIES_PREFERRED}, bf16 weights
 * widened in registers) spread over a pool of daemon threads, one per core by default
 * ({@code -Dorbit.cpu.threads=N} or the constructor to change it). Close it to stop the threads; a backend
 * dropped without being closed stops them once it is collected (its threads hold no reference to it).
 *
 * <p>Exact mode always holds: every reducing operation (matmul, matmulQuantized, matmulTransposed,
 * rmsNorm, softmax, logSoftmax, attention and the backward passes) splits work over output rows,
 * columns or heads only, never over the reduction, and reduces each output element in one fixed
 * order that depends only on the reduction length. A row's result is therefore bit-identical
 * whether it is computed alone or in a batch, at any position of the batch, with any number of
 * threads, and (for attention) in a prefill or at decode. {@link ScalarBackend} is the plain
 * reference it is tested against.
 *
 * <p>Speed: the Vector API is fast only once C2 has compiled a kernel; the first calls in a fresh
 * JVM run interpreted and are far slower (seconds for a large matmul).
 */
public final class CpuBackend implements Backend {

    /** Elements of work below which a kernel stays on the calling thread. */
    static final long GRAIN = 1 << 14;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private static final java.lang.ref.Cleaner CLEANER = java.lang.ref.Cleaner.create();

    private final TensorAllocator allocator;
    private final WorkerPool pool;
    private final java.lang.ref.Cleaner.Cleanable stopThreads;

    /** One thread per available processor, or {@code -Dorbit.cpu.threads}. */
    public CpuBackend() {
        this(Integer.getInteger("orbit.cpu.threads", Runtime.getRuntime().availableProcessors()));
    }

    /** @param threads threads that run kernels, the calling thread included (at least 1) */
    public CpuBackend(int threads) {
        this(threads, TensorAllocator.heap());
    }

    /**
     * @param threads   threads that run kernels, the calling thread included (at least 1)
     * @param allocator where {@link #allocator()} takes tensors from
     */
    public CpuBackend(int threads, TensorAllocator allocator) {
        this.allocator = allocator;
        this.pool = new WorkerPool(threads);
        WorkerPool p = pool;
        this.stopThreads = CLEANER.register(this, p::close);
    }

    @Override
    public String name() {
        return "cpu";
    }

    @Override
    public TensorAllocator allocator() {
        return allocator;
    }

    /** Threads that run kernels (the calling thread included). */
    public int threads() {
        return pool.threads();
    }

    @Override
    public void close() {
        stopThreads.clean();
    }

    // ------------------------------------------------------------------ linear algebra

    @Override
    public void matmul(Tensor x, Tensor w, Tensor y) {
        f32("matmul x", x);
        f32("matmul y", y);
        w.requireContiguous("matmul w");
        if (w.dtype() != DType.F32 && w.dtype() != DType.BF16) {
            throw new IllegalArgumentException("matmul w must be F32 or BF16, got " + w);
        }
        if (w.rank() != 2 || w.dim(1) != x.dim(-1) || y.dim(-1) != w.dim(0) || rows(y) != rows(x)) {
            throw new IllegalArgumentException("matmul: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        Matmul.run(pool, x, w, y);
    }

    @Override
    public void matmulQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        f32("matmulQuantized x", x);
        f32("matmulQuantized y", y);
        int n = Math.toIntExact(w.rows());
        if (w.cols() != x.dim(-1) || y.dim(-1) != n || rows(y) != rows(x)) {
            throw new IllegalArgumentException("matmulQuantized: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        long work = x.numel() * n;
        int tasks = tasks(work, Math.max(1, n / 16));
        pool.parallelFor(tasks, t -> FusedQuantMatmul.matmul(x, w, y, split(n, tasks, t, 16), split(n, tasks, t + 1, 16)));
    }

    @Override
    public void dequantize(QuantizedTensor w, Tensor out) {
        out.requireContiguous("dequantize out");
        if (out.dtype() != DType.F32 && out.dtype() != DType.BF16) {
            throw new IllegalArgumentException("dequantize out must be F32 or BF16, got " + out);
        }
        if (out.rank() != 2 || out.dim(0) != w.rows() || out.dim(1) != w.cols()) {
            throw new IllegalArgumentException("dequantize: " + w + " into " + out + ": shapes differ");
        }
        int rows = Math.toIntExact(w.rows());
        int k = Math.toIntExact(w.cols());
        boolean bf16 = out.dtype() == DType.BF16;
        MemorySegment os = out.segment();
        long o = out.byteOffset();
        long rowBytes = (long) k * out.dtype().bytes();
        int tasks = tasks((long) rows * k, rows);
        pool.parallelFor(tasks, t -> {
            float[] row = new float[k];
            for (int r = split(rows, tasks, t, 1); r < split(rows, tasks, t + 1, 1); r++) {
                w.format().dequantizeRow(w, r, row);
                if (bf16) {
                    long base = o + r * rowBytes;
                    int kv = k - k % VectorMath.L;
                    for (int c = 0; c < kv; c += VectorMath.L) {
                        VectorMath.storeBf16(jdk.incubator.vector.FloatVector.fromArray(VectorMath.F, row, c), os, base + c * 2L);
                    }
                    for (int c = kv; c < k; c++) {
                        os.set(ValueLayout.JAVA_SHORT_UNALIGNED, base + c * 2L, Numerics.floatToBf16(row[c]));
                    }
                } else {
                    MemorySegment.copy(row, 0, os, F32, o + r * rowBytes, k);
                }
            }
        });
    }

    @Override
    public void matmulTransposed(Tensor dy, Tensor w, Tensor dx) {
        f32("matmulTransposed dy", dy);
        f32("matmulTransposed dx", dx);
        w.requireContiguous("matmulTransposed w");
        if (w.dtype() != DType.F32 && w.dtype() != DType.BF16) {
            throw new IllegalArgumentException("matmulTransposed w must be F32 or BF16, got " + w);
        }
        if (w.rank() != 2 || dy.dim(-1) != w.dim(0) || dx.dim(-1) != w.dim(1) || rows(dx) != rows(dy)) {
            throw new IllegalArgumentException("matmulTransposed: dy " + dy + " · w " + w + " -> dx " + dx + " do not agree");
        }
        MatmulTransposed.run(pool, dy, w, dx);
    }

    @Override
    public void matmulTN(Tensor a, Tensor b, float alpha, Tensor c) {
        MatmulTN.run(pool, a, b, alpha, c);
    }

    @Override
    public void matmulQuantizedTransposed(Tensor dy, QuantizedTensor w, Tensor dx) {
        f32("matmulQuantizedTransposed dy", dy);
        f32("matmulQuantizedTransposed dx", dx);
        if (dy.dim(-1) != w.rows() || dx.dim(-1) != w.cols() || rows(dx) != rows(dy)) {
            throw new IllegalArgumentException("matmulQuantizedTransposed: dy " + dy + " · w " + w + " -> dx " + dx
                    + " do not agree");
        }
        MatmulTransposed.runQuantized(pool, dy, w, dx);
    }

    // ------------------------------------------------------------------ normalisation, activations

    @Override
    public void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        f32("rmsNorm x", x);
        f32("rmsNorm out", out);
        sameShape("rmsNorm", x, out);
        int h = x.size(-1);
        if (weight.numel() != h || (weight.dtype() != DType.F32 && weight.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("rmsNorm: weight " + weight + " must be F32 or BF16 of hidden size " + h);
        }
        weight.requireContiguous("rmsNorm weight");
        boolean bf16 = weight.dtype() == DType.BF16;
        forRows(rows(x), h, r -> RowKernels.rmsNorm(x.segment(), x.byteOffset() + r * h * 4L,
                weight.segment(), weight.byteOffset(), bf16, eps, out.segment(), out.byteOffset() + r * h * 4L, h));
    }

    @Override
    public void softmax(Tensor x) {
        f32("softmax x", x);
        int n = x.size(-1);
        forRows(rows(x), n, r -> RowKernels.softmax(x.segment(), x.byteOffset() + r * n * 4L, n));
    }

    @Override
    public void logSoftmax(Tensor x) {
        f32("logSoftmax x", x);
        int n = x.size(-1);
        forRows(rows(x), n, r -> RowKernels.logSoftmax(x.segment(), x.byteOffset() + r * n * 4L, n));
    }

    @Override
    public void silu(Tensor x, Tensor out) {
        elementwise("silu", Elementwise.Op.SILU, x, x, 0, out);
    }

    @Override
    public void swiglu(Tensor gate, Tensor up, Tensor out) {
        elementwise("swiglu", Elementwise.Op.SWIGLU, gate, up, 0, out);
    }

    @Override
    public void add(Tensor a, Tensor b, Tensor out) {
        elementwise("add", Elementwise.Op.ADD, a, b, 0, out);
    }

    @Override
    public void mul(Tensor a, Tensor b, Tensor out) {
        elementwise("mul", Elementwise.Op.MUL, a, b, 0, out);
    }

    @Override
    public void scale(Tensor x, float alpha, Tensor out) {
        elementwise("scale", Elementwise.Op.SCALE, x, x, alpha, out);
    }

    private void elementwise(String op, Elementwise.Op kind, Tensor a, Tensor b, float alpha, Tensor out) {
        f32(op + " " + (kind == Elementwise.Op.SWIGLU ? "gate" : kind == Elementwise.Op.SILU || kind == Elementwise.Op.SCALE ? "x" : "a"), a);
        f32(op + " " + (kind == Elementwise.Op.SWIGLU ? "up" : "b"), b);
        f32(op + " out", out);
        sameShape(op, a, b);
        sameShape(op, a, out);
        long n = a.numel();
        int chunks = Math.toIntExact(Math.max(1, (n + GRAIN - 1) / GRAIN));
        int tasks = tasks(n, chunks);
        pool.parallelFor(tasks, t -> {
            long from = n * t / tasks / VectorMath.L * VectorMath.L;
            long to = t == tasks - 1 ? n : n * (t + 1) / tasks / VectorMath.L * VectorMath.L;
            Elementwise.apply(kind, a.segment(), a.byteOffset(), b.segment(), b.byteOffset(), alpha,
                    out.segment(), out.byteOffset(), from, to);
        });
    }

    // ------------------------------------------------------------------ positions, attention

    @Override
    public void rope(Tensor x, Tensor positions, RopeTable table) {
        RopeKernel.run(pool, "rope", x, positions, table, false);
    }

    @Override
    public void ropeBackward(Tensor dx, Tensor positions, RopeTable table) {
        RopeKernel.run(pool, "ropeBackward", dx, positions, table, true);
    }

    @Override
    public void attention(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        headTensor("attention q", q);
        headTensor("attention k", k);
        headTensor("attention v", v);
        headTensor("attention out", out);
        int t = q.size(0);
        int hq = q.size(1);
        int s = k.size(0);
        int hkv = k.size(1);
        if (hkv == 0 || k.dim(2) != q.dim(2) || v.dim(0) != s || v.dim(1) != hkv || hq % hkv != 0
                || out.dim(0) != t || out.dim(1) != hq || out.dim(2) != v.dim(2)) {
            throw new IllegalArgumentException("attention: q " + q + ", k " + k + ", v " + v + ", out " + out + " do not agree");
        }
        if (queryStart < 0 || queryStart + t > s) {
            throw new IllegalArgumentException("attention: queries at positions [" + queryStart + ", " + (queryStart + t)
                    + ") but only " + s + " keys are given");
        }
        if (spec.sinks() != null && spec.sinks().numel() != hq) {
            throw new IllegalArgumentException("attention: sinks " + spec.sinks() + " must hold one value per query head (" + hq + ")");
        }
        AttentionKernel.run(pool, q, k, v, out, queryStart, spec);
    }

    // ------------------------------------------------------------------ backward and accumulation (training)

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx) {
        TrainingOps.rmsNormBackward(pool, x, weight, eps, dy, dx);
    }

    @Override
    public void swigluBackward(Tensor gate, Tensor up, Tensor dout, Tensor dgate, Tensor dup) {
        TrainingOps.swigluBackward(pool, gate, up, dout, dgate, dup);
    }

    @Override
    public void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec,
                                  Tensor dq, Tensor dk, Tensor dv) {
        TrainingOps.attentionBackward(pool, q, k, v, dout, queryStart, spec, dq, dk, dv);
    }

    @Override
    public void axpy(float alpha, Tensor x, Tensor y) {
        TrainingOps.axpy(pool, alpha, x, y);
    }

    @Override
    public void gatherRows(Tensor src, Tensor rows, Tensor dst) {
        TrainingOps.gatherRows(pool, src, rows, dst);
    }

    @Override
    public void scatterAddRows(Tensor src, Tensor rows, Tensor weights, Tensor dst) {
        TrainingOps.scatterAddRows(pool, src, rows, weights, dst);
    }

    @Override
    public void addBias(Tensor y, Tensor bias) {
        TrainingOps.addBias(pool, y, bias);
    }

    // ------------------------------------------------------------------ selection

    @Override
    public void embedding(Tensor table, Tensor ids, Tensor out) {
        SelectionOps.embedding(pool, table, ids, out);
    }

    @Override
    public void topk(Tensor x, int k, Tensor values, Tensor indices) {
        SelectionOps.topk(pool, x, k, values, indices);
    }

    @Override
    public void argmax(Tensor x, Tensor out) {
        SelectionOps.argmax(pool, x, out);
    }

    // ------------------------------------------------------------------ helpers

    /** Runs body(row) for every row, rows grouped so that each task has at least {@link #GRAIN} elements. */
    private void forRows(int rows, int rowLength, java.util.function.IntConsumer body) {
        forRows(pool, rows, rowLength, body);
    }

    static void forRows(WorkerPool pool, int rows, int rowLength, java.util.function.IntConsumer body) {
        int tasks = tasks(pool, (long) rows * rowLength, rows);
        pool.parallelFor(tasks, t -> {
            for (int r = split(rows, tasks, t, 1); r < split(rows, tasks, t + 1, 1); r++) {
                body.accept(r);
            }
        });
    }

    /** How many tasks for {@code work} elements over {@code units} independent units. */
    int tasks(long work, int units) {
        return tasks(pool, work, units);
    }

    static int tasks(WorkerPool pool, long work, int units) {
        long byWork = Math.max(1, work / GRAIN);
        return (int) Math.max(1, Math.min(Math.min(units, byWork), pool.threads() * 4L));
    }

    /** Start of part {@code t} of {@code n} units cut into {@code parts}, aligned to {@code align}. */
    static int split(int n, int parts, int t, int align) {
        if (t >= parts) {
            return n;
        }
        long s = (long) n * t / parts;
        return (int) Math.min(n, s / align * align);
    }

    static void headTensor(String what, Tensor t) {
        if (t.rank() != 3 || t.dtype() != DType.F32 || t.strides()[2] != 1) {
            throw new IllegalArgumentException(what + " must be f32 [rows, heads, dim] with a contiguous "
                    + "last dimension, got " + t + " strides " + Arrays.toString(t.strides()));
        }
    }

    static int rows(Tensor t) {
        long last = t.rank() == 0 ? 1 : t.dim(-1);
        return Math.toIntExact(last == 0 ? 0 : t.numel() / last);
    }

    static void sameShape(String op, Tensor a, Tensor b) {
        if (!Arrays.equals(a.shape(), b.shape())) {
            throw new IllegalArgumentException(op + ": shapes differ: " + a + " vs " + b);
        }
    }

    static void f32(String what, Tensor t) {
        if (t.dtype() != DType.F32) {
            throw new IllegalArgumentException(what + " must be F32, got " + t);
        }
        t.requireContiguous(what);
    }
}
