package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.scheduler.log.FinishReason;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.log.SampleTimings;
import org.orbitrl.scheduler.loop.PolicyStepProbe;
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.AdamWConfig;
import org.orbitrl.scheduler.rl.LearningRateSchedule;
import org.orbitrl.scheduler.rl.Parameter;
import org.orbitrl.scheduler.rollout.Completion;
import org.orbitrl.scheduler.rollout.Request;
import org.orbitrl.scheduler.rollout.RolloutEngine;
import org.orbitrl.scheduler.rollout.SamplingParams;

import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * One mode's half of {@link ExactModeBench}: a model built on one backend with a LoRA
 * adapter (every projection, random non-zero B), rolled out by the RL loop's {@link RolloutEngine}
 * through a rollout view and its {@link AdapterSlots}, and trained by the loop's own training step
 * ({@link PolicyStepProbe}) on what it generated. The training step's learning rate is 0: the
 * update still runs, but the adapter stays the one the rollout sampled with, so every step's
 * recomputed log-probs can be compared with the rollout's.
 */
final class ExactModeRun implements AutoCloseable {

    /**
     * What a mode runs.
     *
     * @param prompts      groups (distinct prompts)
     * @param samples      samples per prompt
     * @param promptTokens tokens of each (random) prompt
     * @param newTokens    tokens generated per sample (no stop token: every sample runs to the limit)
     * @param warmupTokens tokens per sample of the untimed warm-up rollout
     * @param temperature  sampling temperature, also the temperature the trainer recomputes log-probs at
     * @param microBatch   sequences per training prefill
     * @param trainSteps   timed training steps after the first (untimed, measures the gap)
     * @param rank         LoRA rank on every target
     * @param base         how the frozen base is held
     * @param seed         seeds prompts, sampling, adapter and rewards
     */
    record Settings(int prompts, int samples, int promptTokens, int newTokens, int warmupTokens, float temperature,
                    int microBatch, int trainSteps, int rank, BaseFormat base, long seed) {
    }

    /** A rollout: its completions in request order, wall seconds and generated tokens. */
    record Rollout(List<Completion> completions, double seconds, long tokens) {
        double tokensPerSecond() {
            return tokens / seconds;
        }
    }

    /**
     * A mode's figures; NaN (or 0 tokens) for what was not measured.
     *
     * @param decodeTokens generated tokens of the timed rollout
     * @param trainTokens  prompt + response tokens through the timed training steps
     * @param gapTokens    tokens the gap is over
     * @param gapExact     of them, recomputed exactly equal to the rollout's
     */
    record Figures(String mode, long decodeTokens, double decodeSeconds, long trainTokens, double trainSeconds,
                   double gapMean, double gapMax, long gapExact, long gapTokens, String note) {
        double decodeTokensPerSecond() {
            return decodeTokens == 0 ? Double.NaN : decodeTokens / decodeSeconds;
        }

        double trainTokensPerSecond() {
            return trainTokens == 0 ? Double.NaN : trainTokens / trainSeconds;
        }

        double exactFraction() {
            return gapTokens == 0 ? Double.NaN : (double) gapExact / gapTokens;
        }
    }

    static final List<String> TARGETS = List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj");
    /** An MoE model's adapter: the attention projections as modules, the routed experts as fused parameters. */
    static final List<String> MOE_TARGETS = List.of("q_proj", "k_proj", "v_proj", "o_proj");
    static final List<String> MOE_PARAMETERS = List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj");

    /**
     * The bench's model: how each mode's backend builds it, and where its adapter goes.
     *
     * @param open       builds the model on a backend; the {@link Built} owns what closing releases
     * @param modules    LoRA target modules
     * @param parameters LoRA target parameters (fused experts)
     */
    record Model(java.util.function.Function<Backend, Built> open, List<String> modules, List<String> parameters) {
        /** A dense model folder loaded as {@code base}: every projection a target module. */
        static Model folder(Path dir, BaseFormat base) {
            return new Model(b -> {
                LoadedModel m = LoadedModel.load(dir, b, base);
                return new Built(m.model(), m);
            }, TARGETS, List.of());
        }
    }

    /** A built model and what closing it releases (the model itself, or the checkpoint it maps). */
    record Built(CausalLM model, AutoCloseable owner) {
    }

    private final String mode;
    private final Backend backend;
    private final org.orbitrl.kernels.OpProfiler profiler;
    private final Settings settings;
    private final Built loaded;
    private final RolloutEngine engine;
    private final PolicyStepProbe trainer;
    private final int vocab;
    private final double loadSeconds;

