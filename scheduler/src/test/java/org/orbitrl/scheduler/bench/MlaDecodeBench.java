package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.CapturedStep;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.NotCapturableException;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3Config;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.DecodeStep;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.kv.PagedSequence;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Decode steps of a DeepSeek-V3 / Kimi-K2 model, the path rollout takes: a model of a released {@code config.json}'s
 * widths (Kimi-K2.6's by default) with fewer layers, routed experts and vocabulary ({@link RandomDeepseekV3}: INT4 routed
 * experts as released, the rest bf16), its sequences in a bf16 latent pool, each holding {@code context} keys. Per batch,
 * the median of 8 steps (host preparation to logits on the device) in three forms on forks of the same prefilled
 * sequences: the decode-step form captured and replayed ({@link DeepseekV3Model#decodeStep}, as rollout's
 * {@code DecodeGraphs} runs it), the same forward eager, and eager with the latent attention gathered sequence by
 * sequence ({@code -Dorbit.cuda.pagedMla=off}: each sequence's keys copied out and attended to in turn, as every decode
 * step did before the paged latent kernel). A form that cannot be captured is reported as eager. The captured step's
 * time is also given against the HBM limit: the bytes a step reads at least (every attention and dense weight, the
 * shared experts and the router in bf16, the routed experts' INT4 codes and bf16 group scales for the distinct experts a
 * layer expects under uniform routing, E·(1 − (1 − k/E)^B), each sequence's latent entries, the LM head) over the
 * device's copy bandwidth measured in the same run.
 *
 * <p>With {@code -Dorbit.bench.adapter=lora} the model carries rollout's kind of adapter, LoRA r=32 on every attention
 * projection (q_a, q_b, kv_a, kv_b, o; no gradients), and the gathered column gives way to the captured step with
 * kv_b's LoRA merged into its matrix in every layer of every step ({@code -Dorbit.mla.kvbTerms=merged}, the form the
 * absorbed attention had before it added the terms per head). The HBM limit then counts the adapter's tensors too.
 *
 * <pre>java ... org.orbitrl.scheduler.bench.MlaDecodeBench CONFIG_JSON [context] [batches] [layers] [experts] [vocab]</pre>
 */
public final class MlaDecodeBench {
    private static final int STEPS = 8;
    private static final int BLOCK = 16;

    private MlaDecodeBench() {
    }

    public static void main(String[] args) throws Exception {
        Path config = Path.of(args.length > 0 ? args[0] : "../shared/models/kimi-k2.6/config.json");
        int context = args.length > 1 ? Integer.parseInt(args[1]) : 1024;
        int[] batches = Arrays.stream((args.length > 2 ? args[2] : "1,8,64").split(",")).mapToInt(Integer::parseInt).toArray();
        int layers = args.length > 3 ? Integer.parseInt(args[3]) : 4;
        int experts = args.length > 4 ? Integer.parseInt(args[4]) : 64;
        int vocab = args.length > 5 ? Integer.parseInt(args[5]) : 32768;
        if (!Cuda.available()) {
            System.out.println("MlaDecodeBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path cfgFile = MlaTrainPeakBench.shape(config, layers, experts, vocab);
        ModelSpec spec = ConfigLoader.load(cfgFile);
        DeepseekV3Config c = DeepseekV3Config.from(spec);
        try (CudaBackend gpu = new CudaBackend()) {
            long t0 = System.nanoTime();
            DeepseekV3Model model = DeepseekV3Model.load(c, spec.mla().ropeInterleave(), spec.quantization(),
                    new RandomDeepseekV3(c, 1), gpu, Qwen3Model.LoadOptions.full());
            boolean lora = "lora".equals(System.getProperty("orbit.bench.adapter", "none"));
            long adapterBytes = 0;
            if (lora) {
                LoraAdapter adapter = LoraAdapter.create(AdapterConfig.lora(32, 64, List.of("q_a_proj", "q_b_proj",
                        "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"), List.of()), model, gpu.allocator(), 5, false);
                for (Adapter.Param p : adapter.params()) {
                    adapterBytes += p.value().byteSize();
                }
                System.out.printf("LoRA r=32 on q_a, q_b, kv_a, kv_b and o: %d tensors, %.1f MB%n", adapter.params().size(),
                        adapterBytes / 1e6);
            }
            System.out.printf("device %s; %s widths: %d layers (the first %s dense), hidden %d, %d heads, latent %d + rope %d, %d"
                            + " experts of %d top-%d, vocabulary %d; built in %.1f s; context %d keys a sequence in a bf16 latent"
                            + " pool; %d steps a row, median%n", gpu.device(), spec.modelType(), c.layers(),
                    spec.moe().firstKDenseReplace(), c.hidden(), c.heads(), c.kvLoraRank(), c.qkRope(), c.experts(),
                    c.moeIntermediate(), c.topK(), c.vocab(), (System.nanoTime() - t0) / 1e9, context, STEPS);
            double copy = ModelDecodeBench.copyBandwidth(gpu);
            System.out.printf("copy bandwidth %.0f GB/s (device to device, read + write)%n", copy);
            CausalLM.CacheGeometry g = model.cacheGeometry();
            int most = Arrays.stream(batches).max().orElse(1);
            int perSequence = (context + STEPS + 2 + BLOCK - 1) / BLOCK + 1;
            BlockPool pool = new BlockPool(gpu.allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), BLOCK,
                    most * 2 * perSequence, true, DType.BF16);
            System.out.println(lora
                    ? "| batch | captured step | tokens/s | of the HBM limit | eager | captured, kv_b's LoRA merged every step |"
                    + " merged vs per head |"
                    : "| batch | captured step | tokens/s | of the HBM limit | eager | gathered attention, eager |"
                    + " captured vs gathered |");
            System.out.println("|---|---|---|---|---|---|---|");
            for (int batch : batches) {
                List<PagedSequence> prefilled = prefill(model, pool, c, batch, context);
                try {
                    double[] graph = run(gpu, model, pool, c, prefilled, context, true);
                    double[] eager = run(gpu, model, pool, c, prefilled, context, false);
                    double[] gathered;
                    String property = lora ? "orbit.mla.kvbTerms" : "orbit.cuda.pagedMla";
                    System.setProperty(property, lora ? "merged" : "off");
                    try {
                        gathered = run(gpu, model, pool, c, prefilled, context, lora);
                    } finally {
                        System.clearProperty(property);
                    }
                    double limitMs = (bytesPerStep(c, batch, context + STEPS / 2) + adapterBytes) / (copy * 1e9) * 1e3;
                    System.out.printf("| %d | %.3f ms (%s) | %.0f | %.3f | %.3f ms | %.3f ms | %.2fx |%n", batch, graph[0],
                            graph[1] > 0 ? "graph" : "eager", batch / (graph[0] / 1e3), limitMs / graph[0], eager[0], gathered[0],
                            gathered[0] / graph[0]);
                } finally {
                    prefilled.forEach(PagedSequence::close);
                }
            }
        }
    }

    /** The bytes a decode step of {@code batch} sequences of {@code keys} keys each reads at least (see the class note). */
    static double bytesPerStep(DeepseekV3Config c, int batch, int keys) {
        double h = c.hidden();
        double heads = c.heads();
        double q = c.qLoraRank() > 0 ? h * c.qLoraRank() + (double) c.qLoraRank() * heads * c.qkHeadDim() : h * heads * c.qkHeadDim();
        double attention = 2 * (q + h * c.cacheWidth() + (double) c.kvLoraRank() * heads * (c.qkNope() + c.vHeadDim())
                + heads * c.vHeadDim() * h);
        double expertParams = 3.0 * h * c.moeIntermediate();
        double expert = expertParams / 2 + expertParams / 32 * 2;                       // INT4 codes, bf16 group scales
        double distinct = c.experts() * (1 - Math.pow(1 - (double) c.topK() / c.experts(), batch));
        double cache = (double) batch * keys * c.cacheWidth() * 2;                      // bf16 latent entries
        double total = 2.0 * c.vocab() * h;                                             // the LM head
        for (int l = 0; l < c.layers(); l++) {
            total += attention + cache;
            total += c.isMoe(l) ? 2 * h * c.experts() + 2 * 3 * h * c.sharedInter() + distinct * expert
                    : 2 * 3 * h * c.intermediate();
        }
        return total;
    }

    /** The batch's sequences, each prefilled with {@code context} random tokens, one sequence a forward. */
    private static List<PagedSequence> prefill(DeepseekV3Model model, BlockPool pool, DeepseekV3Config c, int batch, int context) {
        List<PagedSequence> seqs = new ArrayList<>();
        SplittableRandom r = new SplittableRandom(batch);
        for (int b = 0; b < batch; b++) {
            PagedSequence s = new PagedSequence(pool);
            seqs.add(s);
            int[] prompt = r.ints(context, 0, c.vocab()).toArray();
            model.backend().allocator().release(model.forwardLast(List.of(new CausalLM.Segment(prompt, s))));
        }
        return seqs;
    }

    /**
     * {median ms a step, 1 if replayed as a graph else 0} of {@code STEPS} decode steps (after one that warms up and
     * captures) on forks of the prefilled sequences; the same tokens in every run of a batch.
     */
    private static double[] run(CudaBackend gpu, DeepseekV3Model model, BlockPool pool, DeepseekV3Config c,
                                List<PagedSequence> prefilled, int context, boolean captured) {
        int batch = prefilled.size();
        List<PagedSequence> seqs = new ArrayList<>();
        SplittableRandom r = new SplittableRandom(1_000_003L * batch + 17);
        CapturedStep graph = null;
        boolean replayed = captured;
        try {
            for (PagedSequence base : prefilled) {
                seqs.add(base.fork());
            }
            int width = PagedDecode.tableWidth((context + STEPS + 2 + BLOCK - 1) / BLOCK);
            DecodeStep step = captured ? model.decodeStep(pool, null, batch, width) : null;
            replayed &= step != null;
            double[] ms = new double[STEPS];
            for (int i = 0; i < STEPS + 1; i++) {
                List<CausalLM.Segment> segs = new ArrayList<>();
                for (PagedSequence s : seqs) {
                    segs.add(new CausalLM.Segment(new int[]{r.nextInt(c.vocab())}, s));
                }
                gpu.synchronize();
                long t = System.nanoTime();
                if (replayed) {
                    step.prepare(segs);
                    try {
                        if (graph == null) {
                            graph = gpu.captureStep(step::run);
                        }
                        graph.replay();
                        step.finish(segs);
                    } catch (NotCapturableException e) {
                        System.out.println("batch " + batch + ": not capturable (" + e.getMessage() + "); eager");
                        replayed = false;
                    }
                }
                if (!replayed) {
                    Tensor logits = model.forward(segs);
                    model.backend().allocator().release(logits);
                }
                gpu.synchronize();
                if (i > 0) {
                    ms[i - 1] = (System.nanoTime() - t) / 1e6;
                }
            }
            Arrays.sort(ms);
            return new double[]{ms[STEPS / 2], replayed ? 1 : 0};
        } finally {
            if (graph != null) {
                graph.close();
            }
            seqs.forEach(PagedSequence::close);
        }
    }
}
