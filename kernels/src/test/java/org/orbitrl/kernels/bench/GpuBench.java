package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.CudaCheck;
import org.orbitrl.kernels.cuda.CudaEvent;
import org.orbitrl.kernels.cuda.CudaGraph;
import org.orbitrl.kernels.cuda.internal.DevicePointer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.bytedeco.cuda.global.cudart.cudaMemcpyAsync;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToDevice;

/**
 * What the GPU benchmarks share: event timing (median of repetitions, plain or replayed from a
 * CUDA graph), the device copy bandwidth they compare against, and their result table.
 */
public final class GpuBench {
    private final List<String> rows = new ArrayList<>();
    private final String lineFormat;

    /** A result table whose console lines use {@code nameWidth} and {@code figureWidth} columns. */
    GpuBench(int nameWidth, int figureWidth, int againstWidth) {
        this.lineFormat = "%-" + nameWidth + "s %-" + figureWidth + "s %-" + againstWidth + "s %.3f%n";
    }

    /** Adds a row: what was measured, its figure, the limit it is compared with, and the ratio. */
    void row(String name, String figure, String against, double ratio) {
        rows.add("| " + name + " | " + figure + " | " + against + " | " + String.format("%.3f", ratio) + " |");
        System.out.printf(lineFormat, name, figure, against, ratio);
    }

    /** Adds a row of an effective bandwidth {@code gbs} against the copy bandwidth {@code copy} measured in the run. */
    void bandwidthRow(String name, double gbs, double copy) {
        row(name, String.format("%.0f GB/s", gbs), String.format("copy %.0f GB/s", copy), gbs / copy);
    }

    /** Prints the table as markdown under {@code title} and writes it to {@code out/file} when out is given. */
    void write(String title, Path out, String file) throws IOException {
        StringBuilder md = new StringBuilder("## " + title + "\n\nDate: " + Instant.now()
                + "\n\n| benchmark | figure | against | ratio |\n|---|---|---|---|\n");
        rows.forEach(r -> md.append(r).append('\n'));
        System.out.println(md);
        if (out != null) {
            Files.createDirectories(out);
            Files.writeString(out.resolve(file), md);
        }
    }

    /** Median milliseconds of {@code reps} event-timed runs of {@code work} after 3 warm-ups. */
    public static double timeMs(CudaBackend gpu, int reps, Runnable work) {
        for (int i = 0; i < 3; i++) {
            work.run();
        }
        gpu.synchronize();
        double[] t = new double[reps];
        try (CudaEvent a = new CudaEvent(); CudaEvent b = new CudaEvent()) {
            for (int i = 0; i < reps; i++) {
                a.record(gpu.stream());
                work.run();
                b.record(gpu.stream());
                b.synchronize();
                t[i] = b.elapsedMillisSince(a);
            }
        }
        Arrays.sort(t);
        return t[reps / 2];
    }

    /**
     * Milliseconds of one run of {@code work} when {@code reps} runs are issued back to back between two events (after
     * {@code reps} runs to warm the code that issues them): the host prepares each run while the device works on the last,
     * as in a training step, so the figure is the device's time unless the host is slower.
     */
    static double pipelinedMs(CudaBackend gpu, int reps, Runnable work) {
        for (int i = 0; i < reps; i++) {
            work.run();
        }
        gpu.synchronize();
        try (CudaEvent a = new CudaEvent(); CudaEvent b = new CudaEvent()) {
            a.record(gpu.stream());
            for (int i = 0; i < reps; i++) {
                work.run();
            }
            b.record(gpu.stream());
            b.synchronize();
            return b.elapsedMillisSince(a) / reps;
        }
    }

    /** Milliseconds of one replay of {@code work} captured as a graph (median). */
    static double graphMs(CudaBackend gpu, int reps, Runnable work) {
        work.run(); // first run outside the capture: modules load, scratch buffers reach their size
        gpu.synchronize();
        try (CudaGraph g = CudaGraph.capture(gpu.stream(), work)) {
            return timeMs(gpu, reps, () -> g.launch(gpu.stream()));
        }
    }

    /**
     * Milliseconds of one call of {@code call(c)} among {@code copies} calls c = 0 .. copies - 1 replayed as one graph
     * ({@link #graphMs}): each call over its own copy of the weights or caches, so that the copies rotate past the L2.
     */
    static double perCopyMs(CudaBackend gpu, int reps, int copies, java.util.function.IntConsumer call) {
        return graphMs(gpu, reps, () -> {
            for (int c = 0; c < copies; c++) {
                call.accept(c);
            }
        }) / copies;
    }

    /** Device-to-device copy bandwidth in GB/s (bytes read + written) over 2 GiB, the memory ceiling. */
    public static double copyBandwidth(CudaBackend gpu) {
        long bytes = 2L << 30;
        CudaAllocator a = gpu.allocator();
        Tensor src = a.allocate(MemoryCategory.OTHER, DType.U8, bytes);
        Tensor dst = a.allocate(MemoryCategory.OTHER, DType.U8, bytes);
        double ms = timeMs(gpu, 10, () -> CudaCheck.check(cudaMemcpyAsync(new DevicePointer(CudaAllocator.address(dst)),
                new DevicePointer(CudaAllocator.address(src)), bytes, cudaMemcpyDeviceToDevice, gpu.stream().handle()),
                "cudaMemcpyAsync d2d"));
        a.free(src);
        a.free(dst);
        return 2.0 * bytes / (ms * 1e6);
    }

    /** Measures the copy bandwidth and adds its row against the H200 datasheet; returns GB/s. */
    double copyBandwidthRow(CudaBackend gpu) {
        double gbs = copyBandwidth(gpu);
        row("copy d2d 2 GiB (read + write)", String.format("%.0f GB/s", gbs), "4800 GB/s datasheet", gbs / 4800);
        return gbs;
    }
}
