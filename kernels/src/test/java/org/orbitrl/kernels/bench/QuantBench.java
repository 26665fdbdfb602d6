package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.FusedQuantMatmul;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.Mxfp4;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Fused dequantize-matmul throughput for INT4 g32 and MXFP4 weights, as effective GB/s (bytes of
 * packed codes + scales read per second), against the memory-copy bandwidth measured in the same
 * run. Two working sets: "hot" (one matrix, cache-resident) and "stream" (a pool of distinct
 * matrices totalling {@code --set-mib}, read round-robin, so weights come from DRAM as in a real
 * model). Single-threaded, and split over N with a plain thread pool. Each figure is the best of
 * five equal slices of its time (other load on the machine only slows a slice down); the load
 * average is printed before and after. The last column divides by the process's CPU time instead
 * of wall time: what one core does, even when other processes share the machine.
 *
 * <p>Run: {@code java --add-modules jdk.incubator.vector -cp kernels/target/classes:kernels/target/test-classes
 * org.orbitrl.kernels.bench.QuantBench [--seconds 1] [--threads N] [--set-mib 256]}
 */
public final class QuantBench {
    private QuantBench() {
    }

    private record Shape(int n, int k) {
    }

    /** Each figure is the best of this many equal slices of its time. */
    private static final int TRIALS = 5;

