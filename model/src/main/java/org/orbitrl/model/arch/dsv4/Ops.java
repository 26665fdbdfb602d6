package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;

/**
 * The differentiable building blocks of DeepSeek V4. Every op computes its output and, when a {@link GradTape} is
 * given, records how to send the output's gradient to its inputs. Linear layers run on the backend (so quantized
 * weights and adapters work as everywhere else); their backward accumulates the adapter gradients.
 *
 * <p>On a device backend a value stays where the op that made it ran ({@link Node}): a linear's output stays in device
 * memory, and the ops that have a backend form (RMSNorm, rope, sums, rows and their concatenation, the limited SwiGLU)
 * run there when their input is there, forward and backward, so a chain of them (V4's attention from q_a to wo_b)
 * copies nothing across PCIe. The ops without one (the hyper-connections, the compressors' pooling, the routers'
 * choices) read their inputs on the host, each value copied back once. On a host backend every value is a host array,
 * as is everything under {@code -Dorbit.v4.deviceValues=false} (the copies of every linear's input and output, for
 * comparison).
 */
final class Ops {
    private Ops() {
    }

    /** Whether device backends keep V4's values in their memory between ops (the default) or copy each one back. */
    static volatile boolean deviceValues = !"false".equals(System.getProperty("orbit.v4.deviceValues"));

    /** Whether values made by {@code b}'s operations stay in its memory. */
    static boolean keepsValues(Backend b) {
        return deviceValues && !b.allocator().hostMemory();
    }

