package org.orbitrl.scheduler.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.PeakSites;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.DeepseekV3Config;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * The device memory of a DeepSeek-V3 / Kimi-K2 training step (multi-head latent attention) beside the memory planner's
 * prediction: a model of a released {@code config.json}'s widths (Kimi-K2.6's by default; a multimodal config's
 * {@code text_config}) with fewer layers, experts and vocabulary, random weights ({@link RandomDeepseekV3}: INT4 routed
 * experts as released, the rest bf16), LoRA r=32 (f32) on the latent attention's projections and the routed experts,
 * the experts dequantized {@code chunk} at a time. For each token count (one sequence, ascending, so each peak is that
 * count's) a warm-up step and a measured one (forward, next-token loss, adapter-only backward); it prints the CUDA
 * allocator's peak of activations and logits and the planner's for a training GPU of the same shape
 * ({@link TrainBenchPlan}: kernel scratch included), and with {@code -Dorbit.cuda.peakSites=true} the activations at
 * the peak by allocating call site.
 *
 * <pre>java ... org.orbitrl.scheduler.bench.MlaTrainPeakBench CONFIG_JSON [tokens,...] [layers] [experts] [vocab] [chunk] [recompute] [offload]</pre>
 */
public final class MlaTrainPeakBench {
    private MlaTrainPeakBench() {
    }

    public static void main(String[] args) throws Exception {
        Path config = Path.of(args.length > 0 ? args[0] : "../shared/models/kimi-k2.6/config.json");
        int[] tokens = Arrays.stream((args.length > 1 ? args[1] : "2048,4096").split(",")).mapToInt(Integer::parseInt).toArray();
        int layers = args.length > 2 ? Integer.parseInt(args[2]) : 3;
        int experts = args.length > 3 ? Integer.parseInt(args[3]) : 16;
        int vocab = args.length > 4 ? Integer.parseInt(args[4]) : 32768;
        int chunk = args.length > 5 ? Integer.parseInt(args[5]) : 8;
        boolean recompute = args.length <= 6 || Boolean.parseBoolean(args[6]);
        boolean offload = args.length > 7 && Boolean.parseBoolean(args[7]);
        if (!Cuda.available()) {
            System.out.println("MlaTrainPeakBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path cfgFile = shape(config, layers, experts, vocab);
        ModelSpec spec = ConfigLoader.load(cfgFile);
        DeepseekV3Config c = DeepseekV3Config.from(spec);
        try (CudaBackend gpu = new CudaBackend()) {
            TrainBenchPlan.forDevice(gpu);
            long t0 = System.nanoTime();
            DeepseekV3Model model = DeepseekV3Model.load(c, spec.mla().ropeInterleave(), spec.quantization(),
                    new RandomDeepseekV3(c, 1), gpu, Qwen3Model.LoadOptions.full());
            model.setExpertChunk(chunk);
            model.setOffloadedInputs(offload);
            LoraAdapter adapter = LoraAdapter.create(AdapterConfig.lora(32, 64, List.of("q_a_proj", "q_b_proj",
                    "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"), List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj")),
                    model, gpu.allocator(), 5);
            System.out.printf("%s widths: %d layers (the first %s dense), hidden %d, %d heads, kv rank %d, %d experts of %d top-%d, "
                            + "vocabulary %d; LoRA r=32 on the attention and the routed experts (%d tensors); expert chunk %d; "
                            + "recompute %s; built in %.1f s%n", spec.modelType(), c.layers(), spec.moe().firstKDenseReplace(),
                    c.hidden(), c.heads(), c.kvLoraRank(), c.experts(), c.moeIntermediate(), c.topK(), c.vocab(),
                    adapter.params().size(), chunk, recompute + (offload ? ", inputs offloaded" : ""),
                    (System.nanoTime() - t0) / 1e9);
            CudaAllocator alloc = (CudaAllocator) gpu.allocator();
            for (int t : tokens) {
                List<int[]> seqs = List.of(new SplittableRandom(t).ints(t, 0, c.vocab()).toArray());
                double ms = 0;
                for (int i = 0; i < 2; i++) {
                    Qwen3TrainBench.releaseGarbage(gpu);
                    adapter.zeroGrad();
                    long s0 = System.nanoTime();
                    NextTokenLoss.forwardBackward(model, gpu, seqs, recompute);
                    gpu.allocator().toHost(adapter.params().get(0).grad());   // waits for the step's work
                    ms = (System.nanoTime() - s0) / 1e6;
                }
                System.out.printf("%d tokens: the step %.1f ms%n", t, ms);
                Map<MemoryCategory, Long> planned = TrainBenchPlan.predict(spec, cfgFile, 1, t, recompute, chunk, 0, offload);
                for (MemoryCategory m : List.of(MemoryCategory.ACTIVATIONS, MemoryCategory.LOGITS)) {
                    long got = alloc.peakBytes(m);
                    long p = planned == null ? 0 : planned.get(m);
                    System.out.printf("%d tokens: peak %s %,d B, planned %,d B (%.3f)%n", t, m.name().toLowerCase(), got, p,
                            p / (double) got);
                }
                if (PeakSites.enabled()) {
                    for (PeakSites.Site s : alloc.peakSites(MemoryCategory.ACTIVATIONS).stream().limit(30).toList()) {
                        System.out.printf("  %,15d B in %4d allocations: %s%n", s.bytes(), s.allocations(), s.site());
                    }
                }
            }
        }
    }

    /** The config with {@code layers} layers, {@code experts} routed experts and {@code vocab} tokens, in a new folder. */
    static Path shape(Path config, int layers, int experts, int vocab) throws java.io.IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = (ObjectNode) json.readTree(config.toFile());
        ObjectNode cfg = root.has("text_config") ? (ObjectNode) root.get("text_config") : root;
        cfg.put("num_hidden_layers", layers);
        cfg.put("n_routed_experts", experts);
        cfg.put("vocab_size", vocab);
        if (cfg.path("n_group").asInt(1) > 1) {
            cfg.put("n_group", 1);
            cfg.put("topk_group", 1);
        }
        Path dir = Files.createTempDirectory("mla-train-peak");
        json.writeValue(dir.resolve("config.json").toFile(), cfg);
        return dir.resolve("config.json");
    }
}
