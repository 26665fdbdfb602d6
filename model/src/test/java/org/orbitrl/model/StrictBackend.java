package org.orbitrl.model;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.OptimizerOps;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * A test double of a device backend on the host: the scalar reference backend, run on one
 * "device" thread, over tensors of a {@link StrictAllocator} that only that thread may touch. Model
 * code that reads or writes a device tensor on the host ({@code toFloatArray}, {@code copyFrom},
 * {@code fill}) instead of going through the allocator fails with {@link WrongThreadException}, and an
 * operation handed a host tensor where a device backend needs device memory fails with
 * {@link IllegalArgumentException}, as does a strided view where the device kernels need contiguous
 * operands (only rope, attention, the adapter-gradient product's inputs and {@link #copy} take
 * strided views): the bugs a GPU run would find, found without a GPU.
 */
public final class StrictBackend implements Backend {
    private final ExecutorService device;
    private final Thread deviceThread;
    private final Backend inner = new ScalarBackend();
    private final StrictAllocator allocator;

    public StrictBackend() {
        Thread[] t = new Thread[1];
        this.device = Executors.newSingleThreadExecutor(r -> {
            t[0] = new Thread(r, "strict-device");
            t[0].setDaemon(true);
            return t[0];
        });
        try {
            device.submit(() -> null).get();
        } catch (InterruptedException | ExecutionException e) {
            throw new IllegalStateException("starting the device thread", e);
        }
        this.deviceThread = t[0];
        this.allocator = new StrictAllocator(this);
    }

    /** Runs {@code task} on the device thread (directly when already there) and returns its result. */
    <T> T on(Callable<T> task) {
        if (Thread.currentThread() == deviceThread) {
            try {
                return task.call();
            } catch (RuntimeException | Error e) {
                throw e;
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        }
        try {
            return device.submit(task).get();
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException r) {
                throw r;
            }
            if (e.getCause() instanceof Error err) {
                throw err;
            }
            throw new IllegalStateException(e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for the device thread", e);
        }
    }

    /** Throws unless every non-null tensor is device memory of this backend, as a device kernel would. */
    private void device(String op, Tensor... ts) {
        for (Tensor t : ts) {
            if (t != null && !allocator.owns(t)) {
                throw new IllegalArgumentException(op + ": " + t + " is host memory; a device backend needs it uploaded");
            }
        }
    }

    /** Throws unless every non-null tensor is contiguous, as the device kernels of this operation require. */
    private static void contiguous(String op, Tensor... ts) {
        for (Tensor t : ts) {
            if (t != null) {
                t.requireContiguous(op + " operand");
            }
        }
    }

    /** Throws unless every tensor's last dimension is contiguous (leading dimensions may be strided). */
    private static void lastDimContiguous(String op, Tensor... ts) {
        for (Tensor t : ts) {
            if (t.rank() > 0 && t.dim(-1) > 1 && t.strides()[t.rank() - 1] != 1) {
                throw new IllegalArgumentException(op + ": " + t + " needs a contiguous last dimension");
            }
        }
    }

    @Override
    public String name() {
        return "strict";
    }

    @Override
    public StrictAllocator allocator() {
        return allocator;
    }

    @Override
    public void matmul(Tensor x, Tensor w, Tensor y) {
        device("matmul", x, w, y);
        contiguous("matmul", x, w, y);
        on(() -> {
            inner.matmul(x, w, y);
            return null;
        });
    }

    @Override
    public void matmulQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        device("matmulQuantized", x, y, w.codes(), w.scales(), w.zeros());
        contiguous("matmulQuantized", x, y, w.codes(), w.scales(), w.zeros());
        on(() -> {
            inner.matmulQuantized(x, w, y);
            return null;
        });
    }

