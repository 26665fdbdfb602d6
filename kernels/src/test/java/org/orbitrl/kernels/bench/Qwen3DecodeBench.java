package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.CudaEvent;
import org.orbitrl.kernels.cuda.CudaGraph;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;

/**
 * Qwen3-30B-A3B-shaped decode on the GPU ({@link MoeDecodeStack}: random weights, INT4 g32 experts,
 * bf16 attention, f32 paged KV cache), one whole step captured as a CUDA graph and replayed, at
 * batch 1, 8, 64 and 256 with {@code context} keys already in every sequence's cache. Reported:
 * tokens/s, and the HBM limit of the same step, the bytes it must read (every dense weight, the
 * distinct routed experts of a step, K and V of the context) over the copy bandwidth measured in
 * this run. The step issued from Java without the graph is reported beside it, and the captured step
 * with programmatic dependent launch off and on ({@code -Dorbit.cuda.pdl}: the step's kernels start
 * while the one before them ends) where the device has it.
 *
 * <p>Usage: {@code Qwen3DecodeBench [OUT_DIR [CONFIG_JSON [CONTEXT [BATCHES]]]]}; the shape is read from the
 * model's {@code config.json} when given (anything else, e.g. {@code -}: the published Qwen3-30B-A3B
 * values), BATCHES a comma list (1,8,64,256 by default).
 */
public final class Qwen3DecodeBench {
    /** Qwen3-30B-A3B's config.json values (hidden 2048, 48 layers, 32/4 heads of 128, 128 experts of 768, top-8). */
    static final MoeDecodeStack.Shape QWEN3_30B_A3B = new MoeDecodeStack.Shape(2048, 48, 32, 4, 128, 768, 128, 8, 151936, 1e-6f, 1e6);

