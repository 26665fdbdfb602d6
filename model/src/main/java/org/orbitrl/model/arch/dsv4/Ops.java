package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.Linear;

/**
 * The differentiable building blocks of DeepSeek V4 on host arrays. Every op computes its output
 * and, when a {@link GradTape} is given, records how to send the output's gradient to its inputs.
 * Linear layers run on the backend (so quantized weights and adapters work as everywhere else, on
 * the device too: their inputs are copied there and their outputs back); their backward accumulates
 * the adapter gradients.
 */
final class Ops {
    private Ops() {
    }

    /** Adds d into n's gradient. */
    static void acc(Node n, float[] d) {
        float[] g = n.grad();
        int block = 1 << 14;
        forRows((d.length + block - 1) / block, block, r -> {
            for (int i = r * block, end = Math.min(d.length, i + block); i < end; i++) {
                g[i] += d[i];
            }
        });
    }

    /**
     * Adds d, a fresh array nobody else keeps (a value read back from the backend), into n's gradient: the first
     * gradient to reach n is d itself, no zeroed array and no pass over it.
     */
    static void accOwned(Node n, float[] d) {
        if (!n.adoptGrad(d)) {
            acc(n, d);
        }
    }

    /** Rows whose work (rows × work a row) is below this run on the calling thread. */
    static final long PARALLEL_WORK = 1 << 16;

    /** Whether {@link #forRows} may spread rows over threads (benchmarks turn it off to compare). */
    static volatile boolean parallel = true;

    /**
     * body(r) for every row r in [0, rows): on the calling thread, or spread over the common pool's threads when the
     * work is large. Each row's body writes only that row's outputs, so the results do not depend on the threads.
     */
    static void forRows(int rows, long workPerRow, java.util.function.IntConsumer body) {
        if (!parallel || (long) rows * workPerRow < PARALLEL_WORK || rows < 2) {
            for (int r = 0; r < rows; r++) {
                body.accept(r);
            }
        } else {
            java.util.stream.IntStream.range(0, rows).parallel().forEach(body);
        }
    }

    /** Releases per-step tensors of {@code a} (see {@link org.orbitrl.kernels.TensorAllocator#release}). */
    static void release(org.orbitrl.kernels.TensorAllocator a, Tensor... ts) {
        for (Tensor t : ts) {
            a.release(t);
        }
    }

    /** {@code v} as an f32 tensor of the backend's memory (a copy to the device for a device backend). */
    private static Tensor device(Backend b, float[] v, long... shape) {
        return device(b.allocator(), v, shape);
    }