    /**
     * Builds {@code source}'s model on {@code backend} and builds the adapter, the rollout engine and the trainer; with a
     * {@code profiler} (wrapping {@code backend}) everything runs through it and {@link #measure} prints where the timed
     * rollout's and training steps' time went.
     */
    ExactModeRun(String mode, Backend target, Model source, Settings s, org.orbitrl.kernels.OpProfiler profiler) {
        this.mode = mode;
        this.profiler = profiler;
        Backend backend = profiler != null ? profiler.backend() : target;
        this.backend = backend;
        this.settings = s;
        long t0 = System.nanoTime();
        this.loaded = source.open().apply(backend);
        try {
            Trainable model = (Trainable) loaded.model();
            this.vocab = model.vocabSize();
            TensorAllocator memory = backend.allocator();
            AdapterConfig cfg = AdapterConfig.lora(s.rank(), 2.0 * s.rank(), source.modules(), source.parameters());
            LoraAdapter adapter = LoraAdapter.create(cfg, (AdapterTargets) model, memory, s.seed());
            randomiseB(adapter, memory, s.seed());
            // rollout as the RL loop runs it: a view of the same weights, the adapter published into its slots
            CausalLM view = model.view();
            AdapterSlots slots = new AdapterSlots((AdapterTargets) view,
                    () -> LoraAdapter.create(cfg, (AdapterTargets) view, memory, s.seed()), 0, memory);
            slots.publish(adapter, 1);
            int sequences = s.prompts() * s.samples();
            int block = 16;
            int perSeq = (s.promptTokens() + s.newTokens() + block - 1) / block + 1;
            this.engine = new RolloutEngine(view, slots, new RolloutEngine.Options(block, Math.max(64, sequences * perSeq),
                    sequences, Math.max(4096, sequences * 64)), null);
            List<Parameter> params = new ArrayList<>();
            for (Adapter.Param p : adapter.params()) {
                params.add(new Parameter(p.name(), p.value()));
            }
            AdamWConfig ac = new AdamWConfig(0.9, 0.999, 1e-8, 0.0, 1.0);
            LearningRateSchedule lr = new LearningRateSchedule.Constant(0);
            AdamW adamw = memory.hostMemory() ? new AdamW(ac, lr, params, memory) : new AdamW(ac, lr, params, backend);
            this.trainer = new PolicyStepProbe(model, adapter, adamw, s.microBatch(), true, s.temperature(), 2.0);
        } catch (RuntimeException | InterruptedException e) {
            closeModel();
            if (e instanceof InterruptedException) {
                Thread.currentThread().interrupt();
            }
            throw new IllegalStateException(mode + ": building the model, adapter and engine: " + e.getMessage(), e);
        }
        this.loadSeconds = (System.nanoTime() - t0) / 1e9;
    }

    double loadSeconds() {
        return loadSeconds;
    }

