package org.orbitrl.scheduler.bench;

import org.orbitrl.scheduler.job.AdapterKind;
import org.orbitrl.scheduler.job.AdapterSpec;
import org.orbitrl.scheduler.job.AsyncSpec;
import org.orbitrl.scheduler.job.BatchSpec;
import org.orbitrl.scheduler.job.ComputeBackend;
import org.orbitrl.scheduler.job.EvalSpec;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.ModelSpec;
import org.orbitrl.scheduler.job.PartialRollouts;
import org.orbitrl.scheduler.job.PlacementSpec;
import org.orbitrl.scheduler.job.SamplingSpec;
import org.orbitrl.scheduler.loop.ForegroundRun;
import org.orbitrl.scheduler.report.MetricsHistory;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.StepRecord;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;

/**
 * Synchronous against asynchronous RL on a model of a released dense shape (Qwen3-4B by default,
 * random weights generated here, {@link RandomQwen3}), with LoRA and with OFT, side by side in one
 * run: mean step time, rollout tokens/s, the trainer's and the rollout's idle fractions, and
 * adapter publication bytes and time, with the async/sync ratios against the goal (step time at
 * most 0.7x, rollout throughput at least 1.44x). The task is the quickstart's (sorting), its
 * rewards meaningless on random weights; timing does not depend on them.
 *
 * <p>The backend is {@code -Dorbit.kernels} ({@code cpu} by default, or {@code cuda}: the job's
 * {@code placement.backend}; on cuda the defaults are 4 steps with 128-token responses, so that
 * sync and async fit in a few minutes). Every step's phase times (rollout, reward, train,
 * publish) and each run's time outside its steps are printed as they come; an adapter kind the
 * backend refuses is reported and skipped. {@code --small} shrinks the shape and the batch (4 prompts x 4
 * samples, 16-token responses, 4 steps) so a CPU smoke run takes a few minutes on two cores. The
 * trainer's micro-batch defaults to one group: the full vocabulary's logits of a micro-batch must
 * fit one array. {@code --modes} picks sync and/or async; {@code --graphs} runs each mode with
 * rollout's decode steps as captured graphs ({@code on}), eagerly ({@code off}) or both ({@code on,off};
 * default {@code auto}: graphs on a device), and prints for each run the rollout time per engine
 * step (rollout seconds over the engine steps of the rollout, nearly all of them decode steps),
 * the steps replayed as graphs and the graphs' arena bytes, and the graphs/eager ratios. {@code --placements} runs each
 * mode colocated (one GPU, the default), with a rollout GPU ({@code rollout-gpu}: placement devices 2, rollout_devices 1),
 * with K rollout GPUs and M training GPUs ({@code rollout-K+M}), or on N data-parallel replicas ({@code replicas-N}:
 * devices N, each rolling out and training its share), and prints each placement's ratios to colocated.
 *
 * <pre>
 * tools/bench -pl scheduler org.orbitrl.scheduler.bench.AsyncModelBench [--repo .] [--config models/qwen3-4b/config.json]
 *     [--small] [--adapters lora,oft] [--steps 6] [--prompts 8] [--samples 8] [--response 256] [--micro-batch 8]
 *     [--modes sync,async] [--graphs auto|on|off|on,off] [--priority rollout|equal] [--placements colocated,rollout-gpu,rollout-K+M,replicas-N]
 *     (on cuda: --steps 4 --response 128 by default)
 *     [--keep DIR]
 * </pre>
 */
public final class AsyncModelBench {

    /** One run's figures, over its steps after the first (warm-up). */
    record Figures(double stepSeconds, double tokensPerSecond, double trainerIdle, double rolloutIdle,
                   double publishBytes, double publishSeconds, double dropped, int steps, double rolloutSeconds,
                   double engineSteps, double graphSteps, double arenaBytes) {
    }

