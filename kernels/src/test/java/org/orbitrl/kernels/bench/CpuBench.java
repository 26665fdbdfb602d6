package org.orbitrl.kernels.bench;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cpu.ScalarBackend;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CountDownLatch;

/**
 * CPU matmul throughput against this machine's own limits, all measured in one run:
 * <ol>
 *   <li>FMA peak: a scalar f32 FMA loop (per core, times the cores) and a vector FMA loop
 *       ({@code FloatVector.SPECIES_PREFERRED}) on one core and on all cores at once;</li>
 *   <li>memory bandwidth: {@code MemorySegment.copy} of large buffers, one thread and all threads
 *       (traffic = bytes read + bytes written);</li>
 *   <li>{@link CpuBackend#matmul} GFLOP/s for f32 and bf16 weights at M = 1, 8, 64, 512 with
 *       K = N = 2048 and the Qwen3-30B-A3B expert shapes (2048 → 768, 768 → 2048), printed as
 *       a fraction of the vector FMA peak, and the weights' read rate as a fraction of the copy
 *       traffic (the limit at decode). Decode shapes cycle through enough weight copies to
 *       exceed the last-level cache, so the weights really come from memory.</li>
 * </ol>
 * Run with {@code tools/bench org.orbitrl.kernels.bench.CpuBench}. Options (system properties):
 * {@code -Dbench.threads=N} (default: available processors), {@code -Dbench.copyMiB=1024},
 * {@code -Dbench.seconds=0.5} (time per measurement).
 */
public final class CpuBench {
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;

    private CpuBench() {
    }

    public static void main(String[] args) throws InterruptedException {
        int threads = Integer.getInteger("bench.threads", Runtime.getRuntime().availableProcessors());
        long copyBytes = Long.getLong("bench.copyMiB", 1024) << 20;
        double seconds = Double.parseDouble(System.getProperty("bench.seconds", "0.5"));
        System.out.printf("CpuBench: %d threads, %d float lanes (%s), JDK %s, %s%n", threads, F.length(), F,
                Runtime.version(), System.getProperty("os.arch"));

        double scalarCore = Peak.scalarFma(seconds);
        double vectorCore = Peak.vectorFma(seconds);
        double vectorAll = Peak.onAllThreads(threads, () -> Peak.vectorFma(seconds));
        System.out.printf("%nFMA peak (GFLOP/s, 2 flops per FMA)%n");
        System.out.printf("  scalar f32, 1 core      %8.1f   x %d cores = %8.1f%n", scalarCore, threads, scalarCore * threads);
        System.out.printf("  vector f32, 1 core      %8.1f   x %d cores = %8.1f%n", vectorCore, threads, vectorCore * threads);
        System.out.printf("  vector f32, %2d threads  %8.1f   (measured together: the reference below)%n", threads, vectorAll);

        double copyOne = Peak.copyBandwidth(copyBytes, 1, seconds);
        double copyAll = Peak.copyBandwidth(copyBytes, threads, seconds);
        System.out.printf("%nMemory copy traffic (GB/s, read + write, %d MiB buffers)%n", copyBytes >> 20);
        System.out.printf("  1 thread   %8.1f%n  %d threads %8.1f   (the reference below)%n", copyOne, threads, copyAll);

        try (CpuBackend cpu = new CpuBackend(threads)) {
            System.out.printf("%nCpuBackend.matmul y[M,N] = x[M,K] · w[N,K]ᵀ%n");
            System.out.printf("  %-5s %5s %5s %5s %10s %9s %12s %11s%n", "w", "M", "K", "N", "GFLOP/s", "of peak",
                    "weight GB/s", "of copy");
            int[][] shapes = {{2048, 2048}, {2048, 768}, {768, 2048}};
            for (DType wt : new DType[]{DType.F32, DType.BF16}) {
                for (int[] kn : shapes) {
                    for (int m : new int[]{1, 8, 64, 512}) {
                        Result r = matmul(cpu, wt, m, kn[0], kn[1], seconds);
                        System.out.printf("  %-5s %5d %5d %5d %10.1f %8.1f%% %12.1f %10.1f%%%n", wt, m, kn[0], kn[1],
                                r.gflops, 100 * r.gflops / vectorAll, r.weightGBs, 100 * r.weightGBs / copyAll);
                    }
                }
            }
            Result fast = matmul(cpu, DType.F32, 8, 2048, 2048, seconds);
            Result scalar = matmul(new ScalarBackend(), DType.F32, 8, 2048, 2048, seconds);
            System.out.printf("%nPeer: ScalarBackend at M=8 K=N=2048 f32: %.2f GFLOP/s; CpuBackend is %.0fx faster%n",
                    scalar.gflops, fast.gflops / scalar.gflops);
        }
    }

