package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.BaseFormat;
import org.orbitrl.memory.plan.BatchShape;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.OftAdapter;
import org.orbitrl.model.adapter.OftSettings;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightSource;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.AdamWConfig;
import org.orbitrl.scheduler.rl.LearningRateSchedule;
import org.orbitrl.scheduler.rl.Parameter;
import org.orbitrl.scheduler.rl.StepResult;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The memory planner's training categories against what real training steps hold.
 * Small random Qwen3 and Qwen3-MoE models (bf16 or INT4 experts in chunks) run forward (recompute
 * on and off), next-token cross-entropy, adapter-only backward and AdamW through two allocators: one
 * counts the peak of reachable bytes per category ({@link AccountingAllocator#peakOfRepeatedStep}: a
 * warm-up step, then the same step repeated, exact to within 1% below), and the
 * {@link ReleasedOnlyAllocator} around it the peak of bytes not yet released explicitly, as a
 * device allocator that frees a temporary only at its release holds them (a temporary dropped without
 * a release counts until the step ends). The planner, asked about a training GPU of the same shape and
 * settings, must agree with the released-only peak of activations and logits, and with the reachable
 * peak of dequantization buffers, adapter parameters, adapter gradients and optimizer state, within
 * 5% of the measured peak, or within {@value #FLOOR} bytes for tiny categories; its activations and
 * logits must not exceed the reachable peak by more (released tensors may stay reachable on the host).
 * Shapes vary tokens, layers, experts and top-k, so that a wrong scaling law fails. The MoE block runs
 * its default path, grouped by expert in backend memory (quantized experts: the host's per-product
 * dequantization temporary, an activation, and no dequantization buffer).
 */
class PlannedPeaksTest {
    private static final double RTOL = 0.05;
    private static final long FLOOR = 4096;
    /** Categories whose peak of bytes not yet released explicitly is checked too (the device's per-step categories). */
    private static final List<MemoryCategory> RELEASED = List.of(MemoryCategory.ACTIVATIONS, MemoryCategory.LOGITS);
    /** {@code -Dorbit.peaks.sites=true}: print the activations at each run's peak by allocation site, reachable and dropped. */
    private static final boolean SITES = Boolean.getBoolean("orbit.peaks.sites");
    private static final List<MemoryCategory> CHECKED = List.of(MemoryCategory.ACTIVATIONS, MemoryCategory.DEQUANT_BUFFERS,
            MemoryCategory.ADAPTER_PARAMS, MemoryCategory.ADAPTER_GRADS, MemoryCategory.OPTIMIZER_STATE, MemoryCategory.LOGITS);

    /** A model shape: layers, hidden, heads, kv heads, head dim, dense intermediate, experts (0: dense), top-k, expert intermediate, vocab. */
    record Shape(int layers, int hidden, int heads, int kvHeads, int headDim, int inter, int experts, int topK, int moeInter,
                 int vocab) {
        boolean moe() {
            return experts > 0;
        }
    }

    /** A training step: sequences x tokens, recompute, INT4 experts with this chunk (0: bf16 experts), adapter. */
    record Run(Shape shape, int batch, int seq, boolean recompute, int chunk, String adapter) {
        @Override
        public String toString() {
            Shape s = shape;
            return String.format("%s L%d h%d%s, %dx%d tokens, recompute %s, %s, %s", s.moe() ? "qwen3_moe" : "qwen3", s.layers,
                    s.hidden, s.moe() ? String.format(" E%d top-%d I%d", s.experts, s.topK, s.moeInter) : " I" + s.inter, batch, seq,
                    recompute, chunk > 0 ? "INT4 experts chunk " + chunk : "bf16 experts", adapter);
        }
    }

    @Test
    void denseQwen3PeaksMatchThePlan() throws IOException {
        Shape a = new Shape(2, 64, 4, 2, 16, 128, 0, 0, 0, 256);
        Shape b = new Shape(3, 96, 6, 2, 16, 160, 0, 0, 0, 320);
        check(List.of(
                new Run(a, 1, 32, true, 0, "lora:8"),
                new Run(b, 2, 24, false, 0, "lora:4"),
                new Run(a, 2, 20, false, 0, "oft:8")));
    }

    @Test
    void moeQwen3PeaksMatchThePlan() throws IOException {
        Shape a = new Shape(2, 64, 4, 2, 16, 128, 8, 2, 32, 256);
        Shape b = new Shape(3, 64, 4, 1, 16, 128, 16, 4, 64, 192);
        Shape wide = new Shape(2, 64, 2, 1, 16, 128, 4, 2, 256, 128);   // the experts' backward outweighs the attention's
        check(List.of(
                new Run(wide, 1, 32, true, 2, "lora:8"),
                new Run(a, 1, 32, false, 0, "lora:8"),
                new Run(a, 2, 24, true, 2, "lora:8"),
                new Run(b, 1, 40, true, 3, "lora:4"),
                new Run(b, 2, 16, false, 5, "oft:8")));
    }

    private static void check(List<Run> runs) throws IOException {
        List<String> failures = new ArrayList<>();
        for (Run r : runs) {
            Path cfg = writeConfig(r.shape);
            ModelSpec spec = ConfigLoader.load(cfg);
            long t0 = System.nanoTime();
            AccountingAllocator mem = AccountingAllocator.reachable();
            ReleasedOnlyAllocator released = new ReleasedOnlyAllocator(mem, SITES);
            Map<MemoryCategory, Long> measured = measure(spec, r, mem, released);
            Map<MemoryCategory, Long> explicit = released.peaks();
            int collections = mem.collections();
            Map<MemoryCategory, Long> planned = plan(spec, cfg, r);
            System.out.println(r + " (" + collections + " collections, " + (System.nanoTime() - t0) / 1_000_000 + " ms)");
            System.out.println(String.format("  %-16s %12s %12s %12s %8s %8s", "category", "reachable", "released", "planner",
                    "p/reach", "p/rel"));
            for (MemoryCategory c : CHECKED) {
                long m = measured.getOrDefault(c, 0L);
                long x = explicit.getOrDefault(c, 0L);
                long p = planned.getOrDefault(c, 0L);
                boolean perStep = RELEASED.contains(c);
                // per-step categories: the plan is what stays unreleased, at most what stays reachable
                boolean ok = perStep ? p <= m + Math.max(FLOOR, RTOL * m) : Math.abs(m - p) <= Math.max(FLOOR, RTOL * m);
                boolean okReleased = !perStep || Math.abs(x - p) <= Math.max(FLOOR, RTOL * x);
                System.out.println(String.format("  %-16s %12d %12d %12d %8.3f %8s%s", c.name().toLowerCase(), m,
                        RELEASED.contains(c) ? x : m, p, m == 0 ? 0 : p / (double) m,
                        RELEASED.contains(c) ? String.format("%8.3f", x == 0 ? 0 : p / (double) x) : "",
                        (ok ? "" : perStep ? "  <-- planner above reachable by more than 5% and " + FLOOR + " B"
                                : "  <-- reachable off by more than 5% and " + FLOOR + " B")
                                + (okReleased ? "" : "  <-- released off by more than 5% and " + FLOOR + " B")));
                if (!ok) {
                    failures.add(r + ": " + c + " reachable " + m + " B, planner " + p + " B" + (perStep ? " (more than reachable)" : ""));
                }
                if (!okReleased) {
                    failures.add(r + ": " + c + " live until released " + x + " B, planner " + p + " B");
                }
            }
            for (MemoryCategory c : RELEASED) {
                long left = released.leftUnreleased().get(c);
                if (left != 0) {
                    failures.add(r + ": " + c + ": " + left + " B allocated by a step and never released");
                }
            }
            System.out.println("  left unreleased by a step: " + released.leftUnreleased().get(MemoryCategory.ACTIVATIONS)
                    + " B of activations, " + released.leftUnreleased().get(MemoryCategory.LOGITS) + " B of logits");
            if (SITES) {
                System.out.print(released.report());
            }
        }
        assertTrue(failures.isEmpty(), "planner vs measured peak (|planned - measured| <= max(" + FLOOR + " B, "
                + RTOL + " * measured)), " + failures.size() + " mismatches, first: " + failures.subList(0, Math.min(3, failures.size())));
    }

    /** The planner's bytes for one GPU that only trains, for the run's shape and settings. */
    private static Map<MemoryCategory, Long> plan(ModelSpec spec, Path cfg, Run r) {
        NodeSpec node = new NodeSpec("cpu", 1, 1L << 40);
        String adapter = r.adapter + ":" + (r.adapter.startsWith("lora") && r.shape.moe() ? "attention+experts" : "attention")
                + (r.adapter.startsWith("lora") && !r.shape.moe() ? "+mlp" : "") + ":f32";
        PlanRequest req = new PlanRequest(spec, cfg, BaseFormat.parse(r.chunk > 0 ? "int4" : "bf16", spec), AdapterSpec.parse(adapter),
                new BatchShape(r.batch, 1, r.seq / 2, r.seq - r.seq / 2, r.batch), node, ParallelLayout.colocated(1, 1), r.recompute,
                Math.max(1, r.chunk), DType.F32, r.batch * r.seq, r.batch * r.seq, 0);
        return MemoryPlanner.budgetOf(req, GpuRole.TRAIN).bytes();
    }

    /**
     * Peak reachable bytes per category over a warm-up step and a measured step; {@code released}
     * (wrapping {@code mem}, through which everything is allocated) takes the peaks of the bytes not
     * released explicitly over the same measured steps.
     */
    private static Map<MemoryCategory, Long> measure(ModelSpec spec, Run r, AccountingAllocator mem,
                                                     ReleasedOnlyAllocator released) {
        mem.pausePeaks();   // model, adapter and warm-up step: followed, counted at the reset
        DecoderConfig dc = DecoderConfig.from(spec);
        Backend backend = new CpuBackend(1, released);
        QuantFormat int4 = QuantFormats.byName("int4-g32");
        Qwen3Model model = Qwen3Model.load(dc, new RandomWeights(r.shape, 7), backend, r.chunk > 0
                ? new Qwen3Model.LoadOptions(w -> Weight.of(int4.quantize(w))) : Qwen3Model.LoadOptions.full());
        model.setExpertChunk(r.chunk);
        List<String> attention = List.of("q_proj", "k_proj", "v_proj", "o_proj");
        Adapter adapter;
        if (r.adapter.startsWith("lora")) {
            int rank = Integer.parseInt(r.adapter.substring(5));
            List<String> modules = new ArrayList<>(attention);
            if (!r.shape.moe()) {
                modules.addAll(List.of("gate_proj", "up_proj", "down_proj"));
            }
            adapter = LoraAdapter.create(AdapterConfig.lora(rank, 2.0 * rank, modules, r.shape.moe()
                    ? List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj") : List.of()), model, released, 3);
        } else {
            adapter = OftAdapter.create(AdapterConfig.oft(OftSettings.ofBlockSize(Integer.parseInt(r.adapter.substring(4))), attention),
                    model, released);
        }
        List<Parameter> params = new ArrayList<>();
        for (Adapter.Param p : adapter.params()) {
            params.add(new Parameter(p.name(), p.value()));
        }
        AdamW adamw = new AdamW(AdamWConfig.defaults(), new LearningRateSchedule.Constant(1e-3), params, released);
        SplittableRandom rnd = new SplittableRandom(11);
        List<int[]> seqs = new ArrayList<>();
        for (int b = 0; b < r.batch; b++) {
            seqs.add(rnd.ints(r.seq, 0, r.shape.vocab).toArray());
        }
        Runnable step = () -> {
            adapter.zeroGrad();
            adapter.prepare(backend);   // as the RL trainer does around its micro-batches (OFT keeps its rotations)
            double loss = nextTokenLoss(model, backend, seqs, r.recompute);
            adapter.unprepare();
            List<Tensor> grads = new ArrayList<>();
            for (Adapter.Param p : adapter.params()) {
                grads.add(p.grad());
            }
            StepResult res = adamw.step(loss, grads);
            assertTrue(!(res instanceof StepResult.Skipped), r + ": AdamW skipped the step: " + res);
        };
        step.run();   // warm-up: chunk buffers and optimizer state are allocated on first use
        return mem.peakOfRepeatedStep(() -> {
            released.restart();
            step.run();
            released.endStep();
        });
    }

    /** Mean next-token cross-entropy, forward and adapter-only backward, as the trainer's loss reads the logits. */
    private static double nextTokenLoss(Qwen3Model model, Backend backend, List<int[]> seqs, boolean recompute) {
        TensorAllocator a = backend.allocator();
        int n = 0;
        for (int[] s : seqs) {
            n += s.length - 1;
        }
        int[] rows = new int[n];
        int[] tokens = new int[n];
        int k = 0;
        int base = 0;
        for (int[] s : seqs) {
            for (int t = 0; t + 1 < s.length; t++) {
                rows[k] = base + t;
                tokens[k++] = s[t + 1];
            }
            base += s.length;
        }
        Qwen3Model.TrainTape tape = model.forwardTrain(seqs, recompute);
        Tensor logits = tape.logits();                                                       // [N, vocab]
        Tensor r = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(rows, n));             // [n]
        Tensor tk = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(tokens, n));          // [n]
        Tensor logp = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n);                  // [n]
        backend.tokenLogProbs(logits, r, tk, 1f, logp);
        double loss = 0;
        for (float v : a.toHost(logp).toFloatArray()) {
            loss -= v;
        }
        a.release(logp);
        float[] g = new float[n];
        java.util.Arrays.fill(g, -1f / n);
        Tensor dLogits = a.allocate(MemoryCategory.LOGITS, DType.F32, logits.shape());       // [N, vocab]
        Tensor dLogp = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(g, n));              // [n]
        backend.tokenLogProbsBackward(logits, r, tk, dLogp, 1f, dLogits);
        a.release(r);
        a.release(tk);
        a.release(dLogp);
        model.backward(tape, dLogits);
        a.release(dLogits);
        tape.release(a);   // the logits and the layer inputs
        return loss / n;
    }

    private static Path writeConfig(Shape s) throws IOException {
        String moe = s.moe() ? String.format("""
                  "num_experts": %d, "num_experts_per_tok": %d, "moe_intermediate_size": %d, "norm_topk_prob": true,
                  "decoder_sparse_step": 1, "mlp_only_layers": [],
                """, s.experts, s.topK, s.moeInter) : "";
        String json = String.format("""
                {
                  "architectures": ["%s"], "model_type": "%s",
                  "hidden_size": %d, "num_hidden_layers": %d, "num_attention_heads": %d, "num_key_value_heads": %d,
                  "head_dim": %d, "intermediate_size": %d, "vocab_size": %d, %s
                  "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
                  "attention_bias": false, "tie_word_embeddings": false, "hidden_act": "silu"
                }
                """, s.moe() ? "Qwen3MoeForCausalLM" : "Qwen3ForCausalLM", s.moe() ? "qwen3_moe" : "qwen3", s.hidden, s.layers,
                s.heads, s.kvHeads, s.headDim, s.inter, s.vocab, moe);
        Path dir = Files.createTempDirectory("orbit-planned-peaks");
        dir.toFile().deleteOnExit();   // registered first, deleted last: after the file in it
        Path f = dir.resolve("config.json");
        Files.writeString(f, json);
        f.toFile().deleteOnExit();
        return f;
    }

    /** Seeded uniform weights (std 0.05; norms near 1) under Qwen3's Hugging Face names, generated on request. */
    static final class RandomWeights implements WeightSource {
        private final Set<String> names = new HashSet<>();
        private final long seed;

        RandomWeights(Shape s, long seed) {
            this.seed = seed;
            names.add("model.embed_tokens.weight");
            names.add("model.norm.weight");
            names.add("lm_head.weight");
            for (int l = 0; l < s.layers; l++) {
                String p = "model.layers." + l + ".";
                for (String n : List.of("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                        "self_attn.v_proj", "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm")) {
                    names.add(p + n + ".weight");
                }
                if (s.moe()) {
                    names.add(p + "mlp.gate.weight");
                    for (int e = 0; e < s.experts; e++) {
                        for (String m : List.of("gate_proj", "up_proj", "down_proj")) {
                            names.add(p + "mlp.experts." + e + "." + m + ".weight");
                        }
                    }
                } else {
                    for (String m : List.of("gate_proj", "up_proj", "down_proj")) {
                        names.add(p + "mlp." + m + ".weight");
                    }
                }
            }
        }

        @Override
        public boolean has(String name) {
            return names.contains(name);
        }

        @Override
        public Set<String> names() {
            return names;
        }

        @Override
        public Tensor tensor(String name, long... shape) {
            if (!names.contains(name)) {
                throw new IllegalArgumentException("random Qwen3 weights: no tensor " + name);
            }
            long n = 1;
            for (long d : shape) {
                n *= d;
            }
            SplittableRandom r = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + name.hashCode());
            boolean norm = name.endsWith("norm.weight");
            float[] v = new float[Math.toIntExact(n)];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) (norm ? 1 + 0.1 * (r.nextDouble() - 0.5) : 0.05 * Math.sqrt(3) * (2 * r.nextDouble() - 1));
            }
            return Tensor.of(v, shape);
        }
    }
}