    public static void main(String[] args) throws Exception {
        double seconds = 1.0;
        int threads = Runtime.getRuntime().availableProcessors();
        long setMiB = 256;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds" -> seconds = Double.parseDouble(args[++i]);
                case "--threads" -> threads = Integer.parseInt(args[++i]);
                case "--set-mib" -> setMiB = Long.parseLong(args[++i]);
                default -> throw new IllegalArgumentException("unknown argument " + args[i]
                        + "; usage: QuantBench [--seconds S] [--threads T] [--set-mib MiB]");
            }
        }
        try (Arena arena = Arena.ofShared(); ExecutorService pool = Executors.newFixedThreadPool(threads)) {
            System.out.printf("QuantBench: %d threads, %.1f s per figure, stream set %d MiB, vector %s%n", threads, seconds,
                    setMiB, jdk.incubator.vector.FloatVector.SPECIES_PREFERRED);
            System.out.println("load average before: " + loadAverage());
            for (QuantFormat f : List.of(Int4G32.INSTANCE, Mxfp4.INSTANCE)) { // compile the kernels before timing
                List<QuantizedTensor> one = List.of(randomWeight(f, 256, 2048, 1, arena));
                for (int m : new int[]{1, 8}) {
                    run(one, m, 1, pool, 1.0);
                }
            }
            double copy1 = copyGBs(arena, 1, pool, seconds);
            double copyT = copyGBs(arena, threads, pool, seconds);
            System.out.printf("memory copy (read+write bytes, 2x256 MiB buffers): 1 thread %.2f GB/s, %d threads %.2f GB/s%n%n",
                    copy1, threads, copyT);
            System.out.println("| format | weight [N, K] | set | M | threads | GB/s | vs copy | GFLOP/s | GB/s per CPU-s |");
            System.out.println("|---|---|---|---|---|---|---|---|---|");
            for (QuantFormat f : List.of(Int4G32.INSTANCE, Mxfp4.INSTANCE)) {
                for (Shape s : List.of(new Shape(2048, 2048), new Shape(768, 2048))) {
                    long bytesEach = f.storageBytes(s.n, s.k);
                    int copies = (int) Math.max(1, setMiB * 1024 * 1024 / bytesEach);
                    List<QuantizedTensor> stream = new ArrayList<>();
                    for (int c = 0; c < copies; c++) {
                        stream.add(randomWeight(f, s.n, s.k, 1000L * c + s.n, arena));
                    }
                    List<QuantizedTensor> hot = stream.subList(0, 1);
                    for (List<QuantizedTensor> set : List.of(hot, stream)) {
                        for (int m : new int[]{1, 8}) {
                            for (int t : new int[]{1, threads}) {
                                double[] r = run(set, m, t, pool, seconds);
                                double copy = t == 1 ? copy1 : copyT;
                                System.out.printf("| %s | [%d, %d] | %s | %d | %d | %.2f | %.2f | %.1f | %.2f |%n", f.name(),
                                        s.n, s.k, set.size() == 1 ? "hot" : "stream " + (set.size() * bytesEach >> 20) + " MiB",
                                        m, t, r[0], r[0] / copy, r[1], r[2]);
                            }
                        }
                    }
                }
            }
            System.out.println("load average after: " + loadAverage());
        }
    }

    private static String loadAverage() {
        try {
            return java.nio.file.Files.readString(java.nio.file.Path.of("/proc/loadavg")).trim();
        } catch (java.io.IOException e) {
            return "unknown (" + e.getMessage() + ")";
        }
    }

    /** Random codes and scales of a plausible range (values are irrelevant to the speed). */
    private static QuantizedTensor randomWeight(QuantFormat f, int n, int k, long seed, Arena arena) {
        SplittableRandom rnd = new SplittableRandom(seed);
        if (f == Int4G32.INSTANCE) {
            Tensor codes = Tensor.allocate(arena, DType.I32, n, k / 8);  // [N, K/8]
            Tensor scales = Tensor.allocate(arena, DType.BF16, n, k / 32); // [N, K/32]
            fillRandom(codes.segment(), rnd);
            for (long i = 0; i < scales.numel(); i++) {
                scales.segment().set(ValueLayout.JAVA_SHORT_UNALIGNED, 2 * i,
                        Numerics.floatToBf16((float) Math.scalb(1 + rnd.nextDouble(), rnd.nextInt(-9, -4))));
            }
            return new QuantizedTensor(f, n, k, codes, scales);
        }
        Tensor codes = Tensor.allocate(arena, DType.U8, n, k / 32, 16); // [N, K/32, 16]
        Tensor scales = Tensor.allocate(arena, DType.U8, n, k / 32);    // [N, K/32]
        fillRandom(codes.segment(), rnd);
        for (long i = 0; i < scales.numel(); i++) {
            scales.segment().set(ValueLayout.JAVA_BYTE, i, (byte) rnd.nextInt(118, 125));
        }
        return new QuantizedTensor(f, n, k, codes, scales);
    }

    private static void fillRandom(MemorySegment seg, SplittableRandom rnd) {
        for (long o = 0; o + 8 <= seg.byteSize(); o += 8) {
            seg.set(ValueLayout.JAVA_LONG_UNALIGNED, o, rnd.nextLong());
        }
    }

    /** CPU time of the whole process (all threads), in ns. */
    private static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime();
    }

    /** {GB/s of codes+scales, GFLOP/s, GB/s per CPU-second} for y = x·wᵀ over the weights of {@code set}, round-robin. */
    private static double[] run(List<QuantizedTensor> set, int m, int threads, ExecutorService pool, double seconds)
            throws Exception {
        QuantizedTensor w0 = set.getFirst();
        int n = Math.toIntExact(w0.rows());
        int k = Math.toIntExact(w0.cols());
        float[] xv = new float[m * k];
        SplittableRandom rnd = new SplittableRandom(1);
        for (int i = 0; i < xv.length; i++) {
            xv[i] = (float) rnd.nextDouble(-1, 1);
        }
        Tensor x = Tensor.of(xv, m, k);                                             // [M, K]
        Tensor y = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);                // [M, N]
        long warmupEnd = System.nanoTime() + (long) (seconds * 0.3e9);
        for (long c = 0; System.nanoTime() < warmupEnd; c++) {
            once(x, set.get((int) (c % set.size())), y, threads, pool);
        }
        // Best of TRIALS: other processes on the machine only ever slow a trial down.
        double best = 0;
        long allCalls = 0;
        long cpu0 = processCpuNanos();
        for (int trial = 0; trial < TRIALS; trial++) {
            long calls = 0;
            long start = System.nanoTime();
            long end = start + (long) (seconds / TRIALS * 1e9);
            long now;
            do {
                once(x, set.get((int) (calls++ % set.size())), y, threads, pool);
                now = System.nanoTime();
            } while (now < end);
            best = Math.max(best, calls / ((now - start) / 1e9));
            allCalls += calls;
        }
        double perCpu = allCalls / ((processCpuNanos() - cpu0) / 1e9);
        return new double[]{best * w0.byteSize() / 1e9, best * 2.0 * m * n * k / 1e9, perCpu * w0.byteSize() / 1e9};
    }

    private static void once(Tensor x, QuantizedTensor w, Tensor y, int threads, ExecutorService pool) throws Exception {
        int n = Math.toIntExact(w.rows());
        if (threads == 1) {
            FusedQuantMatmul.matmul(x, w, y, 0, n);
            return;
        }
        List<Future<?>> parts = new ArrayList<>(threads);
        for (int t = 0; t < threads; t++) {
            int from = (int) ((long) n * t / threads);
            int to = (int) ((long) n * (t + 1) / threads);
            parts.add(pool.submit(() -> FusedQuantMatmul.matmul(x, w, y, from, to)));
        }
        for (Future<?> p : parts) {
            p.get();
        }
    }

    /** Copy bandwidth in GB/s counting bytes read plus bytes written, over 256 MiB buffers. */
    private static double copyGBs(Arena arena, int threads, ExecutorService pool, double seconds) throws Exception {
        long size = 256L << 20;
        MemorySegment src = arena.allocate(size, 4096);
        MemorySegment dst = arena.allocate(size, 4096);
        fillRandom(src, new SplittableRandom(2));
        double best = 0;
        for (int trial = 0; trial < TRIALS; trial++) {
            long copies = 0;
            long start = System.nanoTime();
            long end = start + (long) (seconds / TRIALS * 1e9);
            long now;
            do {
                List<Future<?>> parts = new ArrayList<>(threads);
                for (int t = 0; t < threads; t++) {
                    long from = size * t / threads;
                    long to = size * (t + 1) / threads;
                    parts.add(pool.submit(() -> MemorySegment.copy(src, from, dst, from, to - from)));
                }
                for (Future<?> p : parts) {
                    p.get();
                }
                copies++;
                now = System.nanoTime();
            } while (now < end || copies < 2);
            best = Math.max(best, copies / ((now - start) / 1e9));
        }
        return 2.0 * size * best / 1e9;
    }
}
