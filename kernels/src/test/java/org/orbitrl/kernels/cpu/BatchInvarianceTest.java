package org.orbitrl.kernels.cpu;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;
import java.util.function.BiConsumer;
import java.util.function.Consumer;

import static org.orbitrl.kernels.cpu.TestData.assertBitwise;
import static org.orbitrl.kernels.cpu.TestData.random;
import static org.orbitrl.kernels.cpu.TestData.randomF32;

/**
 * Exact mode, proven bit for bit: a row's result from {@link CpuBackend} does not depend on how
 * many rows are computed with it, on its position in the batch, on the number of threads, or
 * (attention) on whether its query runs in a prefill, a chunked prefill or one decode step at a
 * time. Each op is run on all rows at once, then on every row alone, then on the rows in a
 * shuffled order, in batches of other sizes, on a one-thread backend, and compared bitwise.
 */
class BatchInvarianceTest {
    private static CpuBackend threaded;
    private static CpuBackend single;

    @BeforeAll
    static void start() {
        threaded = new CpuBackend(3);
        single = new CpuBackend(1);
    }

    @AfterAll
    static void stop() {
        threaded.close();
        single.close();
    }

    /** Rows {@code order[i]} of x [M, K] into a new [order.length, K] tensor. */
    private static Tensor gather(Tensor x, int[] order) {
        int k = x.size(1);
        Tensor out = Tensor.allocate(Arena.ofAuto(), x.dtype(), order.length, k);
        for (int i = 0; i < order.length; i++) {
            out.select(0, i).copyFrom(x.select(0, order[i]));
        }
        return out;
    }