    public static void main(String[] args) throws Exception {
        Path repo = Path.of(option(args, "--repo", "."));
        Path models = Path.of(System.getProperty("orbit.models", repo.resolve("../shared/models").toString()));
        Path config = Path.of(option(args, "--config", models.resolve("qwen3-4b/config.json").toString()));
        boolean small = List.of(args).contains("--small");
        String kernels = System.getProperty("orbit.kernels", "cpu");
        ComputeBackend backend = switch (kernels) {
            case "cpu" -> ComputeBackend.CPU;
            case "cuda" -> ComputeBackend.CUDA;
            default -> throw new IllegalArgumentException("-Dorbit.kernels=" + kernels + ": expected cpu or cuda");
        };
        boolean gpu = backend == ComputeBackend.CUDA && !small;
        // on the GPU: 4 steps of 8 x 8 samples with 128-token responses keep sync + async within a few minutes
        List<String> adapters = List.of(option(args, "--adapters", "lora,oft").split(","));
        int steps = Integer.parseInt(option(args, "--steps", small ? "4" : gpu ? "4" : "6"));
        int prompts = Integer.parseInt(option(args, "--prompts", small ? "4" : "8"));
        int samples = Integer.parseInt(option(args, "--samples", small ? "4" : "8"));
        int response = Integer.parseInt(option(args, "--response", small ? "16" : gpu ? "128" : "256"));
        int microBatch = Integer.parseInt(option(args, "--micro-batch", Integer.toString(samples)));
        List<String> modes = List.of(option(args, "--modes", "sync,async").split(","));
        List<String> placements = List.of(option(args, "--placements", "colocated").split(","));
        AsyncSpec.Priority priority = AsyncSpec.Priority.valueOf(option(args, "--priority", "rollout").toUpperCase(java.util.Locale.ROOT));
        List<SamplingSpec.DecodeGraphs> graphs = new ArrayList<>();
        for (String g : option(args, "--graphs", "auto").split(",")) {
            graphs.add(SamplingSpec.DecodeGraphs.valueOf(g.trim().toUpperCase(java.util.Locale.ROOT)));
        }
        RandomQwen3 shape = RandomQwen3.read(config);
        if (small) {
            shape = shape.small();
        }
        String keep = option(args, "--keep", null);
        Path work = keep != null ? Path.of(keep) : Files.createTempDirectory("orbit-async-model-bench");
        try {
            Path model = work.resolve("model");
            long g0 = System.nanoTime();
            shape.write(model, 1);
            System.out.printf("model: %s%s (%s), random weights written in %.1fs; backend %s, %d cores%n", config,
                    small ? " shrunk" : "", shape.shape(), (System.nanoTime() - g0) / 1e9, kernels,
                    Runtime.getRuntime().availableProcessors());
            System.out.printf("batch: %d prompts x %d samples, responses up to %d tokens, micro-batches of %d, %d steps"
                    + " each (first not counted); async: staleness bound 2, at most %d groups ahead, priority %s%n", prompts, samples,
                    response, microBatch, steps, 2 * prompts, priority.name().toLowerCase(java.util.Locale.ROOT));
            JobSpec base = JobFiles.read(repo.resolve("conf/jobs.d/quickstart.yaml"));
            List<String> table = new ArrayList<>();
            List<String> ratios = new ArrayList<>();
            for (String a : adapters) {
                java.util.Map<String, Figures> done = new java.util.LinkedHashMap<>();
                for (SamplingSpec.DecodeGraphs g : graphs) {
                  for (String placement : placements) {
                    JobSpec spec = placed(spec(base, model, a.trim(), backend, prompts, samples, response, microBatch, steps, g),
                            placement);
                    for (String mode : modes) {
                        String label = mode + ", graphs " + g.name().toLowerCase(java.util.Locale.ROOT)
                                + (placement.equals("colocated") ? "" : ", " + placement);
                        Figures f;
                        try {
                            f = run(mode.equals("async") ? spec.withAsync(new AsyncSpec(true, 2, PartialRollouts.CONTINUE, 2 * prompts, priority))
                                    : spec, work.resolve(a + "-" + mode + "-" + g + "-" + placement));   // a run of its own
                        } catch (Exception e) {
                            // one adapter kind the backend cannot run must not cost the others' figures
                            System.out.println(a + " " + label + ": not run on " + kernels + ": " + e.getMessage());
                            ratios.add(a + " " + label + ": not run on " + kernels + ": " + e.getMessage());
                            continue;
                        }
                        done.put(mode + "/" + g + (placement.equals("colocated") ? "" : "/" + placement), f);
                        // each run's figures as soon as they exist, so a run cut short still reports the finished ones
                        table.add(row(a, label, f, response));
                        System.out.println(table.getLast());
                    }
                    String at = placement.equals("colocated") ? "" : "/" + placement;
                    Figures sync = done.get("sync/" + g + at);
                    Figures async = done.get("async/" + g + at);
                    if (sync != null && async != null) {
                        double st = async.stepSeconds() / sync.stepSeconds();
                        double tp = async.tokensPerSecond() / sync.tokensPerSecond();
                        ratios.add(String.format("%s, graphs %s%s: async/sync step time %.2f (goal <= 0.70: %s), rollout tokens/s"
                                + " %.2f (goal >= 1.44: %s)", a, g, at.isEmpty() ? "" : ", " + placement, st,
                                st <= 0.7 ? "met" : "not met", tp, tp >= 1.44 ? "met" : "not met"));
                        System.out.println(ratios.getLast());
                    }
                    for (String mode : modes) {
                        Figures col = done.get(mode + "/" + g);
                        Figures split = done.get(mode + "/" + g + at);
                        if (col != null && split != null && !at.isEmpty()) {
                            ratios.add(String.format("%s %s, graphs %s: %s / colocated step time %.2f, rollout tokens/s %.2f",
                                    a, mode, g, placement, split.stepSeconds() / col.stepSeconds(),
                                    split.tokensPerSecond() / col.tokensPerSecond()));
                            System.out.println(ratios.getLast());
                        }
                    }
                  }
                }
                for (String mode : modes) {
                    Figures on = done.get(mode + "/ON");
                    Figures off = done.get(mode + "/OFF");
                    if (on != null && off != null) {
                        ratios.add(String.format("%s %s: graphs/eager rollout tokens/s %.2f, rollout time per decode step %.2f ms"
                                + " vs %.2f ms", a, mode, on.tokensPerSecond() / off.tokensPerSecond(),
                                decodeStepMs(on, response), decodeStepMs(off, response)));
                        System.out.println(ratios.getLast());
                    }
                }
            }
            System.out.println();
            System.out.println("| adapter | mode | mean step | rollout tokens/s | rollout per decode step | trainer idle | rollout idle"
                    + " | publish | publish time | dropped stale |");
            System.out.println("|---|---|---|---|---|---|---|---|---|---|");
            table.forEach(System.out::println);
            System.out.println();
            ratios.forEach(System.out::println);
        } finally {
            if (keep == null) {
                delete(work);
            }
        }
    }