    /**
     * The grouped form a device backend has for a block-diagonal weight: x, y and the weight's parts must be device
     * memory and contiguous; each group's rows of the decoded weight against its slice of x, summed in f32 in order.
     */
    @Override
    public boolean matmulF32Grouped(Tensor x, QuantizedTensor q, int groups, Tensor y) {
        device("matmulF32Grouped", x, y, q.codes(), q.scales(), q.zeros());
        contiguous("matmulF32Grouped", x, y, q.codes(), q.scales(), q.zeros());
        int k = Math.toIntExact(q.cols());
        int r = Math.toIntExact(q.rows() / groups);
        if (q.rows() % groups != 0 || x.rank() != 3 || x.size(1) != groups || x.size(2) != k || y.rank() != 3
                || y.size(0) != x.size(0) || y.size(1) != groups || y.size(2) != r) {
            throw new IllegalArgumentException("matmulF32Grouped: x " + x + " by the " + groups + " groups of " + q + " -> y " + y
                    + ": expected x [m, " + groups + ", " + k + "] and y [m, " + groups + ", " + r + "]");
        }
        on(() -> {
            Tensor decoded = Tensor.of(new float[Math.toIntExact(q.rows() * k)], q.rows(), k);
            inner.dequantize(q, decoded);
            float[] w = decoded.toFloatArray();
            float[] xv = x.toFloatArray();
            int m = x.size(0);
            float[] out = new float[m * groups * r];
            for (int t = 0; t < m; t++) {
                for (int g = 0; g < groups; g++) {
                    for (int j = 0; j < r; j++) {
                        float acc = 0f;
                        for (int i = 0; i < k; i++) {
                            acc += xv[(t * groups + g) * k + i] * w[(g * r + j) * k + i];
                        }
                        out[(t * groups + g) * r + j] = acc;
                    }
                }
            }
            y.copyFrom(Tensor.of(out, y.shape()));
            return null;
        });
        return true;
    }

    @Override
    public void dequantize(QuantizedTensor w, Tensor out) {
        device("dequantize", out, w.codes(), w.scales(), w.zeros());
        contiguous("dequantize", out, w.codes(), w.scales(), w.zeros());
        on(() -> {
            inner.dequantize(w, out);
            return null;
        });
    }

    @Override
    public void matmulTransposed(Tensor dy, Tensor w, Tensor dx) {
        device("matmulTransposed", dy, w, dx);
        contiguous("matmulTransposed", dy, w, dx);
        on(() -> {
            inner.matmulTransposed(dy, w, dx);
            return null;
        });
    }

    @Override
    public void matmulQuantizedTransposed(Tensor dy, QuantizedTensor w, Tensor dx) {
        device("matmulQuantizedTransposed", dy, dx, w.codes(), w.scales(), w.zeros());
        contiguous("matmulQuantizedTransposed", dy, dx, w.codes(), w.scales(), w.zeros());
        on(() -> {
            inner.matmulQuantizedTransposed(dy, w, dx);
            return null;
        });
    }