    /** LoRA B (PEFT's zero at creation) set to seeded uniform values in ±0.02, so the adapter changes every output. */
    private static void randomiseB(LoraAdapter adapter, TensorAllocator memory, long seed) {
        SplittableRandom rnd = new SplittableRandom(seed ^ 0x5DEECE66DL);
        for (LoraAdapter.Param p : adapter.params()) {
            if (!p.name().endsWith("lora_B.weight")) {
                continue;
            }
            float[] v = new float[Math.toIntExact(p.value().numel())];   // [out, r]
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) ((rnd.nextDouble() * 2 - 1) * 0.02);
            }
            memory.copy(Tensor.of(v, p.value().shape()), p.value());
        }
    }

    /** P random prompts (seeded, the same in every mode), S samples each, {@code newTokens} tokens per sample. */
    Rollout rollout(int newTokens, long seed) {
        Settings s = settings;
        SplittableRandom rnd = new SplittableRandom(s.seed());
        List<Request> requests = new ArrayList<>();
        for (int i = 0; i < s.prompts(); i++) {
            int[] prompt = new int[s.promptTokens()];
            for (int t = 0; t < prompt.length; t++) {
                prompt[t] = rnd.nextInt(vocab);
            }
            SamplingParams p = SamplingParams.sample(s.temperature(), 1f, newTokens, seed * 1_000_003L + i);
            requests.add(new Request("p" + i, prompt, p, s.samples()));
        }
        long t0 = System.nanoTime();
        List<Completion> out = engine.generate(requests);   // reads tokens back every step: finished when it returns
        double seconds = (System.nanoTime() - t0) / 1e9;
        long tokens = 0;
        for (Completion c : out) {
            tokens += c.tokens().length;
        }
        return new Rollout(out, seconds, tokens);
    }

    /** The completions as the RL loop logs them: group = prompt, every token in the loss, seeded rewards in [0, 1). */
    List<SampleRecord> samples(List<Completion> completions) {
        SplittableRandom rnd = new SplittableRandom(settings.seed() + 17);
        List<SampleRecord> out = new ArrayList<>();
        for (int i = 0; i < completions.size(); i++) {
            Completion c = completions.get(i);
            boolean[] mask = new boolean[c.tokens().length];
            java.util.Arrays.fill(mask, true);
            out.add(SampleRecord.builder().job("exact-bench").promptId(c.requestId()).group(i / settings.samples(),
                            c.sample(), settings.samples()).promptTokens(c.prompt())
                    .response(c.tokens(), c.policyLogprobs(), mask).version(1).reward(rnd.nextDouble(), Map.of())
                    .finishReason(FinishReason.valueOf(c.reason().name())).temperature(settings.temperature())
                    .timings(new SampleTimings(1, 2, 0)).build());
        }
        return out;
    }

    /** One training step on {@code samples}; its figures include the train/rollout gap. */
    PolicyStepProbe.Step train(List<SampleRecord> samples) {
        PolicyStepProbe.Step r = trainer.train(samples, settings.samples());
        if (r.skipped()) {
            throw new IllegalStateException(mode + ": the training step was skipped: " + r.skipReason());
        }
        return r;
    }

    /** Prompt + response tokens of {@code samples}: what a training step runs forward and backward. */
    static long tokens(List<SampleRecord> samples) {
        long n = 0;
        for (SampleRecord r : samples) {
            n += r.promptTokens().length + r.responseLength();
        }
        return n;
    }

    /**
     * The mode's measurement: warm-up rollout, timed rollout, a first training step (warm-up; its
     * gap is the figure), then the timed training steps, each phase begun only before
     * {@code deadline} (System.nanoTime) and printed to {@code log} as it ends.
     */
    Figures measure(long deadline, PrintStream log) {
        Settings s = settings;
        log.printf("%s: model and adapter loaded in %.1f s on %s%n", mode, loadSeconds, backend.name());
        if (System.nanoTime() > deadline) {
            return new Figures(mode, 0, Double.NaN, 0, Double.NaN, Double.NaN, Double.NaN, 0, 0, "time budget spent before rollout");
        }
        Rollout warm = rollout(s.warmupTokens(), s.seed() + 1);
        log.printf("%s: warm-up rollout %d tokens in %.2f s%n", mode, warm.tokens(), warm.seconds());
        if (System.nanoTime() > deadline) {
            return new Figures(mode, 0, Double.NaN, 0, Double.NaN, Double.NaN, Double.NaN, 0, 0, "time budget spent after warm-up");
        }
        startProfile("rollout");
        Rollout r = rollout(s.newTokens(), s.seed());
        printProfile(log);
        RolloutEngine.Stats st = engine.stats();
        log.printf("%s: rollout %d prompts x %d samples x %d tokens: %d tokens in %.2f s (prompt prefills included),"
                        + " %.1f tokens/s; engine so far: %d of %d steps replayed as graphs%s%n", mode,
                s.prompts(), s.samples(), s.newTokens(), r.tokens(), r.seconds(), r.tokensPerSecond(), st.graphSteps(), st.steps(),
                engine.eagerBatches().isEmpty() ? "" : ", eager batches " + engine.eagerBatches());
        if (System.nanoTime() > deadline) {
            return new Figures(mode, r.tokens(), r.seconds(), 0, Double.NaN, Double.NaN, Double.NaN, 0, 0,
                    "time budget spent after rollout");
        }
        List<SampleRecord> samples = samples(r.completions());
        long perStep = tokens(samples);
        long t0 = System.nanoTime();
        PolicyStepProbe.Step first = train(samples);
        double firstSeconds = (System.nanoTime() - t0) / 1e9;
        log.printf("%s: train/rollout log-prob gap over %d tokens: mean %.3e, max %.3e, exactly equal %d (%.4f);"
                        + " first training step (warm-up) %.2f s, loss %.4e%n", mode, first.tokens(), first.gapMean(),
                first.gapMax(), first.gapExact(), (double) first.gapExact() / first.tokens(), firstSeconds, first.loss());
        long trainTokens = 0;
        double trainSeconds = 0;
        String note = "";
        startProfile("train");
        for (int i = 0; i < s.trainSteps(); i++) {
            if (System.nanoTime() > deadline) {
                note = "time budget spent after " + i + " of " + s.trainSteps() + " timed training steps";
                break;
            }
            long t1 = System.nanoTime();
            PolicyStepProbe.Step step = train(samples);
            double sec = (System.nanoTime() - t1) / 1e9;
            trainTokens += perStep;
            trainSeconds += sec;
            log.printf("%s: training step %d: %d tokens in %.2f s, %.1f tokens/s (gap max %.3e)%n", mode, i + 1, perStep,
                    sec, perStep / sec, step.gapMax());
        }
        printProfile(log);
        return new Figures(mode, r.tokens(), r.seconds(), trainTokens, trainSeconds, first.gapMean(), first.gapMax(),
                first.gapExact(), first.tokens(), note);
    }

    /** With a profiler: counts what follows under {@code phase}, from zero. */
    private void startProfile(String phase) {
        if (profiler != null) {
            profiler.reset();
            profiler.phase(phase);
        }
    }

    /** With a profiler: prints what it counted since {@link #startProfile}. */
    private void printProfile(PrintStream log) {
        if (profiler != null) {
            log.print(mode + ": " + profiler.report(30));
        }
    }

    @Override
    public void close() {
        engine.close();
        closeModel();
    }

    private void closeModel() {
        try {
            loaded.owner().close();
        } catch (Exception e) {
            throw new IllegalStateException(mode + ": closing the model: " + e.getMessage(), e);
        }
    }
}
