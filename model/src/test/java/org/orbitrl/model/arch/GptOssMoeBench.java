package org.orbitrl.model.arch;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.Mxfp4;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Placement;
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

import static org.orbitrl.model.arch.DeepseekMoeBench.bf16;
import static org.orbitrl.model.arch.DeepseekMoeBench.copyBandwidth;
import static org.orbitrl.model.arch.DeepseekMoeBench.denseTflops;
import static org.orbitrl.model.arch.DeepseekMoeBench.median;
import static org.orbitrl.model.arch.DeepseekMoeBench.ms;
import static org.orbitrl.model.arch.DeepseekMoeBench.random;

/**
 * One gpt-oss MoE layer on the GPU, grouped in backend memory against per expert with the routing on the host: the
 * shape of a {@code config.json} (gpt-oss-120b: 128 experts of hidden 2880 and width 2880, top 4), the experts MXFP4 as
 * the released checkpoints ship them (random codes, E8M0 scales between 2^-9 and 2^-4, placed back to back as the loader
 * places them), their f32 biases, the router bf16 with its bias. Per form: a training step's forward with its tape and
 * backward (the activation gradient through the frozen experts and the routing weights into the input) over TOKENS
 * tokens, the same forward for inference, and decode forwards of 1 and 32 tokens (the grouped form's decode through the
 * per-pair products where the backend takes them, the default, and through the grouped products); each the median of 3
 * runs after one untimed. The expert products' FLOPs over the time against a bf16 product of the expert's shape through the backend's
 * matmul (cuBLAS), and a decode forward's bytes (the chosen experts', the router's) against the device's copy bandwidth,
 * both measured in the same run. Timing and random-data helpers are {@link DeepseekMoeBench}'s.
 * Usage: {@code GptOssMoeBench OUT_DIR CONFIG_JSON [TOKENS [CHUNK]]} (4096 tokens and chunks of 8 experts by default);
 * prints a table and writes {@code gpt-oss-moe.md}.
 */
public final class GptOssMoeBench {
    private static final int[] DECODE = {1, 32};
    private static final int PROTOTYPE = 8;   // experts of random codes on the host, repeated to the model's count

    private final StringBuilder table = new StringBuilder("| benchmark | figure | against | ratio |\n|---|---|---|---|\n");