    private Qwen3DecodeBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("Qwen3DecodeBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path out = args.length > 0 ? Path.of(args[0]) : null;
        MoeDecodeStack.Shape shape = args.length > 1 && Files.isRegularFile(Path.of(args[1]))
                ? MoeDecodeStack.Shape.fromConfig(Path.of(args[1])) : QWEN3_30B_A3B;
        int context = args.length > 2 ? Integer.parseInt(args[2]) : 512;
        int steps = 16;
        boolean parts = Boolean.getBoolean("orbit.bench.parts");
        // -Dorbit.bench.sweeps=false: the step at each batch only, not the switches' other ways
        boolean sweeps = !"false".equals(System.getProperty("orbit.bench.sweeps"));
        StringBuilder md = new StringBuilder();
        StringBuilder partsMd = new StringBuilder();
        StringBuilder fusedMd = new StringBuilder();
        StringBuilder pdlMd = new StringBuilder();
        StringBuilder opsMd = new StringBuilder();
        StringBuilder moeMd = new StringBuilder();
        try (CudaBackend gpu = new CudaBackend()) {
            double copy = GpuBench.copyBandwidth(gpu);
            md.append("## Qwen3-30B-A3B-shaped decode on ").append(gpu.device()).append("\n\nDate: ").append(Instant.now())
                    .append("\n\nShape ").append(shape).append(", context ").append(context)
                    .append(" keys per sequence, copy bandwidth ").append(String.format("%.0f GB/s", copy))
                    .append(" (same run).\n\n| batch | step (graph) | tokens/s | step from Java | bytes/step | HBM-limit tokens/s | of limit |\n")
                    .append("|---|---|---|---|---|---|---|\n");
            int[] batches = args.length > 3 ? Arrays.stream(args[3].split(",")).mapToInt(Integer::parseInt).toArray() : new int[]{1, 8, 64, 256};
            for (int batch : batches) {
                try (MoeDecodeStack stack = new MoeDecodeStack(gpu, shape, batch, context + steps + 8, 16, 7)) {
                    stack.setPosition(context);
                    stack.step(); // warm-up: modules load, scratch buffers reach their size
                    gpu.synchronize();
                    long distinct = distinctExperts(gpu, stack) * shape.layers();
                    double javaMs = stepMs(gpu, stack, context, steps, null);
                    double graphMs;
                    try (CudaGraph g = CudaGraph.capture(gpu.stream(), stack::step)) {
                        graphMs = stepMs(gpu, stack, context, steps, g);
                    }
                    long bytes = stack.bytesPerStep(distinct, context + steps / 2);
                    double tps = batch / (graphMs / 1e3);
                    double limitTps = batch / (bytes / (copy * 1e9));
                    String line = String.format("| %d | %.3f ms | %.0f | %.3f ms | %.2f GB | %.0f | %.3f |", batch, graphMs, tps, javaMs,
                            bytes / 1e9, limitTps, tps / limitTps);
                    System.out.println(line);
                    md.append(line).append('\n');
                    if (parts) {
                        parts(gpu, stack, context, steps, batch, graphMs, partsMd);
                    }
                    if (!sweeps) {
                        continue;
                    }
                    Timer t = new Timer(gpu, stack, context, steps);
                    if (gpu.dependentLaunchesSupported()) {
                        String row = offOnRow(batch, gpu.dependentLaunches(), graphMs, t.otherWay(gpu.dependentLaunches(), gpu::dependentLaunches));
                        System.out.println("dependent launches " + row);
                        pdlMd.append(row).append('\n');
                    }
                    // the fused decode operations (norms, router selection, SwiGLU, combine inside the products) the other way
                    String ops = offOnRow(batch, stack.fused(), graphMs, t.otherWay(stack.fused(), stack::fused));
                    System.out.println("fused decode operations " + ops);
                    opsMd.append(ops).append('\n');
                    if (batch == 1 && stack.fused()) { // the routed MLP as one cooperative launch or as three
                        var fd = gpu.fusedDecode();
                        String row = offOnRow(batch, fd.persistentMoe(), graphMs, t.otherWay(fd.persistentMoe(), fd::persistentMoe));
                        System.out.println("one-launch MoE " + row);
                        moeMd.append(row).append('\n');
                    }
                    if (batch == 1 && stack.fused()) { // the gate/up and norm GEMV launch shapes (rows a lane, warps a block)
                        var fd = gpu.fusedDecode();
                        int rows = fd.gateUpRowsPerLane();
                        int warps = fd.blockWarps();
                        StringBuilder shapes = new StringBuilder("| 1 | launch shapes (gate/up rows a lane, warps a block):");
                        try {
                            for (int[] ls : new int[][]{{4, 8}, {4, 4}, {2, 8}, {2, 4}}) {
                                fd.gateUpRowsPerLane(ls[0]);
                                fd.blockWarps(ls[1]);
                                shapes.append(String.format(" %d/%d %.3f ms;", ls[0], ls[1], t.captured()));
                            }
                        } finally {
                            fd.gateUpRowsPerLane(rows);
                            fd.blockWarps(warps);
                        }
                        shapes.append(" | | |");
                        System.out.println(shapes);
                        opsMd.append(shapes).append('\n');
                    }
                    if (batch > 1) { // the other launch shapes of the routed experts, the same stack, captured again
                        boolean fused = gpu.moe().moeFusedDecode();
                        String row = offOnRow(batch, fused, graphMs, t.otherWay(fused, gpu.moe()::moeFusedDecode));
                        System.out.println("moeFused " + row);
                        fusedMd.append(row).append('\n');
                    }
                }
            }
        }
        md.append("\nThe routed experts' launch shapes (-Dorbit.cuda.moeFused), the same stacks, graphs captured again:\n\n"
                + "| batch | moeFused=off | moeFused=on | speed-up |\n|---|---|---|---|\n").append(fusedMd);
        md.append("\nProgrammatic dependent launch (-Dorbit.cuda.pdl; ").append(System.getProperty("orbit.cuda.pdl", "default"))
                .append(" in the table above), the same stacks, graphs captured again:\n\n"
                        + "| batch | pdl=off | pdl=on | speed-up |\n|---|---|---|---|\n").append(pdlMd);
        md.append("\nThe fused decode operations (-Dorbit.bench.fusedDecode; CudaFusedDecode), the same stacks, graphs captured again:\n\n"
                + "| batch | fused ops off | fused ops on | speed-up |\n|---|---|---|---|\n").append(opsMd);
        md.append("\nThe routed MLP of a token (norm, router, experts, combine) as one cooperative launch or as three"
                + " (-Dorbit.cuda.moeDecode=persistent|launches; CudaFusedDecode.moeDecode), the same stacks, graphs captured again:\n\n"
                + "| batch | three launches | one launch | speed-up |\n|---|---|---|---|\n").append(moeMd);
        md.append("\nDistinct experts per layer are counted on the last layer of a step and assumed for every layer.\n");
        if (parts) {
            md.append("\nWhere a captured step's time goes: each part left out of the step in turn (its outputs keep"
                    + " earlier values), the graph replayed, the time saved.\n\n| batch | part | ms a step | share |\n|---|---|---|---|\n")
                    .append(partsMd);
        }
        System.out.println(md);
        if (out != null) {
            Files.createDirectories(out);
            Files.writeString(out.resolve("qwen3-decode.md"), md);
        }
    }

