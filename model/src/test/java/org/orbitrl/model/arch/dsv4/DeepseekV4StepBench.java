package org.orbitrl.model.arch.dsv4;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * A DeepSeek V4 training step (forward, a gradient of the logits, the adapter-only backward) on the CUDA backend at
 * DeepSeek-V4-Flash's widths ({@code models/deepseek-v4-flash/config.json}: hidden 4096, 64 heads of 512, q and o
 * ranks 1024 in 8 groups, hc 4, MXFP4 experts of 2048, top 6), with fewer layers, experts and vocabulary (arguments):
 * layers 0-1 sliding, 2 compressed-sparse, 3 heavily compressed, as in the release, random weights
 * ({@link RandomDeepseekV4}), LoRA r=32 on every attention projection, the shared expert and the routed experts. One
 * sequence of T tokens a step. Three forms in one run, each the median of its steps after one warm-up step:
 * V4's values kept in device memory between operations with recompute (the default), the same with every layer on
 * the tape, and every value copied back to the host after each operation with every layer on the tape (the form
 * before values stayed on the device); and the device memory each form's tape holds when its backward starts.
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.DeepseekV4StepBench tokens,... [layers] [experts] [vocab] [steps] [copiedUpTo]</pre>
 *
 * <p>{@code -Dorbit.bench.profile=true}: instead, where one step of the first token count goes.
 * {@code -Dorbit.bench.peak=true}: instead, the device's peak bytes of activations and logits over two steps of each
 * token count (ascending), with recompute ({@code -Dorbit.bench.taped=true}: every layer taped; {@code
 * -Dorbit.bench.chunk=C}: the experts dequantized C at a time, as a job's {@code expert_chunk}; {@code
 * -Dorbit.bench.offload=true}: the recomputed layers' inputs in host memory), to set beside the
 * memory planner's (with {@code -Dorbit.cuda.peakSites=true}, the activations at the peak by allocating call site).
 * {@code -Dorbit.bench.exact=true}: the backend in exact mode (with {@code -Dorbit.cuda.mqa=off} too: the attention
 * and the indexer's scores on the host, as exact mode ran them before its kernels).
 */
public final class DeepseekV4StepBench {
    private DeepseekV4StepBench() {
    }

    public static void main(String[] args) throws Exception {
        int[] tokens = Arrays.stream((args.length > 0 ? args[0] : "512,2048,4096").split(",")).mapToInt(Integer::parseInt).toArray();
        int layers = args.length > 1 ? Integer.parseInt(args[1]) : 4;
        int experts = args.length > 2 ? Integer.parseInt(args[2]) : 64;
        int vocab = args.length > 3 ? Integer.parseInt(args[3]) : 32768;
        int steps = args.length > 4 ? Integer.parseInt(args[4]) : 3;
        int copiedUpTo = args.length > 5 ? Integer.parseInt(args[5]) : 2048;   // the copied form's steps are long
        if (!Cuda.available()) {
            System.out.println("DeepseekV4StepBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        ModelSpec spec = ConfigLoader.load(config(layers, experts, vocab));
        System.out.printf("DeepSeek V4 training step at V4-Flash's widths: %d layers (%s), %d experts of %d (top %d), "
                        + "vocabulary %d, LoRA r=32; one sequence a step, median of %d steps%n", layers,
                java.util.stream.IntStream.range(0, layers).mapToObj(i -> spec.attentionKind(i) + "/" + spec.mlpKind(i))
                        .toList(), experts, spec.moe().moeIntermediateSize(), spec.moe().topK(), vocab, steps);
        boolean exact = Boolean.getBoolean("orbit.bench.exact");
        if (exact) {
            System.out.println("exact mode, the attention and the indexer's scores on the "
                    + ("off".equals(System.getProperty("orbit.cuda.mqa")) ? "host" : "device"));
        }
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), exact)) {
            long t0 = System.nanoTime();
            DeepseekV4Model model = DeepseekV4Model.load(spec, new RandomDeepseekV4(spec, 7), gpu);
            AdapterConfig lora = AdapterConfig.lora(32, 64, List.of("q_a_proj", "q_b_proj", "kv_proj", "o_b_proj",
                    "gate_proj", "up_proj", "down_proj"), List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
            LoraAdapter adapter = LoraAdapter.create(lora, model, gpu.allocator(), 11);
            System.out.printf("loaded in %.1f s; %d adapter tensors%n", (System.nanoTime() - t0) / 1e9, adapter.params().size());
            System.out.println("| tokens | values on the device, recompute | on the device, every layer taped | copied back after each op, every layer taped | copied / on the device | device GB held after the forward (the three) |");
            System.out.println("|---|---|---|---|---|---|");
            if (Boolean.getBoolean("orbit.bench.profile")) {
                profile(gpu, model, tokens[0]);
                return;
            }
            if (Boolean.getBoolean("orbit.bench.peak")) {   // ascending token counts: each peak is that count's
                boolean recompute = !Boolean.getBoolean("orbit.bench.taped");
                model.setExpertChunk(Integer.getInteger("orbit.bench.chunk", 0));
                boolean offload = Boolean.getBoolean("orbit.bench.offload");
                model.setOffloadedInputs(offload);
                CudaAllocator alloc = (CudaAllocator) gpu.allocator();
                for (int t : tokens) {
                    double[] r = time(gpu, model, adapter, t, 1, true, recompute);
                    System.out.printf("peak device bytes, %d tokens, %s: activations %d, logits %d; the step %.1f ms%n", t,
                            recompute ? "recompute" + (offload ? ", inputs offloaded" : "") : "every layer taped",
                            alloc.peakBytes(MemoryCategory.ACTIVATIONS), alloc.peakBytes(MemoryCategory.LOGITS), r[0]);
                    for (var site : alloc.peakSites(MemoryCategory.ACTIVATIONS).stream().limit(30).toList()) {
                        System.out.printf("  %,15d B in %4d allocations: %s%n", site.bytes(), site.allocations(), site.site());
                    }
                }
                return;
            }
            for (int t : tokens) {
                double[] a = time(gpu, model, adapter, t, steps, true, true);
                double[] b = time(gpu, model, adapter, t, steps, true, false);
                if (t > copiedUpTo) {
                    System.out.printf("| %d | %.1f ms | %.1f ms | | | %.1f / %.1f / |%n", t, a[0], b[0], a[1], b[1]);
                    continue;
                }
                double[] c = time(gpu, model, adapter, t, steps, false, false);
                System.out.printf("| %d | %.1f ms | %.1f ms | %.1f ms | %.1fx | %.1f / %.1f / %.1f |%n", t, a[0], b[0], c[0],
                        c[0] / Math.min(a[0], b[0]), a[1], b[1], c[1]);
            }
        } finally {
            Ops.deviceValues = true;
        }
    }

    /**
     * The median ms of a step and the device memory (GB) the forward's tape holds when the backward starts: the
     * allocator's live bytes then, less those before the forward, unreachable allocations collected first.
     */
    private static double[] time(Backend b, DeepseekV4Model model, LoraAdapter adapter, int t, int steps,
                                 boolean deviceValues, boolean recompute) {
        Ops.deviceValues = deviceValues;
        CudaAllocator alloc = (CudaAllocator) b.allocator();
        SplittableRandom r = new SplittableRandom(t);
        int[] ids = r.ints(t, 2, model.vocabSize()).toArray();
        double[] ms = new double[steps];
        long held = 0;
        for (int s = -1; s < steps; s++) {
            adapter.zeroGrad();
            System.gc();
            long base = live(alloc);
            long start = System.nanoTime();
            Trainable.Tape tape = model.forwardTrain(List.of(ids), recompute);
            Tensor logits = tape.logits();
            if (s == -1) {
                held = live(alloc) - base;
            }
            float[] d = new float[Math.toIntExact(logits.numel())];
            for (int i = 0; i < d.length; i += 97) {
                d[i] = 1e-3f;
            }
            model.backward(tape, b.allocator().uploadFloats(MemoryCategory.LOGITS, d, logits.shape()));   // as a trainer's
            b.allocator().toFloats(adapter.params().get(0).grad());   // waits for the step's work
            tape.release(b.allocator());   // as a trainer does after its backward
            if (s >= 0) {
                ms[s] = (System.nanoTime() - start) / 1e6;
            }
        }
        Arrays.sort(ms);
        return new double[]{ms[steps / 2], held / 1e9};
    }

    /** Live device bytes once the collector's unreachable allocations are freed (an allocation frees them). */
    private static long live(CudaAllocator alloc) {
        System.gc();
        try {
            Thread.sleep(100);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        alloc.release(alloc.allocate(MemoryCategory.ACTIVATIONS, org.orbitrl.kernels.DType.F32, 1));
        return alloc.liveBytes();
    }

    /**
     * Where one step of t tokens goes (values on the device, recompute, no adapter): every backend operation waited for
     * ({@link org.orbitrl.kernels.OpProfiler}), and the calling thread's stack sampled every millisecond, counted by its
     * innermost frames of the model's code.
     */
    private static void profile(CudaBackend gpu, DeepseekV4Model model, int t) {
        org.orbitrl.kernels.OpProfiler prof = org.orbitrl.kernels.OpProfiler.wrap(gpu, gpu::synchronize);
        DeepseekV4Model viewed = model.view(prof.backend());
        int[] ids = new SplittableRandom(t).ints(t, 2, model.vocabSize()).toArray();
        Runnable step = () -> {
            Trainable.Tape tape = viewed.forwardTrain(List.of(ids), true);
            Tensor logits = tape.logits();
            float[] d = new float[Math.toIntExact(logits.numel())];
            for (int i = 0; i < d.length; i += 97) {
                d[i] = 1e-3f;
            }
            viewed.backward(tape, gpu.allocator().uploadFloats(MemoryCategory.ACTIVATIONS, d, logits.shape()));
            gpu.synchronize();
        };
        step.run();
        prof.reset();
        long start = System.nanoTime();
        String samples = StackSampler.sample(step, 30);
        System.out.printf("profiled step of %d tokens: %.1f ms (every operation waited for)%n%s%n%s", t,
                (System.nanoTime() - start) / 1e6, prof.report(30), samples);
    }

    /** V4-Flash's config with {@code layers} layers (sliding, sliding, compressed-sparse, heavily compressed, ...). */
    static Path config(int layers, int experts, int vocab) throws java.io.IOException {
        Path models = Path.of(System.getProperty("orbit.models", "../shared/models"));
        ObjectMapper json = new ObjectMapper();
        ObjectNode cfg = (ObjectNode) json.readTree(models.resolve("deepseek-v4-flash/config.json").toFile());
        ArrayNode ratios = (ArrayNode) cfg.get("compress_ratios");
        ArrayNode kept = json.createArrayNode();
        for (int i = 0; i <= layers && i < ratios.size(); i++) {
            kept.add(ratios.get(i));
        }
        cfg.set("compress_ratios", kept);
        cfg.put("num_hidden_layers", layers);
        cfg.put("n_routed_experts", experts);
        cfg.put("vocab_size", vocab);
        cfg.put("max_position_embeddings", 65536);
        Path dir = Files.createTempDirectory("v4-step-bench");
        json.writeValue(dir.resolve("config.json").toFile(), cfg);
        return dir;
    }
}