    /** Whether an op of {@code b} on x runs there: x is a value of its device memory. */
    static boolean there(Backend b, Node x) {
        return b != null && keepsValues(b) && x.onDevice();
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

    /** Releases per-step tensors of {@code a} (see {@link org.orbitrl.kernels.TensorAllocator#release}); nulls are skipped. */
    static void release(org.orbitrl.kernels.TensorAllocator a, Tensor... ts) {
        for (Tensor t : ts) {
            if (t != null) {
                a.release(t);
            }
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

    /**
     * The node of {@code t}, an f32 tensor an op of {@code b} made and gives up: kept in device memory where {@code b}
     * keeps values, else read back into a host array.
     */
    static Node made(Backend b, Tensor t) {
        if (keepsValues(b)) {
            return Node.onDevice(b.allocator(), t);
        }
        Node n = new Node(host(b, t));
        b.allocator().release(t);
        return n;
    }

    /** Sends dx, a gradient tensor of {@code b}'s memory the caller gives up, to x: there, or read back into the host's. */
    static void sendGrad(Backend b, Node x, Tensor dx) {
        if (keepsValues(b)) {
            x.accDevice(b, dx);
        } else {
            accOwned(x, host(b, dx));
            b.allocator().release(dx);
        }
    }

    /** A frozen vector (a norm's weight; null: ones of length n) in {@code b}'s memory, placed once. */
    private static Tensor constant(Backend b, float[] w, int n) {
        return constant(b, w == null ? ones(n) : w, new long[]{n});
    }

    /** A frozen f32 array of {@code shape} in {@code b}'s memory, placed once (for as long as the array lives). */
    static Tensor constant(Backend b, float[] w, long[] shape) {
        TensorAllocator a = b.allocator();
        synchronized (CONSTANTS) {
            java.util.Map<float[], Tensor> m = CONSTANTS.computeIfAbsent(a, k -> new java.util.WeakHashMap<>());
            Tensor t = m.computeIfAbsent(w, k -> a.upload(MemoryCategory.BASE_WEIGHTS, Tensor.of(k.clone(), shape)));
            return java.util.Arrays.equals(t.shape(), shape) ? t : t.reshape(shape);
        }
    }

    private static final java.util.Map<TensorAllocator, java.util.Map<float[], Tensor>> CONSTANTS = new java.util.WeakHashMap<>();

    /**
     * A forward's positions in device memory for its untaped ropes: uploaded at the first ask ({@link #runPositions}) and
     * released when the run closes (a taped rope reads its tape's, which its backward reads after the run). Opened by
     * the model's forward on the thread that runs its layers.
     */
    static final class RunPositions implements AutoCloseable {
        private static final ThreadLocal<RunPositions> OPEN = new ThreadLocal<>();

        private final Backend b;
        private final int[] positions;
        private final RunPositions outer;
        private Tensor uploaded;

        private RunPositions(Backend b, int[] positions, RunPositions outer) {
            this.b = b;
            this.positions = positions;
            this.outer = outer;
        }

        static RunPositions open(Backend b, int[] positions) {
            RunPositions r = new RunPositions(b, positions, OPEN.get());
            OPEN.set(r);
            return r;
        }

        @Override
        public void close() {
            OPEN.set(outer);
            if (uploaded != null) {
                b.allocator().release(uploaded);
                uploaded = null;
            }
        }
    }

    /**
     * The open run's positions in {@code b}'s memory where {@code positions} is its array (uploaded once for all its
     * ropes); null where no such run is open on this thread (the caller uploads and releases its own).
     */
    static Tensor runPositions(Backend b, int[] positions) {
        RunPositions r = RunPositions.OPEN.get();
        if (r == null || r.positions != positions || r.b.allocator() != b.allocator() || !keepsValues(b)) {
            return null;
        }
        if (r.uploaded == null) {
            r.uploaded = b.allocator().upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(positions, positions.length));
        }
        return r.uploaded;
    }
    private static final java.util.Map<Integer, float[]> ONES = new java.util.concurrent.ConcurrentHashMap<>();

    private static float[] ones(int n) {
        return ONES.computeIfAbsent(n, k -> {
            float[] o = new float[k];
            java.util.Arrays.fill(o, 1f);
            return o;
        });
    }

    static Tensor alloc(Backend b, long... shape) {
        return b.allocator().allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, shape);
    }

    /** y [rows, out] = lin(x [rows, in]). */
    static Node linear(GradTape t, Backend b, Linear lin, Node x, int rows) {
        return linear(t, b, lin, x, rows, MemoryCategory.ACTIVATIONS);
    }

    /** As {@link #linear(GradTape, Backend, Linear, Node, int)}, the output counted under {@code category}. */
    static Node linear(GradTape t, Backend b, Linear lin, Node x, int rows, MemoryCategory category) {
        int in = lin.in();
        int out = lin.out();
        Tensor xt = x.placed(b.allocator(), rows, in);
        Tensor yt = b.allocator().allocateUninitialized(category, DType.F32, rows, out);
        lin.forward(b, xt, yt);
        Node y = made(b, yt);
        if (t != null) {
            t.record(y, () -> {
                Tensor dy = y.gradPlaced(b.allocator(), rows, out);
                Tensor dx = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows, in);
                lin.backward(b, x.placed(b.allocator(), rows, in), dy, dx);
                sendGrad(b, x, dx);
            });
        }
        return y;
    }

