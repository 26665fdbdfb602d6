package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * DeepSeek V4 decode steps on the CUDA backend, the path rollout takes for this model ({@code forwardLast} over each
 * sequence's cache, one new token a sequence): V4-Flash's widths ({@code models/deepseek-v4-flash/config.json}) with
 * fewer layers, experts and vocabulary ({@link RandomDeepseekV4}, MXFP4 routed experts; layers 0-1 sliding, 2
 * compressed-sparse, 3 heavily compressed, as released), each sequence prefilled with {@code context} tokens. Per batch,
 * the median of 8 steps ({@code -Dorbit.bench.steps}; host preparation to logits on the device) after 8 untimed ones
 * ({@code -Dorbit.bench.warmup}) and the step against the HBM limit:
 * the bytes a step reads at least (every linear but the routed experts as held, the routed experts of the distinct
 * experts a layer expects under uniform routing, E·(1 − (1 − k/E)^B), the LM head, each sequence's decode state: its
 * window's K=V rows and compressed entries, f32 as held) over the device's copy bandwidth measured in the same run.
 *
 * <p>{@code -Dorbit.bench.adapter=lora}: rollout's adapter, LoRA r=32 on every attention projection, the shared expert
 * and the routed experts (no gradients; the limit counts its tensors). {@code -Dorbit.bench.profile=true}: after the
 * timed steps of each batch, one more step with every backend operation waited for ({@link OpProfiler}) and the calling
 * thread's stack sampled ({@link StackSampler}): where a decode step goes; {@code -Dorbit.bench.sample=true}: four
 * more steps ({@code -Dorbit.bench.sampleSteps}) with the stack sampled alone (the waits of unprofiled steps).
 * {@code -Dorbit.bench.exact=true}: the backend in exact mode. {@code -Dorbit.bench.fp8=true}: the linears the released checkpoints hold in FP8 (block-128, E8M0
 * scales) are FP8 here too ({@link RandomDeepseekV4}); bf16 otherwise. {@code -Dorbit.bench.profilerRange=true}: the
 * driver's profiler range ({@code cuProfilerStart} / {@code Stop}) around the last timed step of each batch, for
 * {@code ncu --profile-from-start off}.
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.DeepseekV4DecodeBench [context] [batches] [layers] [experts] [vocab]</pre>
 */
public final class DeepseekV4DecodeBench {
    private static final int STEPS = Integer.getInteger("orbit.bench.steps", 8);
    /**
     * Untimed steps before each batch's timed ones ({@code -Dorbit.bench.warmup}, 8 by default): the first batch of a run
     * otherwise times steps the JIT has not compiled yet (one warm-up step left batch 1 host-bound and varying by a
     * quarter from run to run).
     */
    private static final int WARMUP = Math.max(1, Integer.getInteger("orbit.bench.warmup", 8));
    /** Steps {@code -Dorbit.bench.sample=true} samples ({@code -Dorbit.bench.sampleSteps}, 4 by default). */
    private static final int SAMPLED = Math.max(1, Integer.getInteger("orbit.bench.sampleSteps", 4));

    private DeepseekV4DecodeBench() {
    }

    public static void main(String[] args) throws Exception {
        int context = args.length > 0 ? Integer.parseInt(args[0]) : 1024;
        int[] batches = Arrays.stream((args.length > 1 ? args[1] : "1,8,32").split(",")).mapToInt(Integer::parseInt).toArray();
        int layers = args.length > 2 ? Integer.parseInt(args[2]) : 4;
        int experts = args.length > 3 ? Integer.parseInt(args[3]) : 64;
        int vocab = args.length > 4 ? Integer.parseInt(args[4]) : 32768;
        if (!Cuda.available()) {
            System.out.println("DeepseekV4DecodeBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        ModelSpec spec = ConfigLoader.load(DeepseekV4StepBench.config(layers, experts, vocab));
        boolean exact = Boolean.getBoolean("orbit.bench.exact");
        boolean profile = Boolean.getBoolean("orbit.bench.profile");
        boolean fp8 = Boolean.getBoolean("orbit.bench.fp8");
        boolean range = Boolean.getBoolean("orbit.bench.profilerRange");
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), exact)) {
            long t0 = System.nanoTime();
            DeepseekV4Model model = DeepseekV4Model.load(spec, new RandomDeepseekV4(spec, 7, fp8), gpu);
            long adapterBytes = 0;
            if ("lora".equals(System.getProperty("orbit.bench.adapter", "none"))) {
                AdapterConfig lora = AdapterConfig.lora(32, 64, List.of("q_a_proj", "q_b_proj", "kv_proj", "o_b_proj",
                        "gate_proj", "up_proj", "down_proj"), List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
                LoraAdapter adapter = LoraAdapter.create(lora, model, gpu.allocator(), 11, false);
                for (Adapter.Param p : adapter.params()) {
                    adapterBytes += p.value().byteSize();
                }
                System.out.printf("LoRA r=32 on the attention, the shared and the routed experts: %d tensors, %.1f MB%n",
                        adapter.params().size(), adapterBytes / 1e6);
            }
            System.out.printf("device %s; DeepSeek V4 decode at V4-Flash's widths: %d layers (%s), %d experts of %d (top %d),"
                            + " vocabulary %d, %s linears, %s kernels; built in %.1f s; context %d tokens a sequence; %d steps"
                            + " a row, median%n", gpu.device(), layers,
                    java.util.stream.IntStream.range(0, layers).mapToObj(spec::attentionKind).toList(), experts,
                    spec.moe().moeIntermediateSize(), spec.moe().topK(), vocab, fp8 ? "FP8 block-128" : "bf16",
                    exact ? "exact" : "default",
                    (System.nanoTime() - t0) / 1e9, context, STEPS);
            double copy = org.orbitrl.model.arch.DeepseekMoeBench.copyBandwidth(gpu);
            System.out.printf("copy bandwidth %.0f GB/s (device to device, read + write)%n", copy);
            System.out.println("| batch | step | tokens/s | bytes a step | of the HBM limit |");
            System.out.println("|---|---|---|---|---|");
            List<String> profiles = new ArrayList<>();
            for (int batch : batches) {
                List<KvCache> caches = prefill(model, batch, context);
                SplittableRandom r = new SplittableRandom(1_000_003L * batch + 17);
                double[] ms = new double[STEPS];
                double bytes = 0;
                for (int i = 0; i < WARMUP + STEPS; i++) {
                    int timed = i - WARMUP;   // negative: a warm-up step
                    if (timed == STEPS / 2) {
                        bytes = bytesPerStep(model, caches, batch) + adapterBytes;
                    }
                    if (range && timed == STEPS - 1) {
                        profiler("cuProfilerStart");
                    }
                    double t = step(gpu, model, caches, r);
                    if (timed >= 0) {
                        ms[timed] = t;
                    }
                    if (range && timed == STEPS - 1) {
                        profiler("cuProfilerStop");
                    }
                }
                Arrays.sort(ms);
                double median = ms[STEPS / 2];
                double limitMs = bytes / (copy * 1e9) * 1e3;
                System.out.printf("| %d | %.3f ms | %.0f | %.1f MB | %.4f |%n", batch, median, batch / (median / 1e3),
                        bytes / 1e6, limitMs / median);
                if (Boolean.getBoolean("orbit.bench.sample")) {   // the host thread of unprofiled steps: where it waits
                    long start = System.nanoTime();
                    String samples = StackSampler.sample(() -> {
                        for (int i = 0; i < SAMPLED; i++) {
                            step(gpu, model, caches, r);
                        }
                    }, 40);
                    profiles.add(String.format("batch %d, %d steps sampled: %.1f ms%n%s", batch, SAMPLED,
                            (System.nanoTime() - start) / 1e6, samples));
                }
                if (profile) {
                    OpProfiler prof = OpProfiler.wrap(gpu, gpu::synchronize);
                    DeepseekV4Model viewed = model.view(prof.backend());
                    long start = System.nanoTime();
                    String samples = StackSampler.sample(() -> step(gpu, viewed, caches, r), 30);
                    profiles.add(String.format("batch %d, one step profiled: %.1f ms (every operation waited for)%n%s%n%s",
                            batch, (System.nanoTime() - start) / 1e6, prof.report(30), samples));
                }
            }
            profiles.forEach(System.out::println);
        }
    }

    /** The driver's {@code cuProfilerStart} or {@code cuProfilerStop} (not in the JavaCPP presets; through the FFM linker). */
    private static void profiler(String call) {
        try {
            var lookup = java.lang.foreign.SymbolLookup.libraryLookup("libcuda.so.1", java.lang.foreign.Arena.global());
            var handle = java.lang.foreign.Linker.nativeLinker().downcallHandle(lookup.find(call).orElseThrow(),
                    java.lang.foreign.FunctionDescriptor.of(java.lang.foreign.ValueLayout.JAVA_INT));
            int rc = (int) handle.invokeExact();
            if (rc != 0) {
                throw new IllegalStateException(call + " returned " + rc);
            }
        } catch (Throwable e) {
            throw new IllegalStateException(call, e);
        }
    }

    /** One decode step of every sequence (a random token each), host preparation to logits on the device, in ms. */
    private static double step(CudaBackend gpu, DeepseekV4Model model, List<KvCache> caches, SplittableRandom r) {
        List<CausalLM.Segment> segs = new ArrayList<>();
        for (KvCache c : caches) {
            segs.add(new CausalLM.Segment(new int[]{r.nextInt(model.vocabSize())}, c));
        }
        gpu.synchronize();
        long t = System.nanoTime();
        Tensor logits = model.forwardLast(segs);
        gpu.synchronize();
        double ms = (System.nanoTime() - t) / 1e6;
        gpu.allocator().release(logits);
        return ms;
    }

    /** The batch's caches, each prefilled with {@code context} random tokens, one sequence a forward. */
    private static List<KvCache> prefill(DeepseekV4Model model, int batch, int context) {
        List<KvCache> caches = new ArrayList<>();
        SplittableRandom r = new SplittableRandom(batch);
        for (int b = 0; b < batch; b++) {
            KvCache c = model.newCache(context + WARMUP + STEPS + SAMPLED + 4);   // and the sampled and profiled steps
            caches.add(c);
            int[] prompt = r.ints(context, 0, model.vocabSize()).toArray();
            model.backend().allocator().release(model.forwardLast(List.of(new CausalLM.Segment(prompt, c))));
        }
        return caches;
    }

    /** The bytes a decode step of the batch reads at least (see the class note). */
    static double bytesPerStep(DeepseekV4Model model, List<KvCache> caches, int batch) {
        ModelSpec s = model.spec();
        double total = model.heldBaseBytes() - 2.0 * s.vocabSize() * s.hiddenSize();   // the embedding: a row a token
        int e = s.moe().numExperts();
        double distinct = e * (1 - Math.pow(1 - (double) s.moe().topK() / e, batch));
        for (AdapterTargets.ExpertSet set : model.expertSets()) {
            double all = 0;
            for (List<Linear> part : List.of(set.gate(), set.up(), set.down())) {
                for (Linear lin : part) {
                    all += lin.weight().byteSize();
                }
            }
            total -= all * (1 - distinct / e);
        }
        for (KvCache c : caches) {
            for (int l = 0; l < model.layers(); l++) {
                total += model.stateBytes(c, l);
            }
        }
        return total;
    }
}