    private GptOssMoeBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("GptOssMoeBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        if (args.length < 2) {
            throw new IllegalArgumentException("usage: GptOssMoeBench OUT_DIR CONFIG_JSON [TOKENS [CHUNK]]");
        }
        Path out = Path.of(args[0]);
        Path config = Path.of(args[1]);
        int tokens = args.length > 2 ? Integer.parseInt(args[2]) : 4096;
        int chunk = args.length > 3 ? Integer.parseInt(args[3]) : 8;
        GptOssConfig c = GptOssConfig.from(ConfigLoader.load(config));
        GptOssMoeBench bench = new GptOssMoeBench();
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device());
            bench.run(gpu, c, tokens, chunk);
            String doc = "## One gpt_oss MoE layer (" + config + "), grouped against per expert, on " + gpu.device()
                    + "\n\nDate: " + Instant.now() + "; " + tokens + " tokens, expert chunk " + chunk + ".\n\n" + bench.table;
            Files.createDirectories(out);
            Files.writeString(out.resolve("gpt-oss-moe.md"), doc, StandardCharsets.UTF_8);
            System.out.println(doc);
        }
    }

    private void run(CudaBackend gpu, GptOssConfig c, int tokens, int chunk) {
        TensorAllocator a = gpu.allocator();
        SplittableRandom r = new SplittableRandom(43);
        int e = c.experts();
        int h = c.hidden();
        int inter = c.intermediate();
        Weight[] gu = Placement.experts(a, mxfp4Experts(r, e, 2 * inter, h));
        Weight[] dn = Placement.experts(a, mxfp4Experts(r, e, h, inter));
        Tensor guBias = gpu.toDevice(random(r, 0.05f, e, 2L * inter), MemoryCategory.BASE_WEIGHTS);
        Tensor downBias = gpu.toDevice(random(r, 0.05f, e, h), MemoryCategory.BASE_WEIGHTS);
        Linear[] gateUp = new Linear[e];
        Linear[] down = new Linear[e];
        for (int i = 0; i < e; i++) {
            gateUp[i] = new Linear("experts." + i + ".gate_up_proj", gu[i], guBias.select(0, i));
            down[i] = new Linear("experts." + i + ".down_proj", dn[i], downBias.select(0, i));
        }
        Linear router = new Linear("router", Weight.of(bf16(gpu, r, e, h)),
                gpu.toDevice(random(r, 0.1f, e), MemoryCategory.BASE_WEIGHTS));
        GptOssMoe moe = new GptOssMoe(router, gateUp, down, c.topK(), c.swigluAlpha(), c.swigluLimit(), guBias, downBias);
        moe.setExpertChunk(chunk);

        double dense = denseTflops(gpu, r, tokens, 2 * inter, h);
        row("dense bf16 product [" + tokens + ", " + h + "] x [" + 2 * inter + ", " + h + "]^T (cuBLAS)",
                String.format("%.0f TFLOP/s", dense), "", Double.NaN);
        Tensor x = gpu.toDevice(random(r, 1f, tokens, h), MemoryCategory.ACTIVATIONS);
        Tensor dout = gpu.toDevice(random(r, 1e-3f, tokens, h), MemoryCategory.ACTIVATIONS);
        Tensor y = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, tokens, h);
        Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, tokens, h);
        double pairFlops = 2.0 * 3 * h * inter;   // one routed pair's gate_up (2I rows) and down
        double[][] ms = new double[2][2 + DECODE.length];
        for (int path = 0; path < 2; path++) {
            boolean grouped = path == 0;
            moe.setGrouped(grouped);
            String name = grouped ? "grouped" : "per expert";
            ms[path][0] = median(gpu, () -> {
                GptOssMoe.Tape t = new GptOssMoe.Tape();
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
        String[] what = {"training forward + backward", "inference forward", "decode forward (1 token)", "decode forward (32 tokens)"};
        for (int i = 0; i < what.length; i++) {
            row("grouped against per expert: " + what[i], ms(ms[0][i]), ms(ms[1][i]) + " per expert", ms[1][i] / ms[0][i]);
        }
        moe.setGrouped(true);
        double copy = copyBandwidth(gpu);
        row("copy d2d 2 GiB (read + write)", String.format("%.0f GB/s", copy), "4800 GB/s datasheet", copy / 4800);
        long perExpert = gu[0].byteSize() + dn[0].byteSize() + (2L * inter + h) * 4;
        long fixed = router.weight().byteSize();
        for (int d = 0; d < DECODE.length; d++) {
            Tensor xd = gpu.toDevice(random(r, 1f, DECODE[d], h), MemoryCategory.ACTIVATIONS);
            Tensor yd = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, DECODE[d], h);
            long distinct = Arrays.stream(moe.route(gpu, xd).expert()).distinct().count();
            long bytes = distinct * perExpert + fixed;
            for (boolean pairs : new boolean[]{true, false}) {
                gpu.moePairs(pairs);
                double t = median(gpu, () -> moe.forward(gpu, xd, yd, null, false));
                row(String.format("grouped decode forward, %d tokens (%d experts, %.3f GB), %s (%.3f ms)", DECODE[d], distinct,
                        bytes / 1e9, pairs ? "per-pair products" : "grouped products (-Dorbit.cuda.moePairs=off)", t),
                        String.format("%.0f GB/s", bytes / (t * 1e6)), String.format("copy %.0f GB/s", copy), bytes / (t * 1e6) / copy);
            }
            gpu.moePairs(true);
            OpProfiler prof = OpProfiler.wrap(gpu, gpu::synchronize);
            moe.forward(prof.backend(), xd, yd, null, false);   // the profiler's own first calls, not counted
            prof.reset();
            for (int i = 0; i < 10; i++) {
                moe.forward(prof.backend(), xd, yd, null, false);
            }
            System.out.println("grouped decode forward, " + DECODE[d] + " tokens, backend calls over 10 runs:\n" + prof.report(12));
            gpu.free(xd);
            gpu.free(yd);
        }
    }

    /**
     * {@code experts} MXFP4 matrices [rows, cols] on the host, {@value #PROTOTYPE} distinct ones repeated: random codes,
     * E8M0 scales 118-123 (2^-9 to 2^-4).
     */
    private static Weight[] mxfp4Experts(SplittableRandom r, int experts, int rows, int cols) {
        Weight[] proto = new Weight[Math.min(PROTOTYPE, experts)];
        for (int p = 0; p < proto.length; p++) {
            Tensor blocks = Tensor.allocate(Arena.ofAuto(), DType.U8, rows, cols / 32, 16);
            MemorySegment s = blocks.segment();
            for (long i = 0; i + 8 <= blocks.byteSize(); i += 8) {
                s.set(ValueLayout.JAVA_LONG_UNALIGNED, i, r.nextLong());
            }
            Tensor scales = Tensor.allocate(Arena.ofAuto(), DType.U8, rows, cols / 32);
            MemorySegment ss = scales.segment();
            for (long i = 0; i < scales.byteSize(); i++) {
                ss.set(ValueLayout.JAVA_BYTE, i, (byte) (118 + r.nextInt(6)));
            }
            proto[p] = Weight.of(Mxfp4.fromBlocks(blocks, scales));
        }
        Weight[] out = new Weight[experts];
        for (int e = 0; e < experts; e++) {
            out[e] = proto[e % proto.length];
        }
        return out;
    }

    private void row(String name, String figure, String against, double ratio) {
        String rt = Double.isNaN(ratio) ? "" : String.format("%.3f", ratio);
        System.out.printf("%-90s %-18s %-26s %s%n", name, figure, against, rt);
        table.append("| ").append(name).append(" | ").append(figure).append(" | ").append(against).append(" | ").append(rt)
                .append(" |\n");
    }
}
