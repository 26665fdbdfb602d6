package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.Mxfp4;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.arch.DenseMlp;
import org.orbitrl.model.arch.GroupedExperts;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * DeepSeek V4's MoE block ({@link DeepseekV4Moe}: the host's routing, the routed experts, the shared expert) at
 * DeepSeek-V4-Flash's widths (hidden 4096, 256 routed experts of intermediate 2048 in MXFP4 as shipped, top-6, the
 * SwiGLU limit 10, one shared expert), forward and backward through the tape of one sequence of T tokens on the CUDA
 * backend's default kernels, no adapter: the routed experts grouped in device memory (the default; with the experts
 * dequantized C at a time, and through the fused kernels, C = 0) against each active expert on its own rows, its rows
 * copied to the device and back per projection (the block before the grouped form), in the same run. The routed
 * experts' rate is their products' FLOPs (three products forward, three activation-gradient products backward, 2·T·k·4096·2048
 * each) over the block's time; the outputs and input gradients of the two forms are compared. The grouped routed
 * experts alone ({@link GroupedExperts} forward and backward on operands already on the device, the same choice) show
 * what of the block is the device's products and what the host's routing, copies and shared expert.
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.MoeBlockBench [tokens,...] [perExpertTokens,...] [chunk]</pre>
 */
public final class MoeBlockBench {
    private static final int HIDDEN = 4096;
    private static final int INTER = 2048;
    private static final int EXPERTS = 256;
    private static final int TOPK = 6;
    private static final float LIMIT = 10f;

    private MoeBlockBench() {
    }