    /**
     * y [rows, out] = x [rows, in] · wᵀ with a frozen f32 matrix w [out, in]: on {@code b} where x is in its device
     * memory ({@link Backend#matmulF32}, rows and weight f32), else here (b may be null).
     */
    static Node matmulT(GradTape t, Backend b, Node x, int rows, float[] w, int out, int in) {
        if (there(b, x)) {
            TensorAllocator a = b.allocator();
            Tensor wt = constant(b, w, new long[]{out, in});
            Tensor y = alloc(b, rows, out);
            b.matmulF32(x.placed(a, rows, in), wt, null, y);
            Node yn = Node.onDevice(a, y);
            if (t != null) {
                t.record(yn, () -> {
                    Tensor dx = alloc(b, rows, in);
                    b.matmulTransposedF32(yn.gradPlaced(a, rows, out), wt, null, dx);
                    x.accDevice(b, dx);
                });
            }
            return yn;
        }
        float[] xv = x.v();
        float[] y = new float[rows * out];
        forRows(rows, (long) out * in, r -> {
            for (int o = 0; o < out; o++) {
                float s = 0;
                for (int i = 0; i < in; i++) {
                    s += xv[r * in + i] * w[o * in + i];
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

    /**
     * RMSNorm over the last dim d of x [rows, d]; weight [d] or null (unweighted). Runs on {@code b} where x is in its
     * device memory ({@link Backend#rmsNorm}, {@link Backend#rmsNormBackward}), else here (b may be null).
     */
    static Node rmsNorm(GradTape t, Backend b, Node x, int d, float[] w, float eps) {
        int rows = x.size() / d;
        if (there(b, x)) {
            TensorAllocator a = b.allocator();
            Tensor wt = constant(b, w, d);
            Tensor y = alloc(b, rows, d);
            b.rmsNorm(x.placed(a, rows, d), wt, eps, y);
            Node yn = Node.onDevice(a, y);
            if (t != null) {
                t.record(yn, () -> {
                    Tensor dx = alloc(b, rows, d);
                    b.rmsNormBackward(x.placed(a, rows, d), wt, eps, yn.gradPlaced(a, rows, d), dx);
                    x.accDevice(b, dx);
                });
            }
            return yn;
        }
        float[] xv = x.v();
        float[] y = new float[x.size()];
        float[] inv = new float[rows];
        forRows(rows, d, r -> {
            double ss = 0;
            for (int i = 0; i < d; i++) {
                float v = xv[r * d + i];
                ss += v * v;
            }
            inv[r] = (float) (1.0 / Math.sqrt(ss / d + eps));
            for (int i = 0; i < d; i++) {
                y[r * d + i] = xv[r * d + i] * inv[r] * (w == null ? 1f : w[i]);
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
                        dot += dy[r * d + i] * (w == null ? 1f : w[i]) * xv[r * d + i];
                    }
                    float ir = inv[r];
                    float c = (float) (dot * ir * ir * ir / d);
                    for (int i = 0; i < d; i++) {
                        dx[r * d + i] += dy[r * d + i] * (w == null ? 1f : w[i]) * ir - xv[r * d + i] * c;
                    }
                });
            });
        }
        return yn;
    }

    /** a + b, same shapes: on {@code b} where both are in its device memory, else here (be may be null). */
    static Node add(GradTape t, Backend be, Node a, Node b) {
        if (there(be, a) && there(be, b)) {
            TensorAllocator al = be.allocator();
            Tensor y = alloc(be, a.size());
            be.add(a.placed(al, a.size()), b.placed(al, b.size()), y);
            Node yn = Node.onDevice(al, y);
            if (t != null) {
                t.record(yn, () -> {
                    Tensor dy = yn.gradPlaced(al, a.size());
                    a.accDevice(be, copy(be, dy));
                    b.accDevice(be, copy(be, dy));
                });
            }
            return yn;
        }
        float[] av = a.v();
        float[] bv = b.v();
        float[] y = new float[a.size()];
        int block = 1 << 14;
        forRows((y.length + block - 1) / block, block, r -> {
            for (int i = r * block, end = Math.min(y.length, i + block); i < end; i++) {
                y[i] = av[i] + bv[i];
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

    /** A fresh contiguous copy of {@code src} in {@code b}'s memory. */
    static Tensor copy(Backend b, Tensor src) {
        Tensor c = alloc(b, src.shape());
        b.copy(src, c);
        return c;
    }

    /**
     * Rows [start, start+count) of x [rows, width]: x itself where that is all of it, a copy on {@code b} where x is in
     * its device memory, else on the host (b may be null).
     */
    static Node rows(GradTape t, Backend b, Node x, int width, int start, int count) {
        if (start == 0 && (long) count * width == x.size()) {
            return x;
        }
        if (there(b, x)) {
            TensorAllocator a = b.allocator();
            int all = x.size() / width;
            Node yn = Node.onDevice(a, copy(b, x.placed(a, all, width).slice(0, start, start + count)));
            if (t != null) {
                t.record(yn, () -> {
                    Tensor dy = yn.gradPlaced(a, count, width);
                    Tensor dx = alloc(b, all, width);
                    a.zero(dx);
                    b.copy(dy, dx.slice(0, start, start + count));
                    x.accDevice(b, dx);
                });
            }
            return yn;
        }
        float[] xv = x.v();
        float[] y = new float[count * width];
        System.arraycopy(xv, start * width, y, 0, y.length);
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

    /**
     * The parts stacked along rows (all the same width); null parts are skipped. The one part itself where there is
     * one; on {@code b} where any part is in its device memory (host parts copied there), else on the host (b may be
     * null).
     */
    static Node concatRows(GradTape t, Backend b, int width, Node... parts) {
        int n = 0;
        int nonNull = 0;
        Node only = null;
        boolean device = false;
        for (Node p : parts) {
            if (p != null && p.size() > 0) {
                n += p.size();
                nonNull++;
                only = p;
                device |= there(b, p);
            }
        }
        if (nonNull == 1) {
            return only;
        }
        int total = n;
        if (device) {
            TensorAllocator a = b.allocator();
            Tensor y = alloc(b, total / width, width);
            int row = 0;
            for (Node p : parts) {
                if (p != null && p.size() > 0) {
                    int r = p.size() / width;
                    b.copy(p.placed(a, r, width), y.slice(0, row, row + r));
                    row += r;
                }
            }
            Node yn = Node.onDevice(a, y);
            if (t != null) {
                t.record(yn, () -> {
                    Tensor dy = yn.gradPlaced(a, total / width, width);
                    int o = 0;
                    for (Node p : parts) {
                        if (p != null && p.size() > 0) {
                            int r = p.size() / width;
                            p.accDevice(b, copy(b, dy.slice(0, o, o + r)));
                            o += r;
                        }
                    }
                });
            }
            return yn;
        }
        float[] y = new float[n];
        int off = 0;
        for (Node p : parts) {
            if (p != null) {
                System.arraycopy(p.v(), 0, y, off, p.size());
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
     * SwiGLU with DeepSeek V4's clamp: silu(min(g, limit)) · clamp(u, -limit, limit), g and u [rows, I]. On {@code b}
     * where both are in its device memory ({@link Backend#limitedSwiglu}), else here.
     */
    static Node swiglu(GradTape t, Backend b, Node g, Node u, float limit) {
        if (there(b, g) && there(b, u)) {
            TensorAllocator a = b.allocator();
            int n = g.size();
            Tensor y = alloc(b, n);
            b.limitedSwiglu(g.placed(a, n), u.placed(a, n), limit, y);
            Node yn = Node.onDevice(a, y);
            if (t != null) {
                t.record(yn, () -> {
                    Tensor dg = alloc(b, n);
                    Tensor du = alloc(b, n);
                    b.limitedSwigluBackward(g.placed(a, n), u.placed(a, n), yn.gradPlaced(a, n), limit, dg, du);
                    g.accDevice(b, dg);
                    u.accDevice(b, du);
                });
            }
            return yn;
        }
        float[] gv = g.v();
        float[] uv = u.v();
        float[] y = new float[g.size()];
        for (int i = 0; i < y.length; i++) {
            float gc = Math.min(gv[i], limit);
            float uc = Math.max(-limit, Math.min(limit, uv[i]));
            y[i] = gc / (1f + (float) Math.exp(-gc)) * uc;
        }
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dg = g.grad();
                float[] du = u.grad();
                for (int i = 0; i < dy.length; i++) {
                    float gc = Math.min(gv[i], limit);
                    float uc = Math.max(-limit, Math.min(limit, uv[i]));
                    float sg = 1f / (1f + (float) Math.exp(-gc));
                    float silu = gc * sg;
                    if (gv[i] < limit) {
                        dg[i] += dy[i] * uc * (sg * (1 + gc * (1 - sg)));
                    }
                    if (uv[i] > -limit && uv[i] < limit) {
                        du[i] += dy[i] * silu;
                    }
                }
            });
        }
        return yn;
    }

    /** Rows of x [rows, width] at the given indices (repeats allowed), on the host. */
    static Node gather(GradTape t, Node x, int width, int[] idx) {
        float[] xv = x.v();
        float[] y = new float[idx.length * width];
        for (int i = 0; i < idx.length; i++) {
            System.arraycopy(xv, idx[i] * width, y, i * width, width);
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