    record Result(double gflops, double weightGBs) {
    }

    /** Times y = x·wᵀ; weights are cycled over enough copies to exceed 256 MiB when they are re-read. */
    private static Result matmul(org.orbitrl.kernels.Backend backend, DType wt, int m, int k, int n, double seconds) {
        SplittableRandom rnd = new SplittableRandom(m * 31L + k);
        Arena arena = Arena.ofAuto();
        long weightBytes = (long) n * k * wt.bytes();
        int copies = (int) Math.max(1, Math.min(64, (256L << 20) / weightBytes));
        if (m >= 64) {
            copies = 1; // compute-bound: one weight, reused from cache as a real prefill would
        }
        List<Tensor> ws = new ArrayList<>();
        for (int c = 0; c < copies; c++) {
            Tensor w = Tensor.allocate(arena, wt, n, k);
            fill(w, rnd);
            ws.add(w);
        }
        Tensor x = Tensor.allocate(arena, DType.F32, m, k);
        fill(x, rnd);
        Tensor y = Tensor.allocate(arena, DType.F32, m, n);
        // warm up until the kernels run compiled: at least 1 s and 20 calls (the Vector API is
        // slow until C2 has compiled it)
        long warm = System.nanoTime() + 1_000_000_000L;
        for (int i = 0; i < 20 || System.nanoTime() < warm; i++) {
            backend.matmul(x, ws.get(i % copies), y);
        }
        double best = Double.MAX_VALUE;
        long deadline = System.nanoTime() + (long) (seconds * 1e9);
        int batches = 0;
        do {
            long t0 = System.nanoTime();
            for (int i = 0; i < copies; i++) {
                backend.matmul(x, ws.get(i), y);
            }
            best = Math.min(best, (System.nanoTime() - t0) / 1e9 / copies);
            batches++;
        } while (System.nanoTime() < deadline || batches < 5);
        return new Result(2.0 * m * n * k / best / 1e9, weightBytes / best / 1e9);
    }