    /** Times the captured step of one stack, with a switch as it is or the other way. */
    private record Timer(CudaBackend gpu, MoeDecodeStack stack, int context, int steps) {
        /** The step captured now and replayed: median milliseconds. */
        double captured() {
            try (CudaGraph g = CudaGraph.capture(gpu.stream(), stack::step)) {
                return stepMs(gpu, stack, context, steps, g);
            }
        }

        /** {@link #captured} with {@code set} given {@code !on}, then set back to {@code on}. */
        double otherWay(boolean on, java.util.function.Consumer<Boolean> set) {
            set.accept(!on);
            try {
                return captured();
            } finally {
                set.accept(on);
            }
        }
    }

    /** A table row: the step with the switch off, on, and off / on, where {@code graphMs} was measured with it {@code on}. */
    private static String offOnRow(int batch, boolean on, double graphMs, double otherMs) {
        double onMs = on ? graphMs : otherMs;
        double offMs = on ? otherMs : graphMs;
        return String.format("| %d | %.3f ms (%.0f tokens/s) | %.3f ms (%.0f tokens/s) | %.2fx |", batch, offMs,
                batch / (offMs / 1e3), onMs, batch / (onMs / 1e3), offMs / onMs);
    }

    /** The time of each part of a captured step: the step's time less that of the step without it. */
    private static void parts(CudaBackend gpu, MoeDecodeStack stack, int context, int steps, int batch, double graphMs,
                              StringBuilder md) {
        for (MoeDecodeStack.Part p : MoeDecodeStack.Part.values()) {
            stack.skip(java.util.EnumSet.of(p));
            double ms;
            try (CudaGraph g = CudaGraph.capture(gpu.stream(), stack::step)) {
                ms = stepMs(gpu, stack, context, steps, g);
            }
            String line = String.format("| %d | %s | %.3f | %.3f |", batch, p, graphMs - ms, (graphMs - ms) / graphMs);
            System.out.println(line);
            md.append(line).append('\n');
        }
        stack.skip(java.util.EnumSet.noneOf(MoeDecodeStack.Part.class));
    }

    /** Median milliseconds of a step (graph replay when {@code g} is given), positions advancing. */
    private static double stepMs(CudaBackend gpu, MoeDecodeStack stack, int context, int steps, CudaGraph g) {
        double[] t = new double[steps];
        try (CudaEvent a = new CudaEvent(); CudaEvent b = new CudaEvent()) {
            for (int i = 0; i < steps; i++) {
                stack.setPosition(context + i);
                gpu.synchronize();
                a.record(gpu.stream());
                if (g != null) {
                    g.launch(gpu.stream());
                } else {
                    stack.step();
                }
                b.record(gpu.stream());
                b.synchronize();
                t[i] = b.elapsedMillisSince(a);
            }
        }
        Arrays.sort(t);
        return t[steps / 2];
    }

    private static long distinctExperts(CudaBackend gpu, MoeDecodeStack stack) {
        Set<Long> ids = new HashSet<>();
        for (long id : gpu.toHost(stack.lastRouting()).toLongArray()) {
            ids.add(id);
        }
        return ids.size();
    }
}