    private static int[] shuffled(SplittableRandom rnd, int m) {
        int[] p = new int[m];
        for (int i = 0; i < m; i++) {
            p[i] = i;
        }
        for (int i = m - 1; i > 0; i--) {
            int j = rnd.nextInt(i + 1);
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }

    /**
     * Runs {@code op(x, y)} with y of {@code width} columns for all of x, then every other way of
     * batching x's rows, and checks each row of y bitwise against the all-rows result.
     */
    private static void checkRows(String what, SplittableRandom rnd, Tensor x, int width,
                                  BiConsumer<CpuBackend, Tensor[]> op) {
        int m = x.size(0);
        Tensor all = Tensor.allocate(Arena.ofAuto(), DType.F32, m, width);
        op.accept(threaded, new Tensor[]{x, all});
        float[][] expected = new float[m][];
        for (int i = 0; i < m; i++) {
            expected[i] = all.select(0, i).toFloatArray();
        }
        Consumer<int[]> batch = order -> {
            for (CpuBackend b : new CpuBackend[]{threaded, single}) {
                Tensor y = Tensor.allocate(Arena.ofAuto(), DType.F32, order.length, width);
                op.accept(b, new Tensor[]{gather(x, order), y});
                for (int i = 0; i < order.length; i++) {
                    assertBitwise(what + ": row " + order[i] + " at position " + i + " of a batch of " + order.length
                            + " on " + b.threads() + " thread(s)", expected[order[i]], y.select(0, i).toFloatArray());
                }
            }
        };
        for (int i = 0; i < m; i++) {
            batch.accept(new int[]{i});
        }
        int[] perm = shuffled(rnd, m);
        batch.accept(perm);
        for (int from = 0; from < m; from += 5) {
            batch.accept(java.util.Arrays.copyOfRange(perm, from, Math.min(m, from + 5)));
        }
    }

    @Test
    void matmulRowsAreBatchInvariant() {
        SplittableRandom rnd = new SplittableRandom(21);
        for (DType wt : new DType[]{DType.F32, DType.BF16}) {
            for (int k : new int[]{33, 130, 263}) {
                int n = 37;
                Tensor w = random(rnd, wt, 1f, n, k);
                // 70 rows: several 64-row prefill tiles and 4-row register blocks with a tail
                Tensor x = randomF32(rnd, 70, k);
                checkRows("matmul " + wt + " K=" + k, rnd, x, n, (b, t) -> b.matmul(t[0], w, t[1]));
            }
        }
    }

    @Test
    void matmulTransposedRowsAreBatchInvariant() {
        SplittableRandom rnd = new SplittableRandom(25);
        for (DType wt : new DType[]{DType.F32, DType.BF16}) {
            int n = 41;
            int k = 2 * 64 + 37; // whole 4-vector blocks, single vectors and a scalar tail at any width
            Tensor w = random(rnd, wt, 1f, n, k);
            Tensor dy = randomF32(rnd, 70, n);
            checkRows("matmulTransposed " + wt, rnd, dy, k, (b, t) -> b.matmulTransposed(t[0], w, t[1]));
        }
        for (var format : org.orbitrl.kernels.quant.QuantFormats.all()) {
            QuantizedTensor q = format.quantize(randomF32(rnd, 30, 96));
            checkRows("matmulQuantizedTransposed " + format.name(), rnd, randomF32(rnd, 37, 30), 96,
                    (b, t) -> b.matmulQuantizedTransposed(t[0], q, t[1]));
        }
    }

    @Test
    void matmulQuantizedRowsAreBatchInvariant() {
        SplittableRandom rnd = new SplittableRandom(22);
        int k = 160;
        int n = 45;
        for (var format : org.orbitrl.kernels.quant.QuantFormats.all()) {
            QuantizedTensor w = format.quantize(randomF32(rnd, n, k));
            Tensor x = randomF32(rnd, 23, k);
            checkRows("matmulQuantized " + format.name(), rnd, x, n, (b, t) -> b.matmulQuantized(t[0], w, t[1]));
        }
    }

    @Test
    void normAndSoftmaxRowsAreBatchInvariant() {
        SplittableRandom rnd = new SplittableRandom(23);
        for (int h : new int[]{7, 130, 4099}) {
            Tensor x = random(rnd, DType.F32, 6f, 19, h);
            Tensor g = random(rnd, DType.BF16, 1f, h);
            checkRows("rmsNorm H=" + h, rnd, x, h, (b, t) -> b.rmsNorm(t[0], g, 1e-5f, t[1]));
            checkRows("softmax H=" + h, rnd, x, h, (b, t) -> {
                t[1].copyFrom(t[0]);
                b.softmax(t[1]);
            });
            checkRows("logSoftmax H=" + h, rnd, x, h, (b, t) -> {
                t[1].copyFrom(t[0]);
                b.logSoftmax(t[1]);
            });
        }
    }

    @Test
    void attentionIsTheSameInPrefillChunkedPrefillAndDecode() {
        SplittableRandom rnd = new SplittableRandom(24);
        int s = 37;
        int hq = 6;
        int hkv = 2;
        int d = 33;
        int dv = 20;
        for (int window : new int[]{0, 8}) {
            for (boolean withSinks : new boolean[]{false, true}) {
                Tensor q = randomF32(rnd, s, hq, d);
                Tensor k = randomF32(rnd, s, hkv, d);
                Tensor v = randomF32(rnd, s, hkv, dv);
                AttentionSpec spec = new AttentionSpec(0.17f, window, withSinks ? randomF32(rnd, hq) : null);
                String what = "attention window=" + window + " sinks=" + withSinks;

                Tensor prefill = Tensor.allocate(Arena.ofAuto(), DType.F32, s, hq, dv);
                threaded.attention(q, k, v, prefill, 0, spec);

                // decode: one query at a time against exactly the keys written so far
                for (int p = 0; p < s; p++) {
                    Tensor one = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, hq, dv);
                    single.attention(q.slice(0, p, p + 1), k.slice(0, 0, p + 1), v.slice(0, 0, p + 1), one, p, spec);
                    assertBitwise(what + ": decode step at position " + p, prefill.select(0, p).toFloatArray(),
                            one.select(0, 0).toFloatArray());
                }

                // chunked prefill: positions [0, 11) then [11, s)
                Tensor second = Tensor.allocate(Arena.ofAuto(), DType.F32, s - 11, hq, dv);
                threaded.attention(q.slice(0, 11, s), k, v, second, 11, spec);
                assertBitwise(what + ": second prefill chunk", prefill.slice(0, 11, s).contiguous().toFloatArray(),
                        second.toFloatArray());
            }
        }
    }
}