    private static void fill(Tensor t, SplittableRandom rnd) {
        float[] v = new float[Math.toIntExact(t.numel())];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (rnd.nextDouble() * 2 - 1);
        }
        if (t.dtype() == DType.F32) {
            MemorySegment.copy(v, 0, t.segment(), java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, t.byteOffset(), v.length);
        } else {
            for (int i = 0; i < v.length; i++) {
                t.segment().set(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, t.byteOffset() + 2L * i,
                        org.orbitrl.kernels.Numerics.floatToBf16(v[i]));
            }
        }
    }

    /** The physical limits: FMA loops and memory copies. */
    static final class Peak {
        private Peak() {
        }

        static volatile float sink;

        /** Best rate of {@code round} (which returns its flop count) over {@code seconds}, after a warm-up. */
        private static double best(double seconds, java.util.function.LongSupplier round) {
            long warm = System.nanoTime() + 1_500_000_000L;
            while (System.nanoTime() < warm) {
                round.getAsLong();
            }
            double best = 0;
            long deadline = System.nanoTime() + (long) (seconds * 1e9);
            do {
                long t0 = System.nanoTime();
                long flops = round.getAsLong();
                best = Math.max(best, (double) flops / (System.nanoTime() - t0));
            } while (System.nanoTime() < deadline);
            return best;
        }

        static double scalarFma(double seconds) {
            return best(seconds, Peak::scalarRound);
        }

        static double vectorFma(double seconds) {
            return best(seconds, Peak::vectorRound);
        }

        /** Eight independent scalar FMA chains (enough to hide the FMA latency); returns flops. */
        private static long scalarRound() {
            int iters = 1 << 16;
            float a0 = 1, a1 = 2, a2 = 3, a3 = 4, a4 = 5, a5 = 6, a6 = 7, a7 = 8;
            float m = 0.9999999f;
            float c = 1e-7f;
            for (int i = 0; i < iters; i++) {
                a0 = Math.fma(a0, m, c);
                a1 = Math.fma(a1, m, c);
                a2 = Math.fma(a2, m, c);
                a3 = Math.fma(a3, m, c);
                a4 = Math.fma(a4, m, c);
                a5 = Math.fma(a5, m, c);
                a6 = Math.fma(a6, m, c);
                a7 = Math.fma(a7, m, c);
            }
            sink = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
            return 2L * 8 * iters;
        }

        /** Twelve independent vector FMA chains; returns flops. */
        private static long vectorRound() {
            int iters = 1 << 14;
            FloatVector m = FloatVector.broadcast(F, 0.9999999f);
            FloatVector c = FloatVector.broadcast(F, 1e-7f);
            FloatVector a0 = FloatVector.broadcast(F, 1), a1 = FloatVector.broadcast(F, 2);
            FloatVector a2 = FloatVector.broadcast(F, 3), a3 = FloatVector.broadcast(F, 4);
            FloatVector a4 = FloatVector.broadcast(F, 5), a5 = FloatVector.broadcast(F, 6);
            FloatVector a6 = FloatVector.broadcast(F, 7), a7 = FloatVector.broadcast(F, 8);
            FloatVector a8 = FloatVector.broadcast(F, 9), a9 = FloatVector.broadcast(F, 10);
            FloatVector a10 = FloatVector.broadcast(F, 11), a11 = FloatVector.broadcast(F, 12);
            for (int i = 0; i < iters; i++) {
                a0 = a0.fma(m, c);
                a1 = a1.fma(m, c);
                a2 = a2.fma(m, c);
                a3 = a3.fma(m, c);
                a4 = a4.fma(m, c);
                a5 = a5.fma(m, c);
                a6 = a6.fma(m, c);
                a7 = a7.fma(m, c);
                a8 = a8.fma(m, c);
                a9 = a9.fma(m, c);
                a10 = a10.fma(m, c);
                a11 = a11.fma(m, c);
            }
            sink = a0.add(a1).add(a2).add(a3).add(a4).add(a5).add(a6).add(a7).add(a8).add(a9).add(a10).add(a11).lane(0);
            return 2L * 12 * F.length() * iters;
        }

        /** Runs {@code perThread} on n threads at once and sums their rates. */
        static double onAllThreads(int n, java.util.function.DoubleSupplier perThread) throws InterruptedException {
            double[] rates = new double[n];
            CountDownLatch start = new CountDownLatch(1);
            Thread[] ts = new Thread[n];
            for (int i = 0; i < n; i++) {
                int id = i;
                ts[i] = new Thread(() -> {
                    try {
                        start.await();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return;
                    }
                    rates[id] = perThread.getAsDouble();
                }, "bench-peak-" + i);
                ts[i].start();
            }
            start.countDown();
            double sum = 0;
            for (int i = 0; i < n; i++) {
                ts[i].join();
                sum += rates[i];
            }
            return sum;
        }

        /** Copy traffic (read + write) in GB/s of {@code bytes} split over {@code threads}; best of several. */
        static double copyBandwidth(long bytes, int threads, double seconds) throws InterruptedException {
            try (Arena arena = Arena.ofShared()) {
                MemorySegment src = arena.allocate(bytes, 4096);
                MemorySegment dst = arena.allocate(bytes, 4096);
                src.fill((byte) 1);
                dst.fill((byte) 2);
                long chunk = bytes / threads / 4096 * 4096;
                double best = 0;
                long deadline = System.nanoTime() + (long) (seconds * 4e9);
                int rounds = 0;
                do {
                    CountDownLatch done = new CountDownLatch(threads);
                    long t0 = System.nanoTime();
                    for (int t = 0; t < threads; t++) {
                        long off = t * chunk;
                        long len = t == threads - 1 ? bytes - off : chunk;
                        Thread.ofPlatform().start(() -> {
                            MemorySegment.copy(src, off, dst, off, len);
                            done.countDown();
                        });
                    }
                    done.await();
                    long dt = System.nanoTime() - t0;
                    best = Math.max(best, 2.0 * bytes / dt);
                    rounds++;
                } while (System.nanoTime() < deadline || rounds < 3);
                return best;
            }
        }
    }
}