    /**
     * {@code colocated}: the job's one device; {@code rollout-gpu}: a rollout GPU and a training GPU; {@code rollout-K+M}: K
     * rollout devices and M training devices; {@code replicas-N}: N data-parallel replicas.
     */
    static JobSpec placed(JobSpec s, String placement) {
        PlacementSpec p = s.placement();
        java.util.regex.Matcher split = java.util.regex.Pattern.compile("rollout-(\\d+)\\+(\\d+)").matcher(placement);
        java.util.regex.Matcher replicas = java.util.regex.Pattern.compile("replicas-(\\d+)").matcher(placement);
        if (placement.equals("colocated")) {
            return s;
        } else if (placement.equals("rollout-gpu")) {
            return s.withPlacement(new PlacementSpec(p.backend(), 2, 1, 1, 1));
        } else if (split.matches()) {
            int k = Integer.parseInt(split.group(1));
            return s.withPlacement(new PlacementSpec(p.backend(), k + Integer.parseInt(split.group(2)), k, 1, 1));
        } else if (replicas.matches()) {
            return s.withPlacement(new PlacementSpec(p.backend(), Integer.parseInt(replicas.group(1)), 0, 1, 1));
        }
        throw new IllegalArgumentException("--placements: expected colocated, rollout-gpu, rollout-K+M or replicas-N, got "
                + placement);
    }