    public static void main(String[] args) {
        int[] tokens = args.length > 0 ? parse(args[0]) : new int[]{512, 2048, 8192};
        int[] perExpertTokens = args.length > 1 ? parse(args[1]) : new int[]{512, 2048};
        int chunk = args.length > 2 ? Integer.parseInt(args[2]) : 16;
        if (!Cuda.available()) {
            System.out.println("MoeBlockBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), false)) {
            long t0 = System.nanoTime();
            DeepseekV4Moe moe = block(gpu.allocator(), 7);
            System.out.printf("DeepSeek V4 MoE block, hidden %d, %d experts x %d (MXFP4), top-%d, limit %.0f, one shared "
                    + "expert; forward + backward of one sequence, no adapter (weights made in %.1f s)%n", HIDDEN, EXPERTS,
                    INTER, TOPK, LIMIT, (System.nanoTime() - t0) / 1e9);
            System.out.printf("| tokens | per expert, ms | grouped C=%d, ms (its forward alone) | grouped fused, ms | per expert / grouped | "
                    + "routed experts' TFLOP/s (grouped) | grouped experts alone C=%d / fused, ms (TFLOP/s) "
                    + "| max rel. Δ output, dx |%n", chunk, chunk);
            System.out.println("|---|---|---|---|---|---|---|---|");
            for (int t : tokens) {
                SplittableRandom r = new SplittableRandom(t);
                float[] x = random(r, t * HIDDEN, 1f);
                float[] dy = random(r, t * HIDDEN, 1f);
                int[] ids = new int[t];
                boolean per = Arrays.stream(perExpertTokens).anyMatch(p -> p == t);
                float[][] ref = null;
                double perMs = Double.NaN;
                if (per) {
                    moe.setGrouped(false);
                    ref = new float[2][];
                    perMs = time(gpu, moe, x, dy, ids, 3, ref);
                }
                moe.setGrouped(true);
                moe.setExpertChunk(chunk);
                float[][] got = new float[2][];
                double groupedMs = time(gpu, moe, x, dy, ids, 5, got);
                double forwardMs = timeForward(gpu, moe, x, ids, 5);
                moe.setExpertChunk(0);
                double fusedMs = time(gpu, moe, x, dy, ids, 5, null);
                double flops = 6.0 * 2 * t * TOPK * (double) HIDDEN * INTER;
                double best = Math.min(groupedMs, fusedMs);
                double aloneChunk = timeExperts(gpu, moe, x, dy, t, chunk, 5);
                double aloneFused = timeExperts(gpu, moe, x, dy, t, 0, 5);
                System.out.printf("| %d | %s | %.2f (%.2f) | %.2f | %s | %.1f | %.2f / %.2f (%.1f) | %s |%n", t,
                        per ? String.format("%.1f", perMs) : "", groupedMs, forwardMs, fusedMs,
                        per ? String.format("%.1fx", perMs / best) : "", flops / (best * 1e-3) / 1e12, aloneChunk, aloneFused,
                        flops / (Math.min(aloneChunk, aloneFused) * 1e-3) / 1e12,
                        per ? String.format("%.1e, %.1e", relDiff(ref[0], got[0]), relDiff(ref[1], got[1])) : "");
            }
        }
    }

    /** Median ms of forward + backward over {@code reps} calls after one warm-up; the first call's y and dx into out. */
    private static double time(CudaBackend b, DeepseekV4Moe moe, float[] x, float[] dy, int[] ids, int reps, float[][] out) {
        double[] ms = new double[reps];
        for (int rep = -1; rep < reps; rep++) {
            long t0 = System.nanoTime();
            GradTape tape = new GradTape();
            Node xn = new Node(x);
            Node y = moe.forward(tape, b, xn, ids, false);
            System.arraycopy(dy, 0, y.grad(), 0, dy.length);
            tape.backward();
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
            if (rep == -1 && out != null) {
                out[0] = y.v();
                out[1] = xn.grad();
            }
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    /**
     * Median ms of the grouped routed experts alone, forward and backward, on device operands (x, dout, a seeded choice of
     * k distinct experts a token and weights), each call ended by a synchronisation.
     */
    private static double timeExperts(CudaBackend b, DeepseekV4Moe moe, float[] x, float[] dy, int t, int chunk, int reps) {
        GroupedExperts g = GroupedExperts.of(moe.experts, LIMIT);
        TensorAllocator a = b.allocator();
        SplittableRandom r = new SplittableRandom(t + 1);
        int[] idx = new int[t * TOPK];
        float[] w = new float[t * TOPK];
        for (int i = 0; i < t; i++) {
            boolean[] taken = new boolean[EXPERTS];
            for (int j = 0; j < TOPK; j++) {
                int e;
                do {
                    e = r.nextInt(EXPERTS);
                } while (taken[e]);
                taken[e] = true;
                idx[i * TOPK + j] = e;
                w[i * TOPK + j] = 0.4f;
            }
        }
        Tensor xt = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(x, t, HIDDEN));
        Tensor dyt = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(dy, t, HIDDEN));
        Tensor ids = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(idx, t, TOPK));
        Tensor wt = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(w, t, TOPK));
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, org.orbitrl.kernels.DType.F32, t, HIDDEN);
        Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, org.orbitrl.kernels.DType.F32, t, HIDDEN);
        Tensor dw = a.allocate(MemoryCategory.ACTIVATIONS, org.orbitrl.kernels.DType.F32, t, TOPK);
        double[] ms = new double[reps];
        for (int rep = -1; rep < reps; rep++) {
            b.synchronize();
            long t0 = System.nanoTime();
            GroupedExperts.Tape tape = new GroupedExperts.Tape();
            g.forward(b, xt, ids, wt, out, tape, chunk, false);
            g.backward(b, tape, wt, dyt, dx, dw, chunk, false);
            b.synchronize();
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
            tape.release(a);
        }
        for (Tensor u : new Tensor[]{xt, dyt, ids, wt, out, dx, dw}) {
            a.release(u);
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    /** Median ms of a forward without a tape (an inference forward) over {@code reps} calls after one warm-up. */
    private static double timeForward(CudaBackend b, DeepseekV4Moe moe, float[] x, int[] ids, int reps) {
        double[] ms = new double[reps];
        for (int rep = -1; rep < reps; rep++) {
            long t0 = System.nanoTime();
            Node y = moe.forward(null, b, new Node(x), ids, true);
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
            if (y.v().length != x.length) {
                throw new IllegalStateException("output of " + y.v().length + " values");
            }
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    /** ‖a − b‖ / ‖a‖. */
    private static double relDiff(float[] a, float[] b) {
        double d = 0;
        double n = 0;
        for (int i = 0; i < a.length; i++) {
            d += (a[i] - b[i]) * (double) (a[i] - b[i]);
            n += a[i] * (double) a[i];
        }
        return Math.sqrt(d / n);
    }

    /** The block with seeded weights in {@code a}'s memory: router and shared expert f32, routed experts MXFP4. */
    static DeepseekV4Moe block(TensorAllocator a, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        Linear router = dense(a, r, "gate", EXPERTS, HIDDEN);
        float[] bias = random(r, EXPERTS, 0.01f);
        DenseMlp[] experts = new DenseMlp[EXPERTS];
        for (int e = 0; e < EXPERTS; e++) {
            experts[e] = new DenseMlp(mxfp4(a, r, "w1", INTER, HIDDEN), mxfp4(a, r, "w3", INTER, HIDDEN),
                    mxfp4(a, r, "w2", HIDDEN, INTER));
        }
        DenseMlp shared = new DenseMlp(dense(a, r, "s1", INTER, HIDDEN), dense(a, r, "s3", INTER, HIDDEN),
                dense(a, r, "s2", HIDDEN, INTER));
        return new DeepseekV4Moe(router, bias, null, experts, shared, TOPK, 2.5f, LIMIT, false);
    }

    private static Linear dense(TensorAllocator a, SplittableRandom r, String name, int out, int in) {
        float std = (float) (1 / Math.sqrt(in));
        return new Linear(name, Weight.of(a.upload(MemoryCategory.BASE_WEIGHTS, Tensor.of(random(r, out * in, std), out, in))),
                null);
    }

    /** Random E2M1 codes and one E8M0 scale of 2^-7 a block (weights of standard deviation about 0.02). */
    private static Linear mxfp4(TensorAllocator a, SplittableRandom r, String name, int out, int in) {
        Tensor codes = Tensor.allocate(Arena.ofAuto(), org.orbitrl.kernels.DType.U8, out, in / 32, 16);
        long bytes = codes.byteSize();
        for (long i = 0; i < bytes; i += 8) {
            codes.segment().set(ValueLayout.JAVA_LONG_UNALIGNED, i, r.nextLong());
        }
        Tensor scales = Tensor.allocate(Arena.ofAuto(), org.orbitrl.kernels.DType.U8, out, in / 32);
        scales.segment().fill((byte) (127 - 7));
        QuantizedTensor q = Mxfp4.fromBlocks(a.upload(MemoryCategory.BASE_WEIGHTS, codes),
                a.upload(MemoryCategory.BASE_WEIGHTS, scales));
        return new Linear(name, Weight.of(q), null);
    }

    private static float[] random(SplittableRandom r, int n, float std) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) ((r.nextDouble() * 2 - 1) * std * Math.sqrt(3));
        }
        return v;
    }

    private static int[] parse(String list) {
        return Arrays.stream(list.split(",")).mapToInt(Integer::parseInt).toArray();
    }
}
