package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cuda.CudaBackend;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.spec.ConfigLoader;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

/**
 * What exact mode costs: the default kernels against exact mode (batch-invariant products and
 * attention, {@code CudaBackend(device, cache, exact = true)}) in one run, on one model of a
 * released shape with random weights and a LoRA adapter (r 16, random non-zero B): a dense Qwen3
 * (Qwen3-4B by default; its weights written once and loaded by each mode's backend, the adapter on
 * all seven projections) or a Qwen3-MoE ({@code --config} of qwen3_moe, Qwen3-30B-A3B say: INT4
 * group-32 experts generated as each backend loads them, the adapter on q/k/v/o and the fused
 * experts, the quantized experts {@code --expert-chunk} at a time in training as the RL loop runs
 * them). For each
 * mode ({@link ExactModeRun}): rollout tokens/s of the RL loop's {@code RolloutEngine} (P prompts x
 * S samples x R new tokens, fixed seeds, after an untimed warm-up rollout), training tokens/s of the
 * loop's own training step (recomputing forward, policy loss, adapter-only backward, AdamW) on the
 * generated sequences, and the train/rollout log-prob gap that step measures (mean and max |gap|
 * and the fraction of tokens exactly equal; exact mode should give 0, 0 and 1). The table ends with
 * the exact/default ratios: the cost.
 *
 * <p>The backend is {@code -Dorbit.kernels} ({@code cuda} or {@code cuda:N}, the default; {@code cpu} runs both
 * modes on the CPU backend, which is exact by construction: a check of the bench itself, best with
 * {@code --small}). Each phase's figures are printed as they come; no phase starts after
 * {@code --budget-s} (each mode gets an equal share of what is left when it starts), so a run cut
 * short still reports what it measured. The modes run in the order {@code --modes} gives (the JVM's
 * own warm-up favours the later one a little; swap them to see how much). With {@code -Dorbit.profile=true} every
 * backend call of each mode is timed and waited for ({@link org.orbitrl.kernels.OpProfiler}): the timed rollout's
 * and the timed training steps' operations are printed after each (the figures then include the waits).
 *
 * <pre>
 * java ... org.orbitrl.scheduler.bench.ExactModeBench [--config models/qwen3-4b/config.json] [--small]
 *     [--layers N] [--prompts 8] [--samples 8] [--prompt-tokens 32] [--new-tokens 64] [--warmup-tokens NEW_TOKENS]
 *     [--temperature 1.0] [--micro-batch 8] [--train-steps 2] [--rank 16] [--base bf16|int4]
 *     [--expert-chunk 8] [--modes default,exact] [--device 0] [--budget-s 420] [--seed 1] [--keep DIR]
 * </pre>
 */
public final class ExactModeBench {
    private ExactModeBench() {
    }

    private static final List<String> OPTIONS = List.of("--config", "--layers", "--prompts", "--samples",
            "--prompt-tokens", "--new-tokens", "--warmup-tokens", "--temperature", "--micro-batch", "--train-steps",
            "--rank", "--base", "--modes", "--device", "--budget-s", "--seed", "--keep", "--expert-chunk");

