package org.orbitrl.model.bench;

import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.LocalRanks;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.parallel.ParallelLayout;
import org.orbitrl.model.parallel.RankGroups;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Multi-GPU figures from one run:
 * <ol>
 *   <li>NCCL all-reduce bus bandwidth (2(n−1)/n · bytes / time, NCCL's own definition) and the
 *       all-to-all bandwidth of the same communicator ((n−1)/n · bytes / time, equal counts) for
 *       2..N GPUs and several sizes, with their ratio;</li>
 *   <li>training (forward + adapter-free backward) and decode tokens/s of a Qwen3 / Qwen3-MoE model
 *       split with expert and tensor parallelism over 1, 2, 4 ranks, as a ratio to 1 rank. The model
 *       runs on the CPU backend with logical ranks (the Qwen3 model has no device path yet), so these
 *       figures time the parallel code path, not GPU scaling.</li>
 * </ol>
 * Needs at least 2 GPUs and refuses otherwise; {@code --cpu-only} runs part 2 alone anywhere.
 *
 * <pre>tools/bench -pl model org.orbitrl.model.bench.MultiGpuBench [--cpu-only] [MODEL_DIR]</pre>
 */
public final class MultiGpuBench {
    private MultiGpuBench() {
    }

    public static void main(String[] args) throws Exception {
        boolean cpuOnly = Arrays.asList(args).contains("--cpu-only");
        Path model = Arrays.stream(args).filter(a -> !a.startsWith("--")).findFirst().map(Path::of)
                .orElse(Path.of(System.getProperty("orbit.fixtures", "../shared/fixtures"), "hf", "qwen3_moe"));
        int gpus = Cuda.available() ? Cuda.deviceCount() : 0;
        if (!cpuOnly && gpus < 2) {
            System.err.println("MultiGpuBench needs at least 2 GPUs; this machine has " + gpus
                    + (gpus == 0 ? " (" + Cuda.unavailableReason() + ")" : "") + ". Use --cpu-only for the CPU part.");
            System.exit(2);
        }
        System.out.printf("MultiGpuBench on %s, %d GPUs, model %s%n", java.net.InetAddress.getLocalHost().getHostName(),
                gpus, model);
        if (!cpuOnly) {
            for (int n = 2; n <= gpus; n *= 2) {
                commBandwidth(n);
            }
        }
        modelScaling(model);
    }

    // ---------------------------------------------------------------- part 1: NCCL bandwidth

    private static void commBandwidth(int n) throws Exception {
        List<CudaBackend> backends = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            backends.add(new CudaBackend(i, CudaBackend.defaultCacheDir()));
        }
        List<NcclCommunicator> comms = NcclCommunicator.initAll(backends);
        ExecutorService pool = Executors.newFixedThreadPool(n);
        try {
            for (long mib : new long[]{8, 64, 256}) {
                long bytes = mib << 20;
                double ar = timed(pool, comms, bytes, true);
                double a2a = timed(pool, comms, bytes, false);
                double arBus = bytes * 2.0 * (n - 1) / n / ar / 1e9;
                double a2aBus = bytes * (double) (n - 1) / n / a2a / 1e9;
                System.out.printf("  %d GPUs %4d MiB: all-reduce bus %.1f GB/s (%.3f ms), all-to-all %.1f GB/s (%.3f ms),"
                        + " all-to-all / all-reduce %.2f%n", n, mib, arBus, ar * 1e3, a2aBus, a2a * 1e3, a2aBus / arBus);
            }
        } finally {
            pool.shutdownNow();
            comms.forEach(NcclCommunicator::close);
            backends.forEach(CudaBackend::close);
        }
    }

    /** Seconds per collective over {@code bytes} (median-free: the mean of 10 after 3 warm-ups). */
    private static double timed(ExecutorService pool, List<NcclCommunicator> comms, long bytes, boolean allReduce)
            throws Exception {
        int n = comms.size();
        CyclicBarrier start = new CyclicBarrier(n);
        List<Future<Double>> fs = new ArrayList<>();
        for (NcclCommunicator c : comms) {
            fs.add(pool.submit(() -> {
                CudaBackend b = c.backend();
                long elems = bytes / 4 / n * n;
                Tensor send = b.allocator().allocate(MemoryCategory.COMM_BUFFERS, DType.F32, elems);
                Tensor recv = b.allocator().allocate(MemoryCategory.COMM_BUFFERS, DType.F32, elems);
                long[] counts = new long[n];
                Arrays.fill(counts, elems / n);
                Tensor send2 = send.reshape(elems, 1);
                Tensor recv2 = recv.reshape(elems, 1);
                try {
                    double t0 = 0;
                    for (int it = 0; it < 13; it++) {
                        if (it == 3) {
                            b.synchronize();
                            start.await();
                            t0 = System.nanoTime();
                        }
                        if (allReduce) {
                            c.allReduceSum(send);
                        } else {
                            c.allToAll(send2, counts, recv2, counts);
                        }
                    }
                    b.synchronize();
                    return (System.nanoTime() - t0) / 1e9 / 10;
                } finally {
                    b.free(send);
                    b.free(recv);
                }
            }));
        }
        double worst = 0;
        for (Future<Double> f : fs) {
            worst = Math.max(worst, f.get());
        }
        return worst;
    }

    // ---------------------------------------------------------------- part 2: the parallel model

    private static void modelScaling(Path dir) {
        double train1 = 0;
        double decode1 = 0;
        for (int ranks : new int[]{1, 2, 4}) {
            ParallelLayout layout;
            try (LoadedModel probe = LoadedModel.load(dir, Backends.cpu(), BaseFormat.BF16)) {
                var c = ((Qwen3Model) probe.model()).config();
                int ep = c.experts() > 0 && c.experts() % ranks == 0 ? ranks : 1;
                int tp = ranks <= c.kvHeads() && c.kvHeads() % ranks == 0 && c.heads() % ranks == 0
                        && c.vocab() % ranks == 0 && (!c.hasDenseLayers() || c.intermediate() % ranks == 0) ? ranks : 1;
                if (ranks > 1 && ep == 1 && tp == 1) {
                    System.out.printf("  %d ranks: the model splits neither its experts nor its heads %d ways%n", ranks, ranks);
                    continue;
                }
                layout = new ParallelLayout(ranks, tp, ep);
            }
            ParallelLayout lay = layout;
            List<double[]> r = LocalRanks.run(ranks, comm -> step(dir, comm, lay));
            double train = r.get(0)[0];
            double decode = r.get(0)[1];
            if (ranks == 1) {
                train1 = train;
                decode1 = decode;
            }
            System.out.printf("  CPU logical ranks %s: training %.0f tokens/s (x%.2f of 1 rank), decode %.1f tokens/s "
                    + "(x%.2f)%n", lay, train, train / train1, decode, decode / decode1);
        }
    }

    /** One rank: {training tokens/s, decode tokens/s}. */
    private static double[] step(Path dir, Communicator world, ParallelLayout layout) {
        RankGroups groups = RankGroups.split(layout, world);
        try (LoadedModel m = LoadedModel.load(dir, Backends.cpu(), BaseFormat.BF16, groups)) {
            Qwen3Model model = (Qwen3Model) m.model();
            SplittableRandom rng = new SplittableRandom(1);
            int batch = 4;
            int len = 64;
            List<int[]> seqs = new ArrayList<>();
            for (int b = 0; b < batch; b++) {
                seqs.add(rng.ints(len, 0, model.vocabSize()).toArray());
            }
            float[] d = new float[batch * len * model.vocabSize()];
            for (int i = 0; i < d.length; i++) {
                d[i] = (float) (rng.nextDouble() - 0.5) * 1e-3f;
            }
            Tensor dLogits = Tensor.of(d, (long) batch * len, model.vocabSize());
            model.backward(model.forwardTrain(seqs, false), dLogits);   // warm-up
            world.barrier();
            long t0 = System.nanoTime();
            int reps = 3;
            for (int i = 0; i < reps; i++) {
                model.backward(model.forwardTrain(seqs, false), dLogits);
            }
            world.barrier();
            double train = (double) reps * batch * len / ((System.nanoTime() - t0) / 1e9);
            List<CausalLM.Segment> step = new ArrayList<>();
            List<KvCache> caches = new ArrayList<>();
            for (int[] s : seqs) {
                KvCache c = model.newCache(len + 32);
                caches.add(c);
                step.add(new CausalLM.Segment(Arrays.copyOf(s, 16), c));
            }
            model.forward(step);   // prefill
            int steps = 16;
            world.barrier();
            t0 = System.nanoTime();
            for (int t = 0; t < steps; t++) {
                List<CausalLM.Segment> next = new ArrayList<>();
                for (int b = 0; b < batch; b++) {
                    next.add(new CausalLM.Segment(new int[]{seqs.get(b)[16 + t]}, caches.get(b)));
                }
                model.forward(next);
            }
            world.barrier();
            double decode = (double) steps * batch / ((System.nanoTime() - t0) / 1e9);
            return new double[]{train, decode};
        }
    }
}
