package org.orbitrl.model.arch;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.spec.ConfigLoader;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * One DeepSeek-V3 / Kimi-K2 MoE layer on the GPU, its routed experts grouped on the device against per expert with the
 * routing on the host: the shape of a {@code config.json} (Kimi-K2.6: 384 routed experts of hidden 7168 and width 2048,
 * top 8 of one group, one shared expert of width 2048), routed experts INT4 g32 (random codes and scales, experts placed
 * back to back as the loaders place them), the shared expert and the router bf16, a random score-correction bias. Per
 * path: a training step's forward with its tape and backward (the activation gradient through the frozen experts and the
 * routing weights into the input, no weight gradient) over TOKENS tokens, the same forward for inference, and decode
 * batches' forwards (1 and 32 tokens); each the median of 3 runs after one untimed. The expert products' FLOPs (gate, up and down,
 * forward and their input gradients) over the time, against a bf16 product of the expert's shape through the backend's
 * own matmul (cuBLAS) measured in the same run.
 * Usage: {@code DeepseekMoeBench OUT_DIR CONFIG_JSON [TOKENS [CHUNK]]} (4096 tokens and chunks of 8 experts by default);
 * prints a table and writes {@code deepseek-moe.md}.
 */
public final class DeepseekMoeBench {
    private static final int[] DECODE = {1, 32};
    private static final int ROUNDS = 3;
    private static final int PROTOTYPE = 8;   // experts of random codes, repeated on the device to the model's count

    private final StringBuilder table = new StringBuilder("| benchmark | figure | against | ratio |\n|---|---|---|---|\n");