    static JobSpec spec(JobSpec q, Path model, String adapter, ComputeBackend backend, int prompts, int samples,
                        int response, int microBatch, int steps, SamplingSpec.DecodeGraphs graphs) {
        SamplingSpec sm = q.sampling();
        List<String> targets = List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj");
        AdapterSpec a = switch (adapter) {
            case "lora" -> new AdapterSpec(AdapterKind.LORA, 16, 32, 0, targets, List.of(), 32);
            case "oft" -> new AdapterSpec(AdapterKind.OFT, 16, 32, 0, targets, List.of(), 32);
            default -> throw new IllegalArgumentException("--adapters: expected lora and/or oft, got " + adapter);
        };
        PlacementSpec p = q.placement();
        return new JobSpec("async-bench-" + adapter, q.runner(), new ModelSpec(model, q.model().baseFormat()), a,
                q.algorithm(), q.kl(), q.tisCap(), new BatchSpec(prompts, samples, q.batch().maxPromptTokens(), response,
                microBatch), new SamplingSpec(sm.temperature(), sm.topP(), sm.topK(), sm.minP(), graphs), q.optimizer(), steps, new EvalSpec(0, EvalSpec.HELD_OUT, 4, 1, List.of(1)),
                q.checkpoint(), q.seed(), q.async(), q.task(),
                new PlacementSpec(backend, p.devices(), p.rolloutDevices(), p.expertParallel(), p.tensorParallel()),
                q.memory());
    }

    static Figures run(JobSpec spec, Path dir) throws Exception {
        String name = spec.name() + (spec.async().enabled() ? " async" : " sync");
        System.out.println("== " + name);
        long r0 = System.nanoTime();
        // the run's own lines (plan, evaluations, one line a step) show progress as it goes
        ForegroundRun.run(spec, dir, new PrintStream(new PrefixStream(name + ": ", System.out), true), new AtomicBoolean());
        double total = (System.nanoTime() - r0) / 1e9;
        try (Stream<Path> files = Files.walk(dir)) {   // -Dorbit.profile=true: the run's operation profile
            for (Path f : files.filter(f -> f.getFileName().toString().equals("profile.txt")).toList()) {
                System.out.println(name + ": " + Files.readString(f).replace("\n", "\n" + name + ": "));
            }
        }
        List<StepRecord> all = MetricsHistory.read(dir.resolve(MetricsLog.FILE_NAME)).steps();
        phases(name, all, total);
        List<StepRecord> s = all.subList(Math.min(1, all.size() - 1), all.size());
        double wall = s.stream().mapToDouble(StepRecord::stepSeconds).sum();
        long tokens = s.stream().mapToLong(StepRecord::tokens).sum();
        StepRecord last = all.getLast();
        boolean async = spec.async().enabled();
        // sync: the trainer waits while the step rolls out and scores; rollout waits while the step trains and publishes
        double trainerIdle = async ? last.extras().getOrDefault("trainer_idle_fraction", Double.NaN)
                : s.stream().mapToDouble(r -> (x(r, "rollout_seconds") + x(r, "reward_seconds")) / r.stepSeconds()).average().orElse(Double.NaN);
        double rolloutIdle = async ? last.extras().getOrDefault("rollout_idle_fraction", Double.NaN)
                : s.stream().mapToDouble(r -> (x(r, "train_seconds") + x(r, "publish_seconds")) / r.stepSeconds()).average().orElse(Double.NaN);
        double bytes = all.stream().mapToDouble(r -> x(r, "publish_bytes")).filter(b -> b > 0).average().orElse(0);
        double pubSeconds = all.stream().filter(r -> x(r, "publish_bytes") > 0).mapToDouble(r -> x(r, "publish_seconds"))
                .average().orElse(Double.NaN);
        double dropped = all.stream().mapToDouble(r -> x(r, "dropped_stale")).sum();
        double rollout = s.stream().mapToDouble(r -> x(r, "rollout_seconds")).average().orElse(Double.NaN);
        double engineSteps = s.stream().mapToDouble(r -> x(r, "rollout_engine_steps")).average().orElse(0);
        double graphSteps = s.stream().mapToDouble(r -> x(r, "rollout_graph_steps")).average().orElse(0);
        double arena = s.stream().mapToDouble(r -> x(r, "rollout_graph_arena_bytes")).max().orElse(0);
        if (engineSteps > 0) {
            System.out.printf("%s: %.0f engine steps a rollout, %.0f of them replayed graphs; graph arenas %.1f MB%n", name,
                    engineSteps, graphSteps, arena / 1e6);
        }
        return new Figures(wall / s.size(), tokens / wall, trainerIdle, rolloutIdle, bytes, pubSeconds, dropped, s.size(), rollout,
                engineSteps, graphSteps, arena);
    }