    @Override
    public void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        device("rmsNorm", x, weight, out);
        contiguous("rmsNorm", x, weight, out);
        on(() -> {
            inner.rmsNorm(x, weight, eps, out);
            return null;
        });
    }

    @Override
    public void softmax(Tensor x) {
        device("softmax", x);
        contiguous("softmax", x);
        on(() -> {
            inner.softmax(x);
            return null;
        });
    }

    @Override
    public void logSoftmax(Tensor x) {
        device("logSoftmax", x);
        contiguous("logSoftmax", x);
        on(() -> {
            inner.logSoftmax(x);
            return null;
        });
    }

    @Override
    public void silu(Tensor x, Tensor out) {
        device("silu", x, out);
        contiguous("silu", x, out);
        on(() -> {
            inner.silu(x, out);
            return null;
        });
    }

    @Override
    public void swiglu(Tensor gate, Tensor up, Tensor out) {
        device("swiglu", gate, up, out);
        contiguous("swiglu", gate, up, out);
        on(() -> {
            inner.swiglu(gate, up, out);
            return null;
        });
    }

    @Override
    public void add(Tensor a, Tensor b, Tensor out) {
        device("add", a, b, out);
        contiguous("add", a, b, out);
        on(() -> {
            inner.add(a, b, out);
            return null;
        });
    }

    @Override
    public void mul(Tensor a, Tensor b, Tensor out) {
        device("mul", a, b, out);
        contiguous("mul", a, b, out);
        on(() -> {
            inner.mul(a, b, out);
            return null;
        });
    }

    @Override
    public void scale(Tensor x, float alpha, Tensor out) {
        device("scale", x, out);
        contiguous("scale", x, out);
        on(() -> {
            inner.scale(x, alpha, out);
            return null;
        });
    }

    @Override
    public void rope(Tensor x, Tensor positions, RopeTable table) {
        device("rope", x, positions);
        contiguous("rope", positions);
        lastDimContiguous("rope", x);
        on(() -> {
            inner.rope(x, positions, table);
            return null;
        });
    }

    @Override
    public void attention(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        device("attention", q, k, v, out, spec.sinks());
        contiguous("attention", spec.sinks());
        lastDimContiguous("attention", q, k, v, out);
        on(() -> {
            inner.attention(q, k, v, out, queryStart, spec);
            return null;
        });
    }

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx) {
        device("rmsNormBackward", x, weight, dy, dx);
        contiguous("rmsNormBackward", x, weight, dy, dx);
        on(() -> {
            inner.rmsNormBackward(x, weight, eps, dy, dx);
            return null;
        });
    }

    @Override
    public void swigluBackward(Tensor gate, Tensor up, Tensor dout, Tensor dgate, Tensor dup) {
        device("swigluBackward", gate, up, dout, dgate, dup);
        contiguous("swigluBackward", gate, up, dout, dgate, dup);
        on(() -> {
            inner.swigluBackward(gate, up, dout, dgate, dup);
            return null;
        });
    }

    @Override
    public void ropeBackward(Tensor dx, Tensor positions, RopeTable table) {
        device("ropeBackward", dx, positions);
        contiguous("ropeBackward", positions);
        lastDimContiguous("ropeBackward", dx);
        on(() -> {
            inner.ropeBackward(dx, positions, table);
            return null;
        });
    }

    @Override
    public void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec, Tensor dq, Tensor dk, Tensor dv) {
        device("attentionBackward", q, k, v, dout, dq, dk, dv, spec.sinks());
        contiguous("attentionBackward", spec.sinks());
        lastDimContiguous("attentionBackward", q, k, v, dout, dq, dk, dv);
        on(() -> {
            inner.attentionBackward(q, k, v, dout, queryStart, spec, dq, dk, dv);
            return null;
        });
    }

    @Override
    public void embedding(Tensor table, Tensor ids, Tensor out) {
        device("embedding", table, ids, out);
        contiguous("embedding", table, ids, out);
        on(() -> {
            inner.embedding(table, ids, out);
            return null;
        });
    }

    @Override
    public void matmulTN(Tensor a, Tensor b, float alpha, Tensor c) {
        device("matmulTN", a, b, c);
        contiguous("matmulTN", c);
        lastDimContiguous("matmulTN", a, b);
        on(() -> {
            inner.matmulTN(a, b, alpha, c);
            return null;
        });
    }

    @Override
    public void axpy(float alpha, Tensor x, Tensor y) {
        device("axpy", x, y);
        contiguous("axpy", x, y);
        on(() -> {
            inner.axpy(alpha, x, y);
            return null;
        });
    }

    @Override
    public void gatherRows(Tensor src, Tensor rows, Tensor dst) {
        device("gatherRows", src, rows, dst);
        contiguous("gatherRows", src, rows, dst);
        on(() -> {
            inner.gatherRows(src, rows, dst);
            return null;
        });
    }

    @Override
    public void scatterAddRows(Tensor src, Tensor rows, Tensor weights, Tensor dst) {
        device("scatterAddRows", src, rows, weights, dst);
        contiguous("scatterAddRows", src, rows, weights, dst);
        on(() -> {
            inner.scatterAddRows(src, rows, weights, dst);
            return null;
        });
    }

    @Override
    public void addBias(Tensor y, Tensor bias) {
        device("addBias", y, bias);
        contiguous("addBias", y, bias);
        on(() -> {
            inner.addBias(y, bias);
            return null;
        });
    }

    @Override
    public void copy(Tensor src, Tensor dst) {
        device("copy", src, dst);
        on(() -> {
            inner.copy(src, dst);
            return null;
        });
    }

    @Override
    public void clampedSwiglu(Tensor gu, float alpha, float limit, Tensor out) {
        device("clampedSwiglu", gu, out);
        contiguous("clampedSwiglu", gu, out);
        on(() -> {
            inner.clampedSwiglu(gu, alpha, limit, out);
            return null;
        });
    }

    @Override
    public void clampedSwigluBackward(Tensor gu, Tensor dout, float alpha, float limit, Tensor dgu) {
        device("clampedSwigluBackward", gu, dout, dgu);
        contiguous("clampedSwigluBackward", gu, dout, dgu);
        on(() -> {
            inner.clampedSwigluBackward(gu, dout, alpha, limit, dgu);
            return null;
        });
    }

    /** Takes DeepSeek V4's attention, as the CUDA backend outside exact mode does (its values then stay here). */
    @Override
    public boolean takesDeepseekV4Attention() {
        return true;
    }

    /**
     * DeepSeek V4's sink attention on this memory: each query and head in turn, in double, on the device thread (a
     * reference the model's host loop is not, so both are checked against the fixtures' transformers numbers).
     */
    @Override
    public boolean sinkAttention(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor out) {
        device("sinkAttention", q, kv, mask, sinks, out);
        contiguous("sinkAttention", q, kv, mask, sinks, out);
        on(() -> {
            float[] y = SinkAttentionReference.run(q, kv, mask, sinks, scale, null, null);
            out.copyFrom(Tensor.of(y, out.shape()));
            return null;
        });
        return true;
    }

    /** The spans copied on the device thread, with the CUDA launcher's checks (device memory, contiguous, equal counts). */
    @Override
    public void copySpans(Tensor[] srcs, Tensor[] dsts) {
        if (srcs.length != dsts.length) {
            throw new IllegalArgumentException("copySpans: " + srcs.length + " sources for " + dsts.length + " destinations");
        }
        for (int i = 0; i < srcs.length; i++) {
            device("copySpans", srcs[i], dsts[i]);
            contiguous("copySpans", srcs[i], dsts[i]);
            if (srcs[i].numel() != dsts[i].numel() || srcs[i].dtype() != dsts[i].dtype() || srcs[i].dtype().bytes() != 4) {
                throw new IllegalArgumentException("copySpans: " + srcs[i] + " into " + dsts[i]);
            }
        }
        on(() -> {
            for (int i = 0; i < srcs.length; i++) {
                dsts[i].copyFrom(srcs[i].reshape(dsts[i].shape()));
            }
            return null;
        });
    }

    /** Throws where the operands' shapes are not what the CUDA backend's hyper-connection launches take. */
    private static void hyperConnectionShapes(Tensor w, Tensor f, Tensor streams, Tensor out) {
        boolean expand = f != null;
        int n = streams.rank() == 3 ? streams.size(0) : -1;
        int hc = streams.rank() == 3 ? streams.size(1) : -1;
        int h = streams.rank() == 3 ? streams.size(2) : -1;
        long[] want = expand ? new long[]{n, hc, h} : new long[]{n, h};
        if (n < 0 || w.rank() != 2 || w.size(0) != n || w.size(1) < (expand ? (2 + hc) * hc : hc)
                || !java.util.Arrays.equals(out.shape(), want) || (expand && !java.util.Arrays.equals(f.shape(), new long[]{n, h}))) {
            throw new IllegalArgumentException("hyper-connection " + (expand ? "expansion" : "collapse") + ": streams "
                    + java.util.Arrays.toString(streams.shape()) + ", w " + java.util.Arrays.toString(w.shape()) + ", out "
                    + java.util.Arrays.toString(out.shape()) + (expand ? ", f " + java.util.Arrays.toString(f.shape()) : ""));
        }
    }

    /** DeepSeek V4's hyper-connection collapse on this memory, in the host loops' order on the device thread. */
    @Override
    public boolean hyperConnectionCollapse(Tensor w, Tensor streams, Tensor y) {
        device("hyperConnectionCollapse", w, streams, y);
        contiguous("hyperConnectionCollapse", w, streams, y);
        hyperConnectionShapes(w, null, streams, y);
        on(() -> {
            int n = streams.size(0);
            int hc = streams.size(1);
            int h = streams.size(2);
            int width = w.size(1);
            float[] wv = w.toFloatArray();
            float[] sv = streams.toFloatArray();
            float[] out = new float[n * h];
            for (int r = 0; r < n; r++) {
                for (int c = 0; c < h; c++) {
                    float acc = 0f;
                    for (int j = 0; j < hc; j++) {
                        acc += wv[r * width + j] * sv[(r * hc + j) * h + c];
                    }
                    out[r * h + c] = acc;
                }
            }
            y.copyFrom(Tensor.of(out, y.shape()));
            return null;
        });
        return true;
    }

    /** DeepSeek V4's hyper-connection expansion on this memory, in the host loops' order on the device thread. */
    @Override
    public boolean hyperConnectionExpand(Tensor w, Tensor f, Tensor streams, Tensor out) {
        device("hyperConnectionExpand", w, f, streams, out);
        contiguous("hyperConnectionExpand", w, f, streams, out);
        hyperConnectionShapes(w, f, streams, out);
        on(() -> {
            int n = streams.size(0);
            int hc = streams.size(1);
            int h = streams.size(2);
            int width = w.size(1);
            float[] wv = w.toFloatArray();
            float[] fv = f.toFloatArray();
            float[] sv = streams.toFloatArray();
            float[] y = new float[n * hc * h];
            for (int r = 0; r < n; r++) {
                for (int k = 0; k < hc; k++) {
                    for (int c = 0; c < h; c++) {
                        float acc = wv[r * width + hc + k] * fv[r * h + c];
                        for (int j = 0; j < hc; j++) {
                            acc += wv[r * width + 2 * hc + j * hc + k] * sv[(r * hc + j) * h + c];
                        }
                        y[(r * hc + k) * h + c] = acc;
                    }
                }
            }
            out.copyFrom(Tensor.of(y, out.shape()));
            return null;
        });
        return true;
    }

    /**
     * DeepSeek V4's hyper-connection mixes on this memory, a row at a time in float on the device thread (as a device
     * kernel forms them; the model's host map is the reference it is checked against).
     */
    @Override
    public boolean hyperConnectionMix(Tensor m, Tensor base, float s0, float s1, float s2, int hc, int iters, float eps,
                                      Tensor y) {
        device("hyperConnectionMix", m, base, y);
        contiguous("hyperConnectionMix", m, base, y);
        on(() -> {
            float[] mv = m.toFloatArray();
            float[] bv = base.toFloatArray();
            int mm = (2 + hc) * hc;
            float[] out = new float[mv.length];
            for (int r = 0; r < mv.length / mm; r++) {
                int o = r * mm;
                for (int i = 0; i < hc; i++) {
                    out[o + i] = 1f / (1f + (float) Math.exp(-(mv[o + i] * s0 + bv[i]))) + eps;
                    out[o + hc + i] = 2f / (1f + (float) Math.exp(-(mv[o + hc + i] * s1 + bv[hc + i])));
                }
                float[] c = new float[hc * hc];
                for (int j = 0; j < hc; j++) {
                    float mx = Float.NEGATIVE_INFINITY;
                    for (int k = 0; k < hc; k++) {
                        mx = Math.max(mx, mv[o + 2 * hc + j * hc + k] * s2 + bv[2 * hc + j * hc + k]);
                    }
                    float sum = 0;
                    for (int k = 0; k < hc; k++) {
                        c[j * hc + k] = (float) Math.exp(mv[o + 2 * hc + j * hc + k] * s2 + bv[2 * hc + j * hc + k] - mx);
                        sum += c[j * hc + k];
                    }
                    for (int k = 0; k < hc; k++) {
                        c[j * hc + k] = c[j * hc + k] / sum + eps;
                    }
                }
                for (int st = 1; st < 2 * iters; st++) {
                    boolean columns = st % 2 == 1;
                    for (int a = 0; a < hc; a++) {
                        float sum = 0;
                        for (int b = 0; b < hc; b++) {
                            sum += c[columns ? b * hc + a : a * hc + b];
                        }
                        for (int b = 0; b < hc; b++) {
                            c[columns ? b * hc + a : a * hc + b] /= sum + eps;
                        }
                    }
                }
                System.arraycopy(c, 0, out, o + 2 * hc, hc * hc);
            }
            y.copyFrom(Tensor.of(out, y.shape()));
            return null;
        });
        return true;
    }

    /**
     * Every sequence's decode query in one call, as the CUDA backend outside exact mode takes it: each sequence's keys
     * (its window's rows, its new key, its chosen entries) packed on the device thread and attended to by the same
     * double reference as {@link #sinkAttention}.
     */
    /**
     * The indexer's scores on this memory, the model's host loop's formula (each dot product over the dims in order,
     * relu, times qScale and the weight, the heads added in order), so that a decode here keeps the scores and the
     * entries in device memory as the CUDA backend does.
     */
    @Override
    public boolean indexerScores(Tensor q, Tensor keys, Tensor weights, Tensor closed, float qScale, Tensor out) {
        device("indexerScores", q, keys, weights, closed, out);
        contiguous("indexerScores", q, keys, weights, closed, out);
        on(() -> {
            int t = q.size(0);
            int heads = q.size(1);
            int dim = q.size(2);
            int m = keys.size(0);
            float[] qv = q.toFloatArray();
            float[] kv = keys.toFloatArray();
            float[] wv = weights.toFloatArray();
            int[] cl = closed.toIntArray();
            float[] y = new float[t * m];
            java.util.Arrays.fill(y, Float.NEGATIVE_INFINITY);
            for (int i = 0; i < t; i++) {
                int close = cl[i];
                for (int e = 0; e < Math.min(close, m); e++) {
                    float acc = 0;
                    for (int h = 0; h < heads; h++) {
                        float dot = 0;
                        for (int k = 0; k < dim; k++) {
                            dot += qv[(i * heads + h) * dim + k] * kv[e * dim + k];
                        }
                        acc += Math.max(dot, 0f) * qScale * wv[i * heads + h];
                    }
                    y[i * m + e] = acc;
                }
            }
            out.copyFrom(Tensor.of(y, t, m));
            return null;
        });
        return true;
    }

    @Override
    public boolean sinkDecodeAttention(Tensor q, Tensor[] windows, Tensor k, Tensor[] entries, int[][] chosen, Tensor sinks,
                                       float scale, Tensor out) {
        device("sinkDecodeAttention", q, k, sinks, out);
        contiguous("sinkDecodeAttention", q, k, sinks, out);
        for (int b = 0; b < windows.length; b++) {
            for (Tensor t : new Tensor[]{windows[b], entries[b]}) {
                if (t != null) {
                    device("sinkDecodeAttention", t);
                    contiguous("sinkDecodeAttention", t);
                }
            }
        }
        on(() -> {
            int heads = q.size(1);
            int d = q.size(2);
            float[] kAll = k.toFloatArray();
            for (int b = 0; b < windows.length; b++) {
                float[] win = windows[b] == null ? new float[0] : windows[b].toFloatArray();
                float[] ent = entries[b] == null ? new float[0] : entries[b].toFloatArray();
                int[] pick = chosen[b];
                int picked = pick == null ? ent.length / d : pick.length;
                int keys = win.length / d + 1 + picked;
                float[] kv = new float[keys * d];
                System.arraycopy(win, 0, kv, 0, win.length);
                System.arraycopy(kAll, b * d, kv, win.length, d);
                for (int e = 0; e < picked; e++) {
                    System.arraycopy(ent, (pick == null ? e : pick[e]) * d, kv, win.length + (1 + e) * d, d);
                }
                float[] y = SinkAttentionReference.run(q.slice(0, b, b + 1), Tensor.of(kv, keys, d), Tensor.of(new float[keys], 1, keys),
                        sinks, scale, null, null);
                out.slice(0, b, b + 1).copyFrom(Tensor.of(y, 1, heads, d));
            }
            return null;
        });
        return true;
    }

    @Override
    public boolean sinkAttentionBackward(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor dout,
                                         Tensor dq, Tensor dkv) {
        device("sinkAttentionBackward", q, kv, mask, sinks, dout, dq, dkv);
        contiguous("sinkAttentionBackward", q, kv, mask, sinks, dout, dq, dkv);
        on(() -> {
            float[] g = new float[Math.toIntExact(dq.numel())];
            float[] gk = new float[Math.toIntExact(dkv.numel())];
            SinkAttentionReference.run(q, kv, mask, sinks, scale, dout.toFloatArray(), new float[][]{g, gk});
            dq.copyFrom(Tensor.of(g, dq.shape()));
            dkv.copyFrom(Tensor.of(gk, dkv.shape()));
            return null;
        });
        return true;
    }

    @Override
    public void limitedSwiglu(Tensor gate, Tensor up, float limit, Tensor out) {
        device("limitedSwiglu", gate, up, out);
        contiguous("limitedSwiglu", gate, up, out);
        on(() -> {
            inner.limitedSwiglu(gate, up, limit, out);
            return null;
        });
    }

    @Override
    public void limitedSwigluBackward(Tensor gate, Tensor up, Tensor dout, float limit, Tensor dgate, Tensor dup) {
        device("limitedSwigluBackward", gate, up, dout, dgate, dup);
        contiguous("limitedSwigluBackward", gate, up, dout, dgate, dup);
        on(() -> {
            inner.limitedSwigluBackward(gate, up, dout, limit, dgate, dup);
            return null;
        });
    }

    // ------------------------------------------------------------------ the grouped MoE block's operations

    /** Runs a grouped-MoE operation on the device thread after the device checks of its operands. */
    private void moe(String op, Runnable body, Tensor... operands) {
        device(op, operands);
        contiguous(op, operands);
        on(() -> {
            body.run();
            return null;
        });
    }

    @Override
    public void moeTopk(Tensor probs, int k, boolean normalize, Tensor chosen, Tensor weights, Tensor ids) {
        moe("moeTopk", () -> inner.moeTopk(probs, k, normalize, chosen, weights, ids), probs, chosen, weights, ids);
    }

    @Override
    public void moeSigmoidTopk(Tensor logits, Tensor bias, int groups, int topkGroups, int k, boolean normalize, float scaling,
                               Tensor scores, Tensor weights, Tensor ids) {
        moe("moeSigmoidTopk", () -> inner.moeSigmoidTopk(logits, bias, groups, topkGroups, k, normalize, scaling, scores, weights, ids),
                logits, bias, scores, weights, ids);
    }

    @Override
    public void moeScoreTopk(Tensor logits, boolean sqrtSoftplus, Tensor bias, Tensor fixed, int k, float scaling, Tensor scores,
                             Tensor weights, Tensor ids) {
        moe("moeScoreTopk", () -> inner.moeScoreTopk(logits, sqrtSoftplus, bias, fixed, k, scaling, scores, weights, ids),
                logits, bias, fixed, scores, weights, ids);
    }

    @Override
    public void moeSigmoidRouterBackward(Tensor scores, Tensor ids, Tensor dWeight, boolean normalize, float scaling, Tensor dLogits) {
        moe("moeSigmoidRouterBackward", () -> inner.moeSigmoidRouterBackward(scores, ids, dWeight, normalize, scaling, dLogits),
                scores, ids, dWeight, dLogits);
    }

    @Override
    public void moeGroup(Tensor ids, int experts, Tensor offsets, Tensor order, Tensor position) {
        moe("moeGroup", () -> inner.moeGroup(ids, experts, offsets, order, position), ids, offsets, order, position);
    }

    @Override
    public void moeGather(Tensor src, Tensor order, int k, Tensor weights, Tensor dst) {
        moe("moeGather", () -> inner.moeGather(src, order, k, weights, dst), src, order, weights, dst);
    }

    @Override
    public void moeExpertMatmul(Tensor xs, ExpertWeights experts, int[] offsets, Tensor ys, int chunk) {
        moe("moeExpertMatmul", () -> inner.moeExpertMatmul(xs, experts, offsets, ys, chunk), xs, ys);
    }

    @Override
    public void moeExpertMatmulTransposed(Tensor dys, ExpertWeights experts, int[] offsets, Tensor dxs, int chunk) {
        moe("moeExpertMatmulTransposed", () -> inner.moeExpertMatmulTransposed(dys, experts, offsets, dxs, chunk), dys, dxs);
    }

    @Override
    public void moeExpertMatmulAccumulate(Tensor xs, ExpertWeights experts, int[] offsets, float scale, Tensor ys, boolean transposed,
                                          int chunk) {
        moe("moeExpertMatmulAccumulate", () -> inner.moeExpertMatmulAccumulate(xs, experts, offsets, scale, ys, transposed, chunk),
                xs, ys);
    }

    @Override
    public void moeExpertWeightGrad(Tensor dys, Tensor xs, int[] offsets, float scale, Tensor[] grads) {
        moe("moeExpertWeightGrad", () -> inner.moeExpertWeightGrad(dys, xs, offsets, scale, grads), dys, xs);
    }

    @Override
    public void moeCombineGrouped(Tensor ys, Tensor position, Tensor weights, Tensor out, boolean accumulate) {
        moe("moeCombineGrouped", () -> inner.moeCombineGrouped(ys, position, weights, out, accumulate), ys, position, weights, out);
    }

    @Override
    public void moeExpertBiasPairs(Tensor ys, Tensor bias, Tensor ids) {
        moe("moeExpertBiasPairs", () -> inner.moeExpertBiasPairs(ys, bias, ids), ys, bias, ids);
    }

    @Override
    public void moeExpertBias(Tensor ys, Tensor bias, Tensor offsets) {
        moe("moeExpertBias", () -> inner.moeExpertBias(ys, bias, offsets), ys, bias, offsets);
    }

    @Override
    public void moeWeightGrad(Tensor dout, Tensor ys, Tensor position, Tensor dWeight) {
        moe("moeWeightGrad", () -> inner.moeWeightGrad(dout, ys, position, dWeight), dout, ys, position, dWeight);
    }

    @Override
    public void moeRouterBackward(Tensor probs, Tensor chosen, Tensor weights, Tensor ids, Tensor dWeight, boolean normalize,
                                  Tensor dLogits) {
        moe("moeRouterBackward", () -> inner.moeRouterBackward(probs, chosen, weights, ids, dWeight, normalize, dLogits),
                probs, chosen, weights, ids, dWeight, dLogits);
    }

    @Override
    public void topk(Tensor x, int k, Tensor values, Tensor indices) {
        device("topk", x, values, indices);
        contiguous("topk", x, values, indices);
        on(() -> {
            inner.topk(x, k, values, indices);
            return null;
        });
    }

    @Override
    public void argmax(Tensor x, Tensor out) {
        device("argmax", x, out);
        contiguous("argmax", x, out);
        on(() -> {
            inner.argmax(x, out);
            return null;
        });
    }

    @Override
    public void tokenLogProbs(Tensor logits, Tensor rows, Tensor tokens, float temperature, Tensor out) {
        device("tokenLogProbs", logits, rows, tokens, out);
        contiguous("tokenLogProbs", logits, rows, tokens, out);
        on(() -> {
            inner.tokenLogProbs(logits, rows, tokens, temperature, out);
            return null;
        });
    }

    @Override
    public void tokenLogProbsBackward(Tensor logits, Tensor rows, Tensor tokens, Tensor dLogp, float temperature, Tensor dLogits) {
        device("tokenLogProbsBackward", logits, rows, tokens, dLogp, dLogits);
        contiguous("tokenLogProbsBackward", logits, rows, tokens, dLogp, dLogits);
        on(() -> {
            inner.tokenLogProbsBackward(logits, rows, tokens, dLogp, temperature, dLogits);
            return null;
        });
    }

    @Override
    public void oftRotation(Tensor param, int neumannTerms, Tensor rotationT) {
        device("oftRotation", param, rotationT);
        contiguous("oftRotation", param, rotationT);
        on(() -> {
            inner.oftRotation(param, neumannTerms, rotationT);
            return null;
        });
    }

    @Override
    public void oftRotationBackward(Tensor param, Tensor dRotation, int neumannTerms, Tensor grad) {
        device("oftRotationBackward", param, dRotation, grad);
        contiguous("oftRotationBackward", param, dRotation, grad);
        on(() -> {
            inner.oftRotationBackward(param, dRotation, neumannTerms, grad);
            return null;
        });
    }

    @Override
    public void oftRotate(Tensor x, Tensor rotationT, boolean transposed, Tensor y) {
        device("oftRotate", x, rotationT, y);
        contiguous("oftRotate", x, rotationT, y);
        on(() -> {
            inner.oftRotate(x, rotationT, transposed, y);
            return null;
        });
    }

    @Override
    public void oftProject(Tensor param, double radius) {
        device("oftProject", param);
        contiguous("oftProject", param);
        on(() -> {
            inner.oftProject(param, radius);
            return null;
        });
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, OptimizerOps.AdamWStep step) {
        device("adamw", param, grad, m, v);
        contiguous("adamw", param, grad, m, v);
        on(() -> {
            inner.adamw(param, grad, m, v, step);
            return null;
        });
    }

    @Override
    public OptimizerOps.GradientStats gradientStats(Tensor grad) {
        device("gradientStats", grad);
        contiguous("gradientStats", grad);
        return on(() -> inner.gradientStats(grad));
    }

    /** Frees the device memory and stops the device thread. */
    @Override
    public void close() {
        on(() -> {
            allocator.closeArena();
            return null;
        });
        device.shutdown();
    }
}
