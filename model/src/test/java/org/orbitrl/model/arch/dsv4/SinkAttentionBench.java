package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * DeepSeek V4's attention (one layer's {@link DeepseekV4SinkAttention#attend}, forward and backward through the tape) at
 * DeepSeek-V4-Flash's widths: 64 query heads of 512 over one shared key-and-value head, a causal window of 128 tokens,
 * and a compressed entry every 4 tokens of which each query sees up to 512 (the indexer's top-k; chosen at random
 * here). One sequence of T tokens a call: T + T/4 keys. The CUDA backend's default kernels ({@code Backend#sinkAttention}:
 * f32 cuBLAS products around a row kernel, the operands copied to the device and the results back, all timed) against
 * the host's loops in the same run (each query and head in turn, on one thread, reading only the keys it sees); and the
 * device's forward and backward alone on operands already there, against their dense products' FLOPs (7 products of
 * 2·T·64·S·512 a call). Then its lightning indexer's scores ({@code Backend#indexerScores}; 64 heads of 128 against
 * every closed entry) on the device against the host's loops in the same run. Both also on a backend in exact mode
 * (its batch-invariant kernels, {@code mqa_exact.cu}, for the forward and the scores; the host's loops were exact
 * mode's before them), against the default kernels of the same run.
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.SinkAttentionBench [hostTokens,...] [deviceTokens,...] [indexerHostTokens,...]</pre>
 */
public final class SinkAttentionBench {
    private static final int HEADS = 64;
    private static final int DIM = 512;
    private static final int WINDOW = 128;
    private static final int RATE = 4;
    private static final int TOPK = 512;
    private static final int INDEX_HEADS = 64;
    private static final int INDEX_DIM = 128;

    private SinkAttentionBench() {
    }

    public static void main(String[] args) {
        int[] hostTokens = args.length > 0 ? parse(args[0]) : new int[]{128, 256};
        int[] deviceTokens = args.length > 1 ? parse(args[1]) : new int[]{128, 256, 1024, 4096};
        int[] indexerHostTokens = args.length > 2 ? parse(args[2]) : new int[]{128, 256, 1024};
        if (!Cuda.available()) {
            System.out.println("SinkAttentionBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        System.out.printf("DeepSeek V4 attention, %d heads x %d over one shared head, window %d, an entry every %d tokens, "
                + "top-%d entries a query; forward + backward of one sequence%n", HEADS, DIM, WINDOW, RATE, TOPK);
        System.out.println("| tokens | keys | host ms | device ms (copies included) | host / device | the device's products alone, ms "
                + "| their TFLOP/s (dense f32) | exact mode's device ms (copies included) | exact / default | host / exact |");
        System.out.println("|---|---|---|---|---|---|---|---|---|---|");
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), false);
             CudaBackend exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true); Backend cpu = Backends.cpu()) {
            for (int t : deviceTokens) {
                double host = Arrays.stream(hostTokens).anyMatch(h -> h == t) ? time(cpu, t, 1) : Double.NaN;
                double dev = time(gpu, t, 5);
                double ops = timeOps(gpu, t, 5);
                double ex = time(exact, t, 5);
                int s = t + t / RATE;
                double flops = 7.0 * 2 * t * HEADS * (double) s * DIM;
                System.out.printf("| %d | %d | %s | %.2f | %s | %.2f | %.1f | %.2f | %.2fx | %s |%n", t, s,
                        Double.isNaN(host) ? "" : String.format("%.1f", host), dev,
                        Double.isNaN(host) ? "" : String.format("%.0fx", host / dev), ops, flops / (ops * 1e-3) / 1e12, ex,
                        ex / dev, Double.isNaN(host) ? "" : String.format("%.0fx", host / ex));
            }
            System.out.printf("%nA decode step's attention: one query over the %d keys it sees (its window and %d entries), the "
                    + "forward alone on operands on the device%n", WINDOW + TOPK, TOPK);
            double dd = timeDecode(gpu, WINDOW + TOPK, 20);
            double de = timeDecode(exact, WINDOW + TOPK, 20);
            System.out.printf("default kernels %.1f us, exact mode %.1f us (%.2fx)%n", dd * 1e3, de * 1e3, de / dd);
            System.out.printf("%nIts lightning indexer's scores: %d heads x %d, an entry every %d tokens; one sequence%n",
                    INDEX_HEADS, INDEX_DIM, RATE);
            System.out.println("| tokens | entries | host ms | device ms (copies included) | host / device | exact mode's device ms "
                    + "| exact / default | host / exact |");
            System.out.println("|---|---|---|---|---|---|---|---|");
            for (int t : deviceTokens) {
                double host = Arrays.stream(indexerHostTokens).anyMatch(h -> h == t) ? timeIndexer(cpu, t, 1) : Double.NaN;
                double dev = timeIndexer(gpu, t, 5);
                double ex = timeIndexer(exact, t, 5);
                System.out.printf("| %d | %d | %s | %.2f | %s | %.2f | %.2fx | %s |%n", t, t / RATE,
                        Double.isNaN(host) ? "" : String.format("%.1f", host), dev,
                        Double.isNaN(host) ? "" : String.format("%.0fx", host / dev), ex, ex / dev,
                        Double.isNaN(host) ? "" : String.format("%.0fx", host / ex));
            }
            double id = timeIndexerDecode(gpu, 1024, 20);
            double ie = timeIndexerDecode(exact, 1024, 20);
            System.out.printf("a decode step's scores (one query over 1024 entries, copies included): default kernels %.1f us, "
                    + "exact mode %.1f us (%.2fx)%n", id * 1e3, ie * 1e3, ie / id);
        }
    }

    /** Median ms of one sequence's indexer scores (after one warm-up call on the device). */
    private static double timeIndexer(Backend b, int t, int reps) {
        SplittableRandom r = new SplittableRandom(t);
        int m = t / RATE;
        float[] q = random(r, t * INDEX_HEADS * INDEX_DIM);
        float[] keys = random(r, m * INDEX_DIM);
        float[] w = random(r, t * INDEX_HEADS);
        int[] closed = new int[t];
        for (int i = 0; i < t; i++) {
            closed[i] = (i + 1) / RATE;
        }
        DeepseekV4Indexer indexer = new DeepseekV4Indexer(null, null, null, INDEX_HEADS, INDEX_DIM, TOPK);
        float scale = (float) (1 / Math.sqrt(INDEX_DIM));
        boolean device = !b.allocator().hostMemory();
        double[] ms = new double[reps];
        for (int rep = device ? -1 : 0; rep < reps; rep++) {
            long t0 = System.nanoTime();
            float[] s = indexer.scores(b, new Node(q), 0, t, new Node(keys), m, new Node(w), 1f, closed, scale).read(b.allocator());
            if (s.length != t * m) {
                throw new IllegalStateException("scores of " + s.length + " values, expected " + t * m);
            }
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    /** Median ms of one query's indexer scores over m entries it has all closed (after one warm-up call). */
    private static double timeIndexerDecode(Backend b, int m, int reps) {
        SplittableRandom r = new SplittableRandom(m);
        float[] q = random(r, INDEX_HEADS * INDEX_DIM);
        float[] keys = random(r, m * INDEX_DIM);
        float[] w = random(r, INDEX_HEADS);
        DeepseekV4Indexer indexer = new DeepseekV4Indexer(null, null, null, INDEX_HEADS, INDEX_DIM, TOPK);
        float scale = (float) (1 / Math.sqrt(INDEX_DIM));
        double[] ms = new double[reps];
        for (int rep = -1; rep < reps; rep++) {
            long t0 = System.nanoTime();
            indexer.scores(b, new Node(q), 0, 1, new Node(keys), m, new Node(w), 1f, new int[]{m}, scale).read(b.allocator());
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    private static int[] parse(String list) {
        return Arrays.stream(list.split(",")).mapToInt(Integer::parseInt).toArray();
    }

    /** Median ms of forward + backward over {@code reps} calls (after one warm-up call on the device). */
    private static double time(Backend b, int t, int reps) {
        SplittableRandom r = new SplittableRandom(t);
        int entries = t / RATE;
        int s = t + entries;
        float[] q = random(r, t * HEADS * DIM);
        float[] kv = random(r, s * DIM);
        float[] sinks = random(r, HEADS);
        float[] dy = random(r, t * HEADS * DIM);
        float[] mask = new float[t * s];
        Arrays.fill(mask, Float.NEGATIVE_INFINITY);
        for (int i = 0; i < t; i++) {
            for (int j = Math.max(0, i - WINDOW + 1); j <= i; j++) {
                mask[i * s + j] = 0f;
            }
            int visible = (i + 1) / RATE;   // entries whose tokens are all at or before i
            for (int e = 0; e < visible; e++) {
                if (visible <= TOPK || r.nextInt(visible) < TOPK) {
                    mask[i * s + t + e] = 0f;
                }
            }
        }
        float scale = (float) (1 / Math.sqrt(DIM));
        boolean device = !b.allocator().hostMemory();
        double[] ms = new double[reps];
        for (int rep = device ? -1 : 0; rep < reps; rep++) {
            long t0 = System.nanoTime();
            GradTape tape = new GradTape();
            Node qn = new Node(q);
            Node kvn = new Node(kv);
            Node y = DeepseekV4SinkAttention.attend(tape, b, qn, kvn, mask, sinks, HEADS, DIM, scale);
            System.arraycopy(dy, 0, y.grad(), 0, dy.length);
            tape.backward();
            if (qn.gradOrNull() == null || kvn.gradOrNull() == null) {
                throw new IllegalStateException("no gradient reached q or kv");
            }
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    /** Median ms of the device's forward and backward alone on operands already there (one warm-up call). */
    private static double timeOps(CudaBackend gpu, int t, int reps) {
        SplittableRandom r = new SplittableRandom(t);
        int s = t + t / RATE;
        var a = gpu.allocator();
        Tensor q = Ops.device(a, random(r, t * HEADS * DIM), t, HEADS, DIM);
        Tensor kv = Ops.device(a, random(r, s * DIM), s, DIM);
        Tensor sinks = Ops.device(a, random(r, HEADS), HEADS);
        Tensor dy = Ops.device(a, random(r, t * HEADS * DIM), t, HEADS, DIM);
        float[] m = new float[t * s];
        for (int i = 0; i < t; i++) {
            for (int j = i + 1; j < s; j++) {
                m[i * s + j] = j < t ? Float.NEGATIVE_INFINITY : 0f;
            }
        }
        Tensor mask = Ops.device(a, m, t, s);
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, HEADS, DIM);
        Tensor dq = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, HEADS, DIM);
        Tensor dkv = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, s, DIM);
        float scale = (float) (1 / Math.sqrt(DIM));
        double[] ms = new double[reps];
        for (int rep = -1; rep < reps; rep++) {
            gpu.synchronize();
            long t0 = System.nanoTime();
            gpu.sinkAttention(q, kv, mask, sinks, scale, out);
            gpu.sinkAttentionBackward(q, kv, mask, sinks, scale, dy, dq, dkv);
            gpu.synchronize();
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
        }
        for (Tensor x : new Tensor[]{q, kv, sinks, dy, mask, out, dq, dkv}) {
            a.release(x);
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    /** Median ms of one query's forward over {@code keys} keys it all sees, operands on the device (one warm-up call). */
    private static double timeDecode(CudaBackend gpu, int keys, int reps) {
        SplittableRandom r = new SplittableRandom(keys);
        var a = gpu.allocator();
        Tensor q = Ops.device(a, random(r, HEADS * DIM), 1, HEADS, DIM);
        Tensor kv = Ops.device(a, random(r, keys * DIM), keys, DIM);
        Tensor sinks = Ops.device(a, random(r, HEADS), HEADS);
        Tensor mask = Ops.device(a, new float[keys], 1, keys);
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1, HEADS, DIM);
        float scale = (float) (1 / Math.sqrt(DIM));
        double[] ms = new double[reps];
        for (int rep = -1; rep < reps; rep++) {
            gpu.synchronize();
            long t0 = System.nanoTime();
            gpu.sinkAttention(q, kv, mask, sinks, scale, out);
            gpu.synchronize();
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
        }
        for (Tensor x : new Tensor[]{q, kv, sinks, mask, out}) {
            a.release(x);
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    private static float[] random(SplittableRandom r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return v;
    }
}