    /** Per-step phase times (s) and the run's time outside its steps (loading, evaluations, checkpoints). */
    private static void phases(String name, List<StepRecord> all, double total) {
        double inSteps = 0;
        for (StepRecord r : all) {
            inSteps += r.stepSeconds();
            System.out.printf("%s: step %d  %.2fs  rollout %.2f  reward %.2f  train %.2f  publish %.3f  tokens %d%n", name,
                    r.step(), r.stepSeconds(), x(r, "rollout_seconds"), x(r, "reward_seconds"), x(r, "train_seconds"),
                    x(r, "publish_seconds"), r.tokens());
        }
        System.out.printf("%s: %.1fs in all, %.1fs in %d steps, %.1fs outside them (load, evaluations, checkpoints);"
                + " heap used %.1f GB of %.1f GB%n", name, total, inSteps, all.size(), total - inSteps,
                (Runtime.getRuntime().totalMemory() - Runtime.getRuntime().freeMemory()) / 1e9,
                Runtime.getRuntime().maxMemory() / 1e9);
    }

    /** Writes each line to {@code out} with a prefix. */
    private static final class PrefixStream extends java.io.OutputStream {
        private final String prefix;
        private final PrintStream out;
        private final ByteArrayOutputStream line = new ByteArrayOutputStream();

        PrefixStream(String prefix, PrintStream out) {
            this.prefix = prefix;
            this.out = out;
        }

        @Override
        public void write(int b) {
            if (b == '\n') {
                out.println(prefix + line.toString(java.nio.charset.StandardCharsets.UTF_8));
                line.reset();
            } else {
                line.write(b);
            }
        }
    }

    private static double x(StepRecord r, String key) {
        return r.extras().getOrDefault(key, 0.0);
    }

    /**
     * Rollout seconds of a step over its engine steps (the sync job records them; else the response
     * length: every sample of a step decodes in the same engine steps), in ms.
     */
    private static double decodeStepMs(Figures f, int response) {
        return f.rolloutSeconds() / (f.engineSteps() > 0 ? f.engineSteps() : response) * 1e3;
    }

    private static String row(String adapter, String mode, Figures f, int response) {
        return String.format("| %s | %s | %.3f s | %.0f | %.2f ms | %.2f | %.2f | %.2f MB | %.2f ms (%.2f GB/s) | %.0f |", adapter,
                mode, f.stepSeconds(), f.tokensPerSecond(), decodeStepMs(f, response), f.trainerIdle(), f.rolloutIdle(),
                f.publishBytes() / 1e6,
                f.publishSeconds() * 1e3, f.publishBytes() / f.publishSeconds() / 1e9, f.dropped());
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
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        }
    }
}