    public static void main(String[] args) throws Exception {
        long start = System.nanoTime();
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--small")) {
                continue;
            }
            if (!OPTIONS.contains(args[i]) || i + 1 >= args.length) {
                throw new IllegalArgumentException("option " + args[i] + ": expected --small or one of " + OPTIONS
                        + " with a value");
            }
            i++;
        }
        Path models = Path.of(System.getProperty("orbit.models", "../shared/models"));
        Path config = Path.of(option(args, "--config", models.resolve("qwen3-4b/config.json").toString()));
        boolean small = List.of(args).contains("--small");
        String kernels = System.getProperty("orbit.kernels", "cuda");
        if (!kernels.equals("cpu") && !kernels.startsWith("cuda")) {
            throw new IllegalArgumentException("-Dorbit.kernels=" + kernels + ": expected cpu or cuda");
        }
        int prompts = intOption(args, "--prompts", small ? 4 : 8);
        int samples = intOption(args, "--samples", small ? 2 : 8);
        ExactModeRun.Settings s = new ExactModeRun.Settings(prompts, samples, intOption(args, "--prompt-tokens", small ? 8 : 32),
                intOption(args, "--new-tokens", small ? 8 : 64), intOption(args, "--warmup-tokens", small ? 2 : intOption(args, "--new-tokens", 64)),
                Float.parseFloat(option(args, "--temperature", "1.0")), intOption(args, "--micro-batch", samples),
                intOption(args, "--train-steps", small ? 1 : 2), intOption(args, "--rank", 16),
                BaseFormat.parse(option(args, "--base", moeConfig(config) ? "int4" : "bf16")),
                Long.parseLong(option(args, "--seed", "1")));
        int layers = intOption(args, "--layers", 0);
        int device = intOption(args, "--device", kernels.startsWith("cuda:") ? Integer.parseInt(kernels.substring(5)) : 0);
        long budget = (long) (Double.parseDouble(option(args, "--budget-s", "420")) * 1e9);
        List<String> modes = List.of(option(args, "--modes", "default,exact").split(","));
        for (String m : modes) {
            if (!m.equals("default") && !m.equals("exact")) {
                throw new IllegalArgumentException("--modes: expected default and/or exact, got " + m);
            }
        }
        ObjectNode cfg = (ObjectNode) Qwen3TrainBench.readJson(config);
        String type = cfg.path("model_type").asText();
        if (!type.equals("qwen3") && !type.equals("qwen3_moe")) {
            throw new IllegalArgumentException(config + ": model_type " + cfg.path("model_type")
                    + ", expected qwen3 (a dense Qwen3 such as Qwen3-4B) or qwen3_moe (Qwen3-30B-A3B, say)");
        }
        boolean moe = type.equals("qwen3_moe");
        BaseFormat expected = moe ? BaseFormat.INT4 : BaseFormat.BF16;
        if (s.base() != expected) {
            // a format quantizes routed experts (BaseFormat): a dense model loads as bf16 under every one; the MoE
            // model's experts are generated as INT4 group-32 (RandomQwen3Moe)
            throw new IllegalArgumentException("--base " + s.base().cliName() + ": the bench's " + type + " model "
                    + (moe ? "has its routed experts generated as INT4 group-32" : "is dense, which loads as stored under"
                    + " every format (they quantize routed experts only)") + "; expected " + expected.cliName());
        }
        String keep = option(args, "--keep", null);
        Path work = keep != null ? Path.of(keep) : Files.createTempDirectory("orbit-exact-bench");
        PrintStream out = System.out;
        try {
            long g0 = System.nanoTime();
            ExactModeRun.Model model;
            String shape;
            if (moe) {
                if (small) {
                    Qwen3TrainBench.shrink(cfg);
                    cfg.put("num_hidden_layers", 2);
                }
                if (layers > 0) {
                    cfg.put("num_hidden_layers", layers);
                }
                Files.createDirectories(work);
                Path cfgFile = work.resolve("config.json");
                Files.writeString(cfgFile, cfg.toPrettyString());
                DecoderConfig dc = DecoderConfig.from(ConfigLoader.load(cfgFile));
                int chunk = intOption(args, "--expert-chunk", PlanRequest.DEFAULT_EXPERT_CHUNK);
                model = moeModel(dc, s.seed(), chunk);
                shape = String.format("hidden %d, %d layers, %d/%d heads x %d, %d experts top-%d x %d (INT4 g32), vocab %d,"
                                + " expert chunk %d", dc.hidden(), dc.layers(), dc.heads(), dc.kvHeads(), dc.headDim(),
                        dc.experts(), dc.topK(), dc.moeIntermediate(), dc.vocab(), chunk);
            } else {
                RandomQwen3 dense = new RandomQwen3(cfg);
                if (small) {
                    dense = dense.small();
                }
                if (layers > 0) {
                    ObjectNode c = dense.config().deepCopy();
                    c.put("num_hidden_layers", layers);
                    dense = new RandomQwen3(c);
                }
                Path dir = work.resolve("model");
                dense.write(dir, s.seed());
                model = ExactModeRun.Model.folder(dir, s.base());
                shape = dense.shape();
            }
            out.printf("model: %s%s%s (%s), random weights %s in %.1f s; base %s; backend %s, %d cores%n", config,
                    small ? " shrunk" : "", layers > 0 ? ", " + layers + " layers" : "", shape,
                    moe ? "generated as loaded (each mode again)" : "written", (System.nanoTime() - g0) / 1e9,
                    s.base().cliName(), kernels, Runtime.getRuntime().availableProcessors());
            out.printf("adapter: LoRA r=%d alpha %d on %s, random non-zero B; rollout %d prompts x %d samples, %d-token"
                            + " prompts, %d new tokens, temperature %.2f; training micro-batches of %d, %d timed steps"
                            + " (recompute on, learning rate 0); budget %.0f s%n", s.rank(), 2 * s.rank(),
                    String.join("/", model.modules()) + (model.parameters().isEmpty() ? ""
                            : " and " + String.join("/", model.parameters())), s.prompts(), s.samples(), s.promptTokens(),
                    s.newTokens(), s.temperature(), s.microBatch(), s.trainSteps(), budget / 1e9);
            List<ExactModeRun.Figures> done = new ArrayList<>();
            for (int i = 0; i < modes.size(); i++) {
                String mode = modes.get(i);
                long now = System.nanoTime();
                long left = start + budget - now;
                if (left <= 0) {
                    out.println(mode + ": not run: the time budget is spent");
                    continue;
                }
                long deadline = now + left / (modes.size() - i);   // an equal share of what is left
                ExactModeRun.Figures f;
                try (Backend b = backend(kernels, device, mode.equals("exact"));
                     ExactModeRun run = new ExactModeRun(mode, b, model, s,
                             Boolean.getBoolean("orbit.profile") ? org.orbitrl.kernels.OpProfiler.wrap(b,
                                     b instanceof CudaBackend gpu ? gpu::synchronize : () -> { }) : null)) {
                    f = run.measure(deadline, out);
                } catch (RuntimeException | OutOfMemoryError e) {
                    // one mode failing must not cost the other's figures
                    out.println(mode + ": failed: " + Qwen3TrainBench.causes(e));
                    f = new ExactModeRun.Figures(mode, 0, Double.NaN, 0, Double.NaN, Double.NaN, Double.NaN, 0, 0,
                            "failed: " + Qwen3TrainBench.firstLine(e.getMessage()));
                }
                System.gc();
                done.add(f);
                out.println(row(f));
            }
            out.println();
            out.print(table(done));
        } finally {
            if (keep == null) {
                delete(work);
            }
        }
    }

    /**
     * A Qwen3-MoE model with random weights generated as each backend loads them ({@link RandomQwen3Moe}: INT4 group-32
     * experts, the rest bf16), its quantized experts through active-expert-chunked dequantization {@code chunk} at a time
     * in training (what the RL loop budgets); the adapter on the attention projections and the fused experts.
     */
    static ExactModeRun.Model moeModel(DecoderConfig dc, long seed, int chunk) {
        return new ExactModeRun.Model(b -> {
            Qwen3Model m = Qwen3Model.load(dc, new RandomQwen3Moe(dc, seed), b, Qwen3Model.LoadOptions.full());
            m.setExpertChunk(chunk);
            return new ExactModeRun.Built(m, m);
        }, ExactModeRun.MOE_TARGETS, ExactModeRun.MOE_PARAMETERS);
    }

    /** The backend of one mode: on cuda the default or the exact kernels on one device; on cpu the CPU backend. */
    static Backend backend(String kernels, int device, boolean exact) {
        if (kernels.equals("cpu")) {
            return new CpuBackend(Runtime.getRuntime().availableProcessors());
        }
        return new CudaBackend(device, CudaBackend.defaultCacheDir(), exact);
    }

    /** The markdown table of the modes measured, and the exact/default ratios when both are there. */
    static String table(List<ExactModeRun.Figures> figures) {
        StringBuilder sb = new StringBuilder();
        sb.append("| mode | decode tokens/s | train tokens/s | gap mean | gap max | exact fraction | note |\n");
        sb.append("|---|---|---|---|---|---|---|\n");
        ExactModeRun.Figures def = null;
        ExactModeRun.Figures exact = null;
        for (ExactModeRun.Figures f : figures) {
            sb.append(row(f)).append('\n');
            if (f.mode().equals("default")) {
                def = f;
            } else if (f.mode().equals("exact")) {
                exact = f;
            }
        }
        if (def != null && exact != null) {
            double d = exact.decodeTokensPerSecond() / def.decodeTokensPerSecond();
            double t = exact.trainTokensPerSecond() / def.trainTokensPerSecond();
            sb.append(String.format("| exact/default | %.3f | %.3f | | | | throughput ratio (below 1: what exact mode costs) |%n", d, t));
            sb.append(String.format("%nexact mode: rollout at %.2fx and training at %.2fx the default kernels' tokens/s;"
                    + " gap max %.3e -> %.3e, exact fraction %.4f -> %.4f%n", d, t, def.gapMax(), exact.gapMax(),
                    def.exactFraction(), exact.exactFraction()));
        }
        return sb.toString();
    }

    static String row(ExactModeRun.Figures f) {
        return String.format("| %s | %.1f | %.1f | %.3e | %.3e | %.4f | %s |", f.mode(), f.decodeTokensPerSecond(),
                f.trainTokensPerSecond(), f.gapMean(), f.gapMax(), f.exactFraction(), f.note());
    }

    private static boolean moeConfig(Path config) throws IOException {
        return "qwen3_moe".equals(Qwen3TrainBench.readJson(config).path("model_type").asText());
    }

    private static int intOption(String[] args, String name, int fallback) {
        return Integer.parseInt(option(args, name, Integer.toString(fallback)));
    }

    private static String option(String[] args, String name, String fallback) {
        for (int i = 0; i + 1 < args.length; i++) {
            if (args[i].equals(name)) {
                return args[i + 1];
            }
        }
        return fallback;
    }

    private static void delete(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        }
    }
}
