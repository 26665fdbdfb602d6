package org.orbitrl.kernels.cpu;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;

/**
 * The plain reference: single-threaded scalar loops written for obviousness, not speed. Every
 * fast kernel is tested against it. Selected with {@code -Dorbit.kernels=scalar}.
 */
public class ScalarBackend implements Backend {

    private final TensorAllocator allocator;

    public ScalarBackend() {
        this(TensorAllocator.heap());
    }

    public ScalarBackend(TensorAllocator allocator) {
        this.allocator = allocator;
    }

    @Override
    public String name() {
        return "cpu-scalar";
    }

    @Override
    public TensorAllocator allocator() {
        return allocator;
    }

    // ------------------------------------------------------------------ helpers

    static int lastDim(Tensor t) {
        return t.size(-1);
    }

    static int rows(Tensor t) {
        return Math.toIntExact(t.numel() / Math.max(1, t.dim(-1)));
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

    // ------------------------------------------------------------------ linear algebra

    @Override
    public void matmul(Tensor x, Tensor w, Tensor y) {
        f32("matmul x", x);
        f32("matmul y", y);
        w.requireContiguous("matmul w");
        int k = lastDim(x);
        int n = w.size(0);
        int m = rows(x);
        if (w.rank() != 2 || w.dim(1) != k || lastDim(y) != n || rows(y) != m) {
            throw new IllegalArgumentException("matmul: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        float[] xs = x.toFloatArray();
        float[] ws = w.toFloatArray();
        float[] ys = new float[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                float acc = 0;
                for (int p = 0; p < k; p++) {
                    acc += xs[i * k + p] * ws[j * k + p];
                }
                ys[i * n + j] = acc;
            }
        }
        write(y, ys);
    }

    @Override
    public void matmulQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        f32("matmulQuantized x", x);
        f32("matmulQuantized y", y);
        int k = lastDim(x);
        int n = Math.toIntExact(w.rows());
        int m = rows(x);
        if (w.cols() != k || lastDim(y) != n || rows(y) != m) {
            throw new IllegalArgumentException("matmulQuantized: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        float[] xs = x.toFloatArray();
        float[] row = new float[k];
        float[] ys = new float[m * n];
        for (int j = 0; j < n; j++) {
            w.format().dequantizeRow(w, j, row);
            for (int i = 0; i < m; i++) {
                float acc = 0;
                for (int p = 0; p < k; p++) {
                    acc += xs[i * k + p] * row[p];
                }
                ys[i * n + j] = acc;
            }
        }
        write(y, ys);
    }

    @Override
    public void dequantize(QuantizedTensor w, Tensor out) {
        out.requireContiguous("dequantize out");
        if (out.rank() != 2 || out.dim(0) != w.rows() || out.dim(1) != w.cols()) {
            throw new IllegalArgumentException("dequantize: " + w + " into " + out);
        }
        int k = Math.toIntExact(w.cols());
        float[] row = new float[k];
        for (long r = 0; r < w.rows(); r++) {
            w.format().dequantizeRow(w, r, row);
            Tensor dst = out.select(0, r);
            for (int c = 0; c < k; c++) {
                dst.setFloat(row[c], c);
            }
        }
    }

    // ------------------------------------------------------------------ normalisation, activations

    @Override
    public void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        f32("rmsNorm x", x);
        f32("rmsNorm out", out);
        sameShape("rmsNorm", x, out);
        int h = lastDim(x);
        if (weight.numel() != h) {
            throw new IllegalArgumentException("rmsNorm: weight " + weight + " does not match hidden size " + h);
        }
        float[] w = weight.toFloatArray();
        float[] xs = x.toFloatArray();
        float[] ys = new float[xs.length];
        for (int r = 0; r < rows(x); r++) {
            float ss = 0;
            for (int i = 0; i < h; i++) {
                ss += xs[r * h + i] * xs[r * h + i];
            }
            float inv = (float) (1.0 / Math.sqrt(ss / h + eps));
            for (int i = 0; i < h; i++) {
                ys[r * h + i] = w[i] * (xs[r * h + i] * inv);
            }
        }
        write(out, ys);
    }

    @Override
    public void softmax(Tensor x) {
        f32("softmax x", x);
        int n = lastDim(x);
        float[] xs = x.toFloatArray();
        for (int r = 0; r < rows(x); r++) {
            float max = Float.NEGATIVE_INFINITY;
            for (int i = 0; i < n; i++) {
                max = Math.max(max, xs[r * n + i]);
            }
            float sum = 0;
            for (int i = 0; i < n; i++) {
                float e = (float) Math.exp(xs[r * n + i] - max);
                xs[r * n + i] = e;
                sum += e;
            }
            for (int i = 0; i < n; i++) {
                xs[r * n + i] /= sum;
            }
        }
        write(x, xs);
    }

    @Override
    public void logSoftmax(Tensor x) {
        f32("logSoftmax x", x);
        int n = lastDim(x);
        float[] xs = x.toFloatArray();
        for (int r = 0; r < rows(x); r++) {
            float max = Float.NEGATIVE_INFINITY;
            for (int i = 0; i < n; i++) {
                max = Math.max(max, xs[r * n + i]);
            }
            double sum = 0;
            for (int i = 0; i < n; i++) {
                sum += Math.exp(xs[r * n + i] - max);
            }
            float lse = max + (float) Math.log(sum);
            for (int i = 0; i < n; i++) {
                xs[r * n + i] -= lse;
            }
        }
        write(x, xs);
    }

    @Override
    public void silu(Tensor x, Tensor out) {
        f32("silu x", x);
        f32("silu out", out);
        sameShape("silu", x, out);
        float[] xs = x.toFloatArray();
        for (int i = 0; i < xs.length; i++) {
            xs[i] = xs[i] / (1f + (float) Math.exp(-xs[i]));
        }
        write(out, xs);
    }

    @Override
    public void swiglu(Tensor gate, Tensor up, Tensor out) {
        f32("swiglu gate", gate);
        f32("swiglu up", up);
        f32("swiglu out", out);
        sameShape("swiglu", gate, up);
        sameShape("swiglu", gate, out);
        float[] g = gate.toFloatArray();
        float[] u = up.toFloatArray();
        for (int i = 0; i < g.length; i++) {
            g[i] = g[i] / (1f + (float) Math.exp(-g[i])) * u[i];
        }
        write(out, g);
    }

    @Override
    public void add(Tensor a, Tensor b, Tensor out) {
        elementwise("add", a, b, out, 0);
    }

    @Override
    public void mul(Tensor a, Tensor b, Tensor out) {
        elementwise("mul", a, b, out, 1);
    }

    private void elementwise(String op, Tensor a, Tensor b, Tensor out, int kind) {
        f32(op + " a", a);
        f32(op + " b", b);
        f32(op + " out", out);
        sameShape(op, a, b);
        sameShape(op, a, out);
        float[] as = a.toFloatArray();
        float[] bs = b.toFloatArray();
        for (int i = 0; i < as.length; i++) {
            as[i] = kind == 0 ? as[i] + bs[i] : as[i] * bs[i];
        }
        write(out, as);
    }

    @Override
    public void scale(Tensor x, float alpha, Tensor out) {
        f32("scale x", x);
        f32("scale out", out);
        sameShape("scale", x, out);
        float[] xs = x.toFloatArray();
        for (int i = 0; i < xs.length; i++) {
            xs[i] *= alpha;
        }
        write(out, xs);
    }

    // ------------------------------------------------------------------ positions, attention

    @Override
    public void rope(Tensor x, Tensor positions, RopeTable table) {
        if (x.rank() != 3 || x.dtype() != DType.F32 || x.strides()[2] != 1) {
            throw new IllegalArgumentException("rope: x must be f32 [T, H, D] with a contiguous last dimension, got " + x);
        }
        int t = x.size(0);
        int h = x.size(1);
        int d = x.size(2);
        int rd = table.rotaryDim();
        int half = rd / 2;
        if (rd > d || positions.numel() != t) {
            throw new IllegalArgumentException("rope: rotary dim " + rd + " of x " + x + " with positions " + positions);
        }
        for (int i = 0; i < t; i++) {
            int pos = Math.toIntExact(positions.getLong(i));
            for (int hh = 0; hh < h; hh++) {
                Tensor v = x.select(0, i).select(0, hh);
                for (int j = 0; j < half; j++) {
                    int a = table.style() == RopeTable.Style.HALF ? j : 2 * j;
                    int b = table.style() == RopeTable.Style.HALF ? j + half : 2 * j + 1;
                    float x1 = v.getFloat(a);
                    float x2 = v.getFloat(b);
                    float c = table.cos(pos, j);
                    float s = table.sin(pos, j);
                    v.setFloat(x1 * c - x2 * s, a);
                    v.setFloat(x2 * c + x1 * s, b);
                }
            }
        }
    }

    @Override
    public void attention(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        int t = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        int dv = v.size(2);
        if (k.dim(2) != d || v.dim(0) != s || v.dim(1) != hkv || hq % hkv != 0
                || out.dim(0) != t || out.dim(1) != hq || out.dim(2) != dv) {
            throw new IllegalArgumentException("attention: q " + q + ", k " + k + ", v " + v + ", out " + out + " do not agree");
        }
        if (queryStart + t > s) {
            throw new IllegalArgumentException("attention: queries reach position " + (queryStart + t - 1)
                    + " but only " + s + " keys are given");
        }
        int group = hq / hkv;
        float[] scores = new float[s];
        for (int i = 0; i < t; i++) {
            int pos = queryStart + i;
            for (int h = 0; h < hq; h++) {
                int kvh = h / group;
                int lo = spec.slidingWindow() > 0 ? Math.max(0, pos - spec.slidingWindow() + 1) : 0;
                float max = Float.NEGATIVE_INFINITY;
                for (int j = lo; j <= pos; j++) {
                    float acc = 0;
                    for (int c = 0; c < d; c++) {
                        acc += q.getFloat(i, h, c) * k.getFloat(j, kvh, c);
                    }
                    scores[j] = acc * spec.scale();
                    max = Math.max(max, scores[j]);
                }
                float sink = spec.sinks() == null ? Float.NEGATIVE_INFINITY : spec.sinks().getFloat(h);
                max = Math.max(max, sink);
                float sum = spec.sinks() == null ? 0 : (float) Math.exp(sink - max);
                for (int j = lo; j <= pos; j++) {
                    scores[j] = (float) Math.exp(scores[j] - max);
                    sum += scores[j];
                }
                for (int c = 0; c < dv; c++) {
                    float acc = 0;
                    for (int j = lo; j <= pos; j++) {
                        acc += scores[j] * v.getFloat(j, kvh, c);
                    }
                    out.setFloat(acc / sum, i, h, c);
                }
            }
        }
    }

    // ------------------------------------------------------------------ selection

    @Override
    public void embedding(Tensor table, Tensor ids, Tensor out) {
        int n = Math.toIntExact(ids.numel());
        int h = table.size(1);
        long vocab = table.dim(0);
        if (out.numel() != (long) n * h) {
            throw new IllegalArgumentException("embedding: out " + out + " for " + n + " ids of width " + h);
        }
        Tensor flat = out.reshape(n, h);
        Tensor idsFlat = ids.reshape(n);
        for (int i = 0; i < n; i++) {
            long id = idsFlat.getLong(i);
            if (id < 0 || id >= vocab) {
                throw new IndexOutOfBoundsException("embedding: token id " + id + " outside vocabulary [0, " + vocab + ")");
            }
            flat.select(0, i).copyFrom(table.select(0, id));
        }
    }

    @Override
    public void topk(Tensor x, int k, Tensor values, Tensor indices) {
        f32("topk x", x);
        int n = lastDim(x);
        int r = rows(x);
        if (k <= 0 || k > n || values.numel() != (long) r * k || indices.numel() != (long) r * k) {
            throw new IllegalArgumentException("topk: k=" + k + " of " + x + " into " + values + ", " + indices);
        }
        float[] xs = x.toFloatArray();
        Tensor vf = values.reshape(r, k);
        Tensor idf = indices.reshape(r, k);
        boolean[] taken = new boolean[n];
        for (int row = 0; row < r; row++) {
            Arrays.fill(taken, false);
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int i = 0; i < n; i++) {
                    if (!taken[i] && (best < 0 || xs[row * n + i] > xs[row * n + best])) {
                        best = i;
                    }
                }
                taken[best] = true;
                vf.setFloat(xs[row * n + best], row, j);
                idf.setLong(best, row, j);
            }
        }
    }

    @Override
    public void argmax(Tensor x, Tensor out) {
        f32("argmax x", x);
        int n = lastDim(x);
        int r = rows(x);
        if (out.numel() != r) {
            throw new IllegalArgumentException("argmax: out " + out + " for " + r + " rows");
        }
        float[] xs = x.toFloatArray();
        Tensor o = out.reshape(r);
        for (int row = 0; row < r; row++) {
            int best = 0;
            for (int i = 1; i < n; i++) {
                if (xs[row * n + i] > xs[row * n + best]) {
                    best = i;
                }
            }
            o.setLong(best, row);
        }
    }

    private static void write(Tensor dst, float[] values) {
        java.lang.foreign.MemorySegment.copy(values, 0, dst.segment(), java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED,
                dst.byteOffset(), values.length);
    }
}