    static Tensor device(org.orbitrl.kernels.TensorAllocator a, float[] v, long... shape) {
        if (!a.hostMemory()) {
            return a.uploadFloats(MemoryCategory.ACTIVATIONS, v, shape);
        }
        Tensor t = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, shape);
        t.copyFrom(Tensor.of(v, shape));
        return t;
    }

    /** The values of {@code t}, a tensor of the backend's memory (read back from the device for a device backend). */
    private static float[] host(Backend b, Tensor t) {
        return b.allocator().toFloats(t);
    }

    /** y [rows, out] = lin(x [rows, in]). */
    static Node linear(GradTape t, Backend b, Linear lin, Node x, int rows) {
        int in = lin.in();
        int out = lin.out();
        Tensor xt = x.placed(b.allocator(), rows, in);
        Tensor yt = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows, out);
        lin.forward(b, xt, yt);
        Node y = new Node(host(b, yt));
        if (t != null) {
            t.record(y, () -> {
                Tensor dy = device(b, y.gradOrNull(), rows, out);
                Tensor dx = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows, in);
                lin.backward(b, xt, dy, dx);
                accOwned(x, host(b, dx));
            });
        }
        return y;
    }

    /** y [rows, out] = x [rows, in] · wᵀ with a frozen f32 matrix w [out, in]. */
    static Node matmulT(GradTape t, Node x, int rows, float[] w, int out, int in) {
        float[] y = new float[rows * out];
        forRows(rows, (long) out * in, r -> {
            for (int o = 0; o < out; o++) {
                float s = 0;
                for (int i = 0; i < in; i++) {
                    s += x.v[r * in + i] * w[o * in + i];
                }
                y[r * out + o] = s;
            }
        });
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dx = x.grad();
                forRows(rows, (long) out * in, r -> {
                    for (int o = 0; o < out; o++) {
                        float d = dy[r * out + o];
                        if (d != 0) {
                            for (int i = 0; i < in; i++) {
                                dx[r * in + i] += d * w[o * in + i];
                            }
                        }
                    }
                });
            });
        }
        return yn;
    }

    /** RMSNorm over the last dim d of x [rows, d]; weight [d] or null (unweighted). */
    static Node rmsNorm(GradTape t, Node x, int d, float[] w, float eps) {
        int rows = x.size() / d;
        float[] y = new float[x.size()];
        float[] inv = new float[rows];
        forRows(rows, d, r -> {
            double ss = 0;
            for (int i = 0; i < d; i++) {
                float v = x.v[r * d + i];
                ss += v * v;
            }
            inv[r] = (float) (1.0 / Math.sqrt(ss / d + eps));
            for (int i = 0; i < d; i++) {
                y[r * d + i] = x.v[r * d + i] * inv[r] * (w == null ? 1f : w[i]);
            }
        });
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dx = x.grad();
                forRows(rows, d, r -> {
                    double dot = 0;
                    for (int i = 0; i < d; i++) {
                        dot += dy[r * d + i] * (w == null ? 1f : w[i]) * x.v[r * d + i];
                    }
                    float ir = inv[r];
                    float c = (float) (dot * ir * ir * ir / d);
                    for (int i = 0; i < d; i++) {
                        dx[r * d + i] += dy[r * d + i] * (w == null ? 1f : w[i]) * ir - x.v[r * d + i] * c;
                    }
                });
            });
        }
        return yn;
    }

    /** a + b, same shapes. */
    static Node add(GradTape t, Node a, Node b) {
        float[] y = new float[a.size()];
        int block = 1 << 14;
        forRows((y.length + block - 1) / block, block, r -> {
            for (int i = r * block, end = Math.min(y.length, i + block); i < end; i++) {
                y[i] = a.v[i] + b.v[i];
            }
        });
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                acc(a, yn.gradOrNull());
                acc(b, yn.gradOrNull());
            });
        }
        return yn;
    }

    /** Rows [start, start+count) of x [rows, width]. */
    static Node rows(GradTape t, Node x, int width, int start, int count) {
        float[] y = new float[count * width];
        System.arraycopy(x.v, start * width, y, 0, y.length);
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dx = x.grad();
                for (int i = 0; i < dy.length; i++) {
                    dx[start * width + i] += dy[i];
                }
            });
        }
        return yn;
    }

    /** Columns [start, start+count) of x [rows, width]. */
    static Node cols(GradTape t, Node x, int width, int start, int count) {
        int rows = x.size() / width;
        float[] y = new float[rows * count];
        for (int r = 0; r < rows; r++) {
            System.arraycopy(x.v, r * width + start, y, r * count, count);
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dx = x.grad();
                for (int r = 0; r < rows; r++) {
                    for (int c = 0; c < count; c++) {
                        dx[r * width + start + c] += dy[r * count + c];
                    }
                }
            });
        }
        return yn;
    }

    /** The parts stacked along rows (all the same width); null parts are skipped. */
    static Node concatRows(GradTape t, Node... parts) {
        int n = 0;
        for (Node p : parts) {
            n += p == null ? 0 : p.size();
        }
        float[] y = new float[n];
        int off = 0;
        for (Node p : parts) {
            if (p != null) {
                System.arraycopy(p.v, 0, y, off, p.size());
                off += p.size();
            }
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                int o = 0;
                for (Node p : parts) {
                    if (p != null) {
                        float[] dp = p.grad();
                        for (int i = 0; i < p.size(); i++) {
                            dp[i] += dy[o + i];
                        }
                        o += p.size();
                    }
                }
            });
        }
        return yn;
    }

    /**
     * Interleaved rotary embedding on the trailing {@code 2*half} channels of each head of
     * x [rows, heads, headDim]: pairs (2i, 2i+1) rotate by the row's angle i. cos/sin [rows, half];
     * {@code inverse} rotates by the negative angle (the conjugate).
     */
    static Node rope(GradTape t, Node x, int heads, int headDim, float[] cos, float[] sin, boolean inverse) {
        int half = cos.length / (x.size() / (heads * headDim));
        float[] y = x.v.clone();
        rotate(y, x.v, heads, headDim, half, cos, sin, inverse);
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dx = dy.clone();
                rotate(dx, dy, heads, headDim, half, cos, sin, !inverse);
                acc(x, dx);
            });
        }
        return yn;
    }

    private static void rotate(float[] y, float[] x, int heads, int headDim, int half, float[] cos, float[] sin,
                               boolean inverse) {
        int rows = x.length / (heads * headDim);
        int start = headDim - 2 * half;
        forRows(rows, (long) heads * half, r -> {
            for (int h = 0; h < heads; h++) {
                int base = (r * heads + h) * headDim + start;
                for (int i = 0; i < half; i++) {
                    float c = cos[r * half + i];
                    float s = inverse ? -sin[r * half + i] : sin[r * half + i];
                    float a = x[base + 2 * i];
                    float bb = x[base + 2 * i + 1];
                    y[base + 2 * i] = a * c - bb * s;
                    y[base + 2 * i + 1] = bb * c + a * s;
                }
            }
        });
    }

    /**
     * SwiGLU with DeepSeek V4's clamp: silu(min(g, limit)) · clamp(u, -limit, limit), g and u [rows, I].
     */
    static Node swiglu(GradTape t, Node g, Node u, float limit) {
        float[] y = new float[g.size()];
        for (int i = 0; i < y.length; i++) {
            float gc = Math.min(g.v[i], limit);
            float uc = Math.max(-limit, Math.min(limit, u.v[i]));
            y[i] = gc / (1f + (float) Math.exp(-gc)) * uc;
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dg = g.grad();
                float[] du = u.grad();
                for (int i = 0; i < dy.length; i++) {
                    float gc = Math.min(g.v[i], limit);
                    float uc = Math.max(-limit, Math.min(limit, u.v[i]));
                    float sg = 1f / (1f + (float) Math.exp(-gc));
                    float silu = gc * sg;
                    if (g.v[i] < limit) {
                        dg[i] += dy[i] * uc * (sg * (1 + gc * (1 - sg)));
                    }
                    if (u.v[i] > -limit && u.v[i] < limit) {
                        du[i] += dy[i] * silu;
                    }
                }
            });
        }
        return yn;
    }

    /** Rows of x [rows, width] at the given indices (repeats allowed). */
    static Node gather(GradTape t, Node x, int width, int[] idx) {
        float[] y = new float[idx.length * width];
        for (int i = 0; i < idx.length; i++) {
            System.arraycopy(x.v, idx[i] * width, y, i * width, width);
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dx = x.grad();
                for (int i = 0; i < idx.length; i++) {
                    for (int c = 0; c < width; c++) {
                        dx[idx[i] * width + c] += dy[i * width + c];
                    }
                }
            });
        }
        return yn;
    }
}