    private DeepseekMoeBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("DeepseekMoeBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        if (args.length < 2) {
            throw new IllegalArgumentException("usage: DeepseekMoeBench OUT_DIR CONFIG_JSON [TOKENS [CHUNK]]");
        }
        Path out = Path.of(args[0]);
        Path config = Path.of(args[1]);
        int tokens = args.length > 2 ? Integer.parseInt(args[2]) : 4096;
        int chunk = args.length > 3 ? Integer.parseInt(args[3]) : 8;
        DeepseekV3Config c = DeepseekV3Config.from(ConfigLoader.load(config));
        DeepseekMoeBench bench = new DeepseekMoeBench();
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device());
            bench.run(gpu, c, tokens, chunk);
            String doc = "## One " + c.modelType() + " MoE layer (" + config + "), grouped against per expert, on " + gpu.device()
                    + "\n\nDate: " + Instant.now() + "; " + tokens + " tokens, expert chunk " + chunk + ".\n\n" + bench.table;
            Files.createDirectories(out);
            Files.writeString(out.resolve("deepseek-moe.md"), doc, StandardCharsets.UTF_8);
            System.out.println(doc);
        }
    }

    private void run(CudaBackend gpu, DeepseekV3Config c, int tokens, int chunk) {
        TensorAllocator a = gpu.allocator();
        SplittableRandom r = new SplittableRandom(41);
        int e = c.experts();
        int h = c.hidden();
        int inter = c.moeIntermediate();
        ExpertWeights gate = ExpertWeights.ofStack(int4Stack(gpu, r, e, inter, h), inter);
        ExpertWeights up = ExpertWeights.ofStack(int4Stack(gpu, r, e, inter, h), inter);
        ExpertWeights down = ExpertWeights.ofStack(int4Stack(gpu, r, e, h, inter), h);
        DenseMlp[] experts = new DenseMlp[e];
        for (int i = 0; i < e; i++) {
            experts[i] = new DenseMlp(new Linear("experts." + i + ".gate_proj", Weight.of(gate.quantized(i)), null),
                    new Linear("experts." + i + ".up_proj", Weight.of(up.quantized(i)), null),
                    new Linear("experts." + i + ".down_proj", Weight.of(down.quantized(i)), null));
        }
        DenseMlp shared = c.sharedInter() <= 0 ? null : new DenseMlp(
                new Linear("shared.gate_proj", Weight.of(bf16(gpu, r, c.sharedInter(), h)), null),
                new Linear("shared.up_proj", Weight.of(bf16(gpu, r, c.sharedInter(), h)), null),
                new Linear("shared.down_proj", Weight.of(bf16(gpu, r, h, c.sharedInter())), null));
        Linear router = new Linear("gate", Weight.of(bf16(gpu, r, e, h)), null);
        Tensor bias = gpu.toDevice(random(r, 0.01f, e), MemoryCategory.BASE_WEIGHTS);
        DeepseekV3Moe moe = new DeepseekV3Moe(router, bias, experts, shared, new ExpertRouter.SigmoidGroups(router, bias, c.topK(),
                c.nGroup(), c.topkGroup(), c.normTopK(), c.routedScaling()));
        moe.useChunker(new ExpertChunker(chunk));

        double dense = denseTflops(gpu, r, tokens, inter, h);
        row("dense bf16 product [" + tokens + ", " + h + "] x [" + inter + ", " + h + "]^T (cuBLAS)",
                String.format("%.0f TFLOP/s", dense), "", Double.NaN);
        Tensor x = gpu.toDevice(random(r, 1f, tokens, h), MemoryCategory.ACTIVATIONS);
        Tensor dout = gpu.toDevice(random(r, 1e-3f, tokens, h), MemoryCategory.ACTIVATIONS);
        Tensor y = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, tokens, h);
        Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, tokens, h);
        double pairFlops = 2.0 * 3 * h * inter;   // one routed pair's gate, up and down
        double[][] ms = new double[2][2 + DECODE.length];
        for (int path = 0; path < 2; path++) {
            boolean grouped = path == 0;
            moe.setGrouped(grouped);
            String name = grouped ? "grouped" : "per expert";
            ms[path][0] = median(gpu, () -> {
                DeepseekV3Moe.Tape t = new DeepseekV3Moe.Tape();
                moe.forward(gpu, x, y, t, true);
                moe.backward(gpu, t, dout, dx);
                t.release(a);
            });
            ms[path][1] = median(gpu, () -> moe.forward(gpu, x, y, null, false));
            for (int d = 0; d < DECODE.length; d++) {
                Tensor xd = gpu.toDevice(random(r, 1f, DECODE[d], h), MemoryCategory.ACTIVATIONS);
                Tensor yd = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, DECODE[d], h);
                ms[path][2 + d] = median(gpu, () -> moe.forward(gpu, xd, yd, null, false));
                gpu.free(xd);
                gpu.free(yd);
            }
            double trainFlops = 2 * pairFlops * tokens * c.topK();
            row(name + ": training forward + backward, " + tokens + " tokens (" + ms(ms[path][0]) + ")",
                    String.format("%.1f TFLOP/s", trainFlops / (ms[path][0] * 1e9)), String.format("dense %.0f TFLOP/s", dense),
                    trainFlops / (ms[path][0] * 1e9) / dense);
            double fwdFlops = pairFlops * tokens * c.topK();
            row(name + ": inference forward, " + tokens + " tokens (" + ms(ms[path][1]) + ")",
                    String.format("%.1f TFLOP/s", fwdFlops / (ms[path][1] * 1e9)), String.format("dense %.0f TFLOP/s", dense),
                    fwdFlops / (ms[path][1] * 1e9) / dense);
            for (int d = 0; d < DECODE.length; d++) {
                row(name + ": decode forward, " + DECODE[d] + " tokens", ms(ms[path][2 + d]), "", Double.NaN);
            }
        }
        String[] what = new String[2 + DECODE.length];
        what[0] = "training forward + backward";
        what[1] = "inference forward";
        for (int d = 0; d < DECODE.length; d++) {
            what[2 + d] = "decode forward (" + DECODE[d] + " tokens)";
        }
        for (int i = 0; i < what.length; i++) {
            row("grouped against per expert: " + what[i], ms(ms[0][i]), ms(ms[1][i]) + " per expert", ms[1][i] / ms[0][i]);
        }
        moe.setGrouped(true);
        // the grouped training step with other tiles of the batched expert products (0: cuBLAS's grouped call)
        for (String tile : new String[]{"128", "64", "0"}) {
            System.setProperty("orbit.cuda.expertTile", tile);
            double t = median(gpu, () -> {
                DeepseekV3Moe.Tape tp = new DeepseekV3Moe.Tape();
                moe.forward(gpu, x, y, tp, true);
                moe.backward(gpu, tp, dout, dx);
                tp.release(a);
            });
            row("grouped training forward + backward, expert tiles of " + tile + " rows (-Dorbit.cuda.expertTile)", ms(t),
                    ms(ms[0][0]) + " at 256 rows", ms[0][0] / t);
        }
        System.clearProperty("orbit.cuda.expertTile");
        // decode: the bytes the layer must read (the chosen experts', the shared expert's, the router's) against the copy
        double copy = copyBandwidth(gpu);
        row("copy d2d 2 GiB (read + write)", String.format("%.0f GB/s", copy), "4800 GB/s datasheet", copy / 4800);
        long perExpert = gate.quantized(0).byteSize() + up.quantized(0).byteSize() + down.quantized(0).byteSize();
        long fixed = router.weight().byteSize() + (shared == null ? 0
                : shared.gate.weight().byteSize() + shared.up.weight().byteSize() + shared.down.weight().byteSize());
        for (int d = 0; d < DECODE.length; d++) {
            Tensor xd = gpu.toDevice(random(r, 1f, DECODE[d], h), MemoryCategory.ACTIVATIONS);
            Tensor yd = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, DECODE[d], h);
            long distinct = Arrays.stream(moe.route(gpu, xd).expert()).distinct().count();
            long bytes = distinct * perExpert + fixed;
            for (boolean pairs : new boolean[]{true, false}) {
                gpu.moePairs(pairs);
                double t = median(gpu, () -> moe.forward(gpu, xd, yd, null, false));
                row(String.format("grouped decode forward, %d tokens (%d experts, %.2f GB), %s (%.3f ms)", DECODE[d], distinct,
                        bytes / 1e9, pairs ? "per-pair products" : "grouped products (-Dorbit.cuda.moePairs=off)", t),
                        String.format("%.0f GB/s", bytes / (t * 1e6)), String.format("copy %.0f GB/s", copy), bytes / (t * 1e6) / copy);
            }
            gpu.moePairs(true);
            // where the decode layer goes: every backend call waited for (device time plus its launch), 10 runs
            OpProfiler prof = OpProfiler.wrap(gpu, gpu::synchronize);
            moe.forward(prof.backend(), xd, yd, null, false);   // the profiler's own first calls, not counted
            prof.reset();
            for (int i = 0; i < 10; i++) {
                moe.forward(prof.backend(), xd, yd, null, false);
            }
            System.out.println("decode forward, " + DECODE[d] + " tokens, backend calls over 10 runs:\n" + prof.report(12));
            gpu.free(xd);
            gpu.free(yd);
        }
    }

    /** Device-to-device copy bandwidth in GB/s (bytes read + written) over 2 GiB through the backend's copy. */
    public static double copyBandwidth(CudaBackend gpu) {
        long bytes = 2L << 30;
        TensorAllocator a = gpu.allocator();
        Tensor src = a.allocate(MemoryCategory.OTHER, DType.U8, bytes);
        Tensor dst = a.allocate(MemoryCategory.OTHER, DType.U8, bytes);
        double ms = median(gpu, () -> gpu.copy(src, dst));
        gpu.free(src);
        gpu.free(dst);
        return 2.0 * bytes / (ms * 1e6);
    }

    /** Median of {@value #ROUNDS} timed runs after one untimed, each from a synchronized device to a synchronized device. */
    static double median(CudaBackend gpu, Runnable work) {
        work.run();
        gpu.synchronize();
        double[] t = new double[ROUNDS];
        for (int i = 0; i < ROUNDS; i++) {
            long t0 = System.nanoTime();
            work.run();
            gpu.synchronize();
            t[i] = (System.nanoTime() - t0) / 1e6;
        }
        Arrays.sort(t);
        return t[ROUNDS / 2];
    }

    /** TFLOP/s of x [m, k] f32 times a bf16 [n, k] weight through the backend's matmul. */
    static double denseTflops(CudaBackend gpu, SplittableRandom r, int m, int n, int k) {
        Tensor w = bf16(gpu, r, n, k);
        Tensor x = gpu.toDevice(random(r, 1f, m, k), MemoryCategory.ACTIVATIONS);
        Tensor yy = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, n);
        double ms = median(gpu, () -> gpu.matmul(x, w, yy));
        gpu.free(w);
        gpu.free(x);
        gpu.free(yy);
        return 2.0 * m * n * k / (ms * 1e9);
    }

    /**
     * {@code experts} INT4 g32 matrices [rows, cols] back to back on the device: {@value #PROTOTYPE} experts of random codes
     * and bf16 scales in [0.002, 0.05), copied over the stack.
     */
    private static QuantizedTensor int4Stack(CudaBackend gpu, SplittableRandom r, int experts, int rows, int cols) {
        int proto = Math.min(PROTOTYPE, experts);
        long protoRows = (long) proto * rows;
        Tensor codes = Tensor.allocate(Arena.ofAuto(), DType.I32, protoRows, cols / 8);
        MemorySegment s = codes.segment();
        for (long i = 0; i + 8 <= codes.byteSize(); i += 8) {
            s.set(ValueLayout.JAVA_LONG_UNALIGNED, i, r.nextLong());
        }
        Tensor scales = Tensor.allocate(Arena.ofAuto(), DType.BF16, protoRows, cols / 32);
        for (long i = 0; i < protoRows; i++) {
            for (int g = 0; g < cols / 32; g++) {
                scales.setFloat((float) (0.002 + 0.048 * r.nextDouble()), i, g);
            }
        }
        TensorAllocator a = gpu.allocator();
        Tensor dc = a.allocate(MemoryCategory.BASE_WEIGHTS, DType.I32, (long) experts * rows, cols / 8);
        Tensor ds = a.allocate(MemoryCategory.BASE_WEIGHTS, DType.BF16, (long) experts * rows, cols / 32);
        Tensor pc = gpu.toDevice(codes, MemoryCategory.OTHER);
        Tensor ps = gpu.toDevice(scales, MemoryCategory.OTHER);
        for (int at = 0; at < experts; at += proto) {
            long n = (long) Math.min(proto, experts - at) * rows;
            long from = (long) at * rows;
            gpu.copy(pc.slice(0, 0, n), dc.slice(0, from, from + n));
            gpu.copy(ps.slice(0, 0, n), ds.slice(0, from, from + n));
        }
        gpu.free(pc);
        gpu.free(ps);
        return new QuantizedTensor(Int4G32.INSTANCE, experts * rows, cols, dc, ds);
    }

    /** A bf16 device matrix [rows, cols], values uniform in ±0.02·√3 (standard deviation 0.02). */
    static Tensor bf16(CudaBackend gpu, SplittableRandom r, long rows, long cols) {
        return gpu.toDevice(random(r, 0.02f * (float) Math.sqrt(3), rows, cols).to(DType.BF16), MemoryCategory.BASE_WEIGHTS);
    }

    static Tensor random(SplittableRandom r, float half, long... shape) {
        float[] v = new float[Math.toIntExact(Arrays.stream(shape).reduce(1, (p, q) -> p * q))];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) ((r.nextDouble() * 2 - 1) * half);
        }
        return Tensor.of(v, shape);
    }

    static String ms(double ms) {
        return String.format("%.2f ms", ms);
    }

    private void row(String name, String figure, String against, double ratio) {
        String rt = Double.isNaN(ratio) ? "" : String.format("%.3f", ratio);
        System.out.printf("%-90s %-18s %-26s %s%n", name, figure, against, rt);
        table.append("| ").append(name).append(" | ").append(figure).append(" | ").append(against).append(" | ").append(rt)
                .append(" |\n");
    }
}
