package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.HostStagedRanks;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.kernels.comm.NcclRanks;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.parallel.AdapterParallel;
import org.orbitrl.model.parallel.ParallelLayout;
import org.orbitrl.model.parallel.RankGroups;
import org.orbitrl.model.spec.ConfigLoader;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Multi-GPU figures from one run on one machine, one thread, CUDA backend and NCCL communicator per GPU:
 * <ol>
 *   <li>NCCL all-reduce bus bandwidth (2(n−1)/n · bytes / time, NCCL's own definition) and the all-to-all
 *       bandwidth of the same communicator ((n−1)/n · bytes / time, equal counts) for 2..N GPUs and several
 *       sizes, with their ratio;</li>
 *   <li>a Qwen3-MoE model of a real shape (default Qwen3-30B-A3B's, the first {@code --layers} layers, experts INT4
 *       group-32, attention bf16, random weights: {@link RandomQwen3Moe}) with a LoRA r=32 adapter on q/k/v/o and the
 *       experts, on 1 GPU, split over 2..N GPUs with expert parallelism, tensor parallelism and both, and data parallel
 *       (every GPU the whole model and a batch of its own, the adapter's gradients all-reduced): training
 *       tokens/s (forward, next-token loss, adapter-only backward, the parallel gradients completed; 3 steps after one
 *       untimed), decode tokens/s (a batch of sequences one token a step through the model's forward, 32 steps after one
 *       untimed) and each GPU's peak device memory, as ratios to one GPU;</li>
 *   <li>with {@code --mla CONFIG} (Kimi-K2.6's or DeepSeek-V3's config.json), the same for that latent-attention
 *       model ({@code --layers} layers, the first dense as the config says, {@code --experts} routed experts of its
 *       width, a 32768-token vocabulary, INT4 experts, random weights: {@link RandomDeepseekV3}), split with expert
 *       parallelism (the only split those models take), LoRA r=32 on the attention and the experts.</li>
 * </ol>
 * Needs at least 2 GPUs and refuses otherwise; {@code --one-gpu N} runs part 2 alone with N logical ranks on GPU 0
 * (collectives staged through the host, {@link HostStagedRanks}): the split model's device paths at a real shape, its
 * figures not a scaling result.
 *
 * <pre>bench MultiGpuBench [--config CONFIG_JSON] [--layers 8] [--train 4x512] [--decode 64] [--comm-only] [--one-gpu 2]
 *     [--mla KIMI_OR_DEEPSEEK_CONFIG_JSON [--experts 64]] [--comm-skip]</pre>
 */
public final class MultiGpuBench {
    private static boolean oneGpuRanks;   // --one-gpu: logical ranks on GPU 0, collectives staged through the host

    private MultiGpuBench() {
    }

    public static void main(String[] args) throws Exception {
        List<String> a = Arrays.asList(args);
        int gpus = Cuda.available() ? Cuda.deviceCount() : 0;
        int logical = Integer.parseInt(option(a, "--one-gpu", "0"));
        if (logical > 0 && gpus > 0) {
            oneGpuRanks = true;
            gpus = logical;
        } else if (gpus < 2) {
            System.err.println("MultiGpuBench needs at least 2 GPUs; this machine has " + gpus
                    + (gpus == 0 ? " (" + Cuda.unavailableReason() + ")" : ""));
            System.exit(2);
        }
        System.out.printf("MultiGpuBench on %s, %d GPUs%n", java.net.InetAddress.getLocalHost().getHostName(), gpus);
        for (int n = 2; n <= gpus && !oneGpuRanks && !a.contains("--comm-skip"); n *= 2) {
            commBandwidth(n);
        }
        if (a.contains("--comm-only")) {
            return;
        }
        Path config = Path.of(option(a, "--config",
                Path.of(System.getProperty("orbit.models", "../shared/models"), "qwen3-30b-a3b", "config.json").toString()));
        int layers = Integer.parseInt(option(a, "--layers", "8"));
        String[] train = option(a, "--train", "4x512").split("x");
        int decodeBatch = Integer.parseInt(option(a, "--decode", "64"));
        String mla = option(a, "--mla", null);
        if (mla != null) {
            int experts = Integer.parseInt(option(a, "--experts", "64"));
            mlaScaling(gpus, Path.of(mla), layers, experts, Integer.parseInt(train[0]), Integer.parseInt(train[1]), decodeBatch);
            return;
        }
        modelScaling(gpus, config, layers, Integer.parseInt(train[0]), Integer.parseInt(train[1]), decodeBatch);
    }

    /** Part 2 for a latent-attention model (DeepSeek-V3, Kimi-K2): one GPU, then expert parallelism over 2..N. */
    private static void mlaScaling(int gpus, Path configFile, int layers, int experts, int batch, int len, int decodeBatch)
            throws Exception {
        Path f = MlaTrainPeakBench.shape(configFile, layers, experts, 32768);
        org.orbitrl.model.spec.ModelSpec spec = ConfigLoader.load(f);
        org.orbitrl.model.arch.DeepseekV3Config c = org.orbitrl.model.arch.DeepseekV3Config.from(spec);
        System.out.printf("model: %s widths from %s, %d layers, hidden %d, %d heads, kv rank %d, %d experts of %d top-%d (INT4"
                        + " g32), vocab %d; LoRA r=32 on the attention and the experts; training %dx%d tokens a step, decode batch %d%n",
                spec.modelType(), configFile, c.layers(), c.hidden(), c.heads(), c.kvLoraRank(), c.experts(), c.moeIntermediate(),
                c.topK(), c.vocab(), batch, len, decodeBatch);
        List<ParallelLayout> layouts = new ArrayList<>();
        layouts.add(ParallelLayout.single());
        for (int n = 2; n <= gpus && c.experts() % n == 0; n *= 2) {
            layouts.add(new ParallelLayout(n, 1, n));
        }
        Figures one = null;
        for (ParallelLayout layout : layouts) {
            List<Figures> ranks;
            try {
                ranks = onGpus(layout.world(), false, (comm, gpu) -> {
                    RankGroups groups = layout.world() == 1 ? null : RankGroups.split(layout, comm);
                    org.orbitrl.model.arch.DeepseekV3Model model = org.orbitrl.model.arch.DeepseekV3Model.load(c,
                            spec.mla().ropeInterleave(), spec.quantization(), new RandomDeepseekV3(c, 1), gpu,
                            Qwen3Model.LoadOptions.full(), groups);
                    model.setExpertChunk(8);
                    AdapterConfig acfg = AdapterConfig.lora(32, 64, List.of("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa",
                            "kv_b_proj", "o_proj"), List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
                    LoraAdapter adapter = LoraAdapter.create(acfg, model, gpu.allocator(), 5);
                    return timeRank(model, adapter, groups, comm, gpu, c.vocab(), batch, len, decodeBatch, baseBytes(gpu));
                });
            } catch (Exception e) {
                System.out.printf("  %s: failed: %s%n", layout, e);
                continue;
            }
            one = report(layout, ranks, one);
        }
    }

    private static String option(List<String> a, String name, String fallback) {
        int i = a.indexOf(name);
        return i >= 0 && i + 1 < a.size() ? a.get(i + 1) : fallback;
    }

    // ---------------------------------------------------------------- part 1: NCCL bandwidth

    private static void commBandwidth(int n) throws Exception {
        onGpus(n, false, (c, b) -> {
            for (long mib : new long[]{8, 64, 256}) {
                long bytes = mib << 20;
                double ar = timed(c, b, bytes, true);
                double a2a = timed(c, b, bytes, false);
                if (c.rank() == 0) {
                    double arBus = bytes * 2.0 * (n - 1) / n / ar / 1e9;
                    double a2aBus = bytes * (double) (n - 1) / n / a2a / 1e9;
                    System.out.printf("  %d GPUs %4d MiB: all-reduce bus %.1f GB/s (%.3f ms), all-to-all %.1f GB/s (%.3f ms),"
                            + " all-to-all / all-reduce %.2f%n", n, mib, arBus, ar * 1e3, a2aBus, a2a * 1e3, a2aBus / arBus);
                }
            }
            return null;
        });
    }

    /** Seconds per collective over {@code bytes}: the mean of 10 after 3 warm-ups, the slowest rank's (a barrier each side). */
    private static double timed(Communicator c, CudaBackend b, long bytes, boolean allReduce) {
        int n = c.size();
        long elems = bytes / 4 / n * n;
        Tensor send = b.allocator().allocate(MemoryCategory.COMM_BUFFERS, DType.F32, elems);
        Tensor recv = b.allocator().allocate(MemoryCategory.COMM_BUFFERS, DType.F32, elems);
        long[] counts = new long[n];
        Arrays.fill(counts, elems / n);
        try {
            long t0 = 0;
            for (int it = 0; it < 13; it++) {
                if (it == 3) {
                    c.barrier();
                    t0 = System.nanoTime();
                }
                if (allReduce) {
                    c.allReduceSum(send);
                } else {
                    c.allToAll(send.reshape(elems, 1), counts, recv.reshape(elems, 1), counts);
                }
            }
            c.barrier();
            Tensor t = b.allocator().upload(MemoryCategory.COMM_BUFFERS, Tensor.of(new float[]{(System.nanoTime() - t0) / 1e9f / 10}, 1));
            // the slowest rank's time: a max through a sum of one-hot slots
            Tensor all = b.allocator().allocate(MemoryCategory.COMM_BUFFERS, DType.F32, n);
            c.allGather(t, all);
            float[] v = b.allocator().toHost(all).toFloatArray();
            b.free(t);
            b.free(all);
            double worst = 0;
            for (float x : v) {
                worst = Math.max(worst, x);
            }
            return worst;
        } finally {
            b.free(send);
            b.free(recv);
        }
    }

    // ---------------------------------------------------------------- part 2: the split model

    private record Figures(double trainTokensPerSec, double decodeTokensPerSec, long peakBytes, long baseBytes, double loss) {
    }

    private static void modelScaling(int gpus, Path configFile, int layers, int batch, int len, int decodeBatch) throws Exception {
        ObjectMapper json = new ObjectMapper();
        ObjectNode cfg = (ObjectNode) json.readTree(configFile.toFile());
        cfg.put("num_hidden_layers", layers);
        Path dir = Files.createTempDirectory("orbit-multigpu-bench");
        Path f = dir.resolve("config.json");
        json.writeValue(f.toFile(), cfg);
        DecoderConfig dc = DecoderConfig.from(ConfigLoader.load(f));
        System.out.printf("model: %s from %s, %d layers, hidden %d, %d/%d heads x %d, %d experts top-%d x %d (INT4 g32), vocab %d;"
                        + " LoRA r=32 on q/k/v/o and the experts; training %dx%d tokens a step, decode batch %d%n",
                dc.modelType(), configFile, dc.layers(), dc.hidden(), dc.heads(), dc.kvHeads(), dc.headDim(), dc.experts(),
                dc.topK(), dc.moeIntermediate(), dc.vocab(), batch, len, decodeBatch);
        List<ParallelLayout> layouts = new ArrayList<>();
        layouts.add(ParallelLayout.single());
        for (int n = 2; n <= gpus; n *= 2) {
            layouts.add(new ParallelLayout(n, 1, n));
            layouts.add(new ParallelLayout(n, n, 1));
            layouts.add(new ParallelLayout(n, n, n));
            layouts.add(new ParallelLayout(n, 1, 1));   // data parallel: every GPU the whole model and its own batch
        }
        Figures one = null;
        for (ParallelLayout layout : layouts) {
            if (dc.kvHeads() % layout.tp() != 0 || dc.experts() % layout.ep() != 0) {
                System.out.printf("  %s: the model does not split that way%n", layout);
                continue;
            }
            List<Figures> ranks;
            try {
                ranks = onGpus(layout.world(), false, (c, b) -> rank(dc, c, b, layout, batch, len, decodeBatch));
            } catch (Exception e) {
                System.out.printf("  %s: failed: %s%n", layout, e);
                continue;
            }
            one = report(layout, ranks, one);
        }
    }

    /** Prints one layout's line against the one-GPU figures (the first reported); returns those. */
    private static Figures report(ParallelLayout layout, List<Figures> ranks, Figures one) {
        Figures r0 = ranks.get(0);
        long peak = ranks.stream().mapToLong(Figures::peakBytes).max().orElse(0);
        long base = ranks.stream().mapToLong(Figures::baseBytes).max().orElse(0);
        Figures ref = one == null ? r0 : one;
        System.out.printf("  %-24s training %7.0f tokens/s (x%.2f of 1 GPU), decode %7.1f tokens/s (x%.2f); per GPU: base "
                        + "%.2f GB, peak %.2f GB (x%.2f); loss %.6f%n", layout.world() == 1 ? "1 GPU"
                        : dataParallel(layout) ? "data parallel x" + layout.world() + ":" : layout + ":",
                r0.trainTokensPerSec, r0.trainTokensPerSec / ref.trainTokensPerSec, r0.decodeTokensPerSec,
                r0.decodeTokensPerSec / ref.decodeTokensPerSec, base / 1e9, peak / 1e9, (double) peak / ref.peakBytes, r0.loss);
        return ref;
    }

    /** Several GPUs, nothing split: each holds the whole model and runs its own batch, the adapter's gradients summed. */
    private static boolean dataParallel(ParallelLayout layout) {
        return layout.world() > 1 && layout.tp() == 1 && layout.ep() == 1;
    }

    /**
     * One GPU's share: load, a timed training step (3 after one warm-up), then a timed decode. Data parallel: the rank's
     * own batch (rank 0 the one GPU's), the figures of all ranks together (each rank's tokens times the ranks).
     */
    private static Figures rank(DecoderConfig dc, Communicator world, CudaBackend gpu, ParallelLayout layout, int batch, int len,
                                int decodeBatch) {
        if (dataParallel(layout)) {
            Qwen3Model model = Qwen3Model.load(dc, new RandomQwen3Moe(dc, 1), gpu, Qwen3Model.LoadOptions.full(), null);
            LoraAdapter adapter = LoraAdapter.create(loraConfig(), model, gpu.allocator(), 5);
            Figures f = timeRank(model, adapter, null, world, gpu, dc.vocab(), batch, len, decodeBatch, baseBytes(gpu));
            int n = layout.world();
            return new Figures(f.trainTokensPerSec() * n, f.decodeTokensPerSec() * n, f.peakBytes(), f.baseBytes(), f.loss());
        }
        RankGroups groups = layout.world() == 1 ? null : RankGroups.split(layout, world);
        // the loader takes this rank's share of the whole model's weights (its blocks, its experts)
        Qwen3Model model = Qwen3Model.load(dc, new RandomQwen3Moe(dc, 1), gpu, Qwen3Model.LoadOptions.full(), groups);
        LoraAdapter adapter = LoraAdapter.create(loraConfig(), model, gpu.allocator(), 5);
        return timeRank(model, adapter, groups, world, gpu, dc.vocab(), batch, len, decodeBatch, baseBytes(gpu));
    }

    private static AdapterConfig loraConfig() {
        return AdapterConfig.lora(32, 64, List.of("q_proj", "k_proj", "v_proj", "o_proj"),
                List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
    }

    /** The base weights' bytes live on the rank's GPU (its allocator's account). */
    private static long baseBytes(CudaBackend gpu) {
        return ((org.orbitrl.kernels.cuda.CudaAllocator) gpu.allocator()).liveBytes(MemoryCategory.BASE_WEIGHTS);
    }

    /** The timed training steps and decode steps of one rank's model. */
    private static Figures timeRank(org.orbitrl.model.arch.Trainable model, LoraAdapter adapter, RankGroups groups,
                                    Communicator world, CudaBackend gpu, int vocab, int batch, int len, int decodeBatch,
                                    long baseBytes) {
        boolean ownBatch = groups == null && world.size() > 1;   // data parallel: each rank its own sequences
        SplittableRandom rnd = new SplittableRandom(ownBatch ? 7 + 1000L * world.rank() : 7);
        List<int[]> seqs = new ArrayList<>();
        for (int s = 0; s < batch; s++) {
            seqs.add(rnd.ints(len, 0, vocab).toArray());
        }
        double loss = 0;
        int steps = 3;
        long t0 = 0;
        for (int i = 0; i <= steps; i++) {
            if (i == 1) {
                sync(world, gpu);
                t0 = System.nanoTime();
            }
            adapter.zeroGrad();
            loss = NextTokenLoss.forwardBackward(model, gpu, seqs, false);
            if (groups != null) {
                AdapterParallel.completeGradients(adapter, groups);
            } else if (ownBatch) {
                AdapterParallel.allReduceGradients(adapter, world);   // every rank the whole batch's gradients
            }
        }
        sync(world, gpu);
        double train = (double) steps * batch * len / ((System.nanoTime() - t0) / 1e9);   // this rank's tokens
        Qwen3TrainBench.releaseGarbage(gpu);
        int prompt = 32;
        int decodeSteps = 32;
        List<KvCache> caches = new ArrayList<>();
        List<CausalLM.Segment> prefill = new ArrayList<>();
        for (int s = 0; s < decodeBatch; s++) {
            KvCache c = model.newCache(prompt + decodeSteps + 2);
            caches.add(c);
            prefill.add(new CausalLM.Segment(rnd.ints(prompt, 0, vocab).toArray(), c));
        }
        gpu.free(model.forward(prefill));
        for (int t = 0; t <= decodeSteps; t++) {   // the first step untimed: its kernels compile on first use
            if (t == 1) {
                sync(world, gpu);
                t0 = System.nanoTime();
            }
            List<CausalLM.Segment> step = new ArrayList<>();
            for (int s = 0; s < decodeBatch; s++) {
                step.add(new CausalLM.Segment(new int[]{rnd.nextInt(vocab)}, caches.get(s)));
            }
            gpu.free(model.forward(step));
        }
        sync(world, gpu);
        double decode = (double) decodeSteps * decodeBatch / ((System.nanoTime() - t0) / 1e9);
        long peak = gpu.allocator().peakBytes();
        model.close();
        return new Figures(train, decode, peak, baseBytes, loss);
    }

    /** Every rank's queued work is done and every rank is here. */
    private static void sync(Communicator world, CudaBackend gpu) {
        gpu.synchronize();
        world.barrier();
    }

    interface RankBody<T> {
        T run(Communicator comm, CudaBackend gpu) throws Exception;
    }

    /**
     * {@code body} on one thread per GPU for GPUs 0..n-1, each with its backend and its communicator of an
     * {@code ncclCommInitAll} world (one GPU: a world of one, no NCCL).
     */
    static <T> List<T> onGpus(int n, boolean exact, RankBody<T> body) throws Exception {
        List<CudaBackend> backends = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            backends.add(new CudaBackend(oneGpuRanks ? 0 : i, CudaBackend.defaultCacheDir(), exact));
        }
        List<Communicator> comms = new ArrayList<>();
        try {
            if (n > 1 && !oneGpuRanks) {   // a failing rank aborts the others' collectives (NcclRanks)
                List<NcclCommunicator> nccl = NcclCommunicator.initAll(backends);
                comms.addAll(nccl);
                return NcclRanks.run(nccl, body::run);
            }
            return org.orbitrl.kernels.comm.LocalRanks.run(n, c -> {
                CudaBackend b = backends.get(c.rank());
                try {
                    return body.run(n > 1 ? new HostStagedRanks(c, b) : c, b);
                } catch (RuntimeException e) {
                    throw e;
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
        } finally {
            comms.forEach(Communicator::close);
            backends.forEach(CudaBackend::close);
        }
    }
}
