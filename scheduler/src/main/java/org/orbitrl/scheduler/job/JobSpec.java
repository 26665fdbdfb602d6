package org.orbitrl.scheduler.job;

import java.nio.file.Path;
import java.util.regex.Pattern;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * One RL job, as its YAML file describes it ({@code conf/jobs.d/example.yaml} shows every key
 * with its default and meaning). Immutable and validated: an instance always holds a runnable
 * configuration. Fields marked {@link Tunable} may change while the job runs ({@link #with});
 * all others are fixed for the life of the job.
 *
 * @param name       the job's name: its file name without {@code .yaml}
 * @param runner     the {@link JobRunner} implementation that runs it ({@code rl}: the RL loop)
 * @param model      the frozen base
 * @param adapter    the adapter that trains
 * @param algorithm  the objective and its coefficients
 * @param kl         the KL penalty to the reference (the base without the adapter)
 * @param tisCap     truncated importance sampling: per-token ratio π_train/π_rollout capped at this
 *                   value (0 = no correction)
 * @param batch      prompts and samples per step, token limits
 * @param sampling   rollout sampling
 * @param optimizer  AdamW and the learning-rate schedule
 * @param steps      optimizer steps the job runs
 * @param eval       evaluation on held-out prompts
 * @param checkpoint checkpoint cadence
 * @param seed       seed of everything random in the job
 * @param async      asynchronous rollout and its staleness bound
 * @param task       where prompts and answers come from
 * @param placement  devices
 * @param memory     memory choices checked by the planner
 */
public record JobSpec(String name, String runner, ModelSpec model, AdapterSpec adapter, AlgorithmSpec algorithm,
                      KlSpec kl, double tisCap, BatchSpec batch, SamplingSpec sampling, OptimizerSpec optimizer,
                      long steps, EvalSpec eval, CheckpointSpec checkpoint, long seed, AsyncSpec async,
                      TaskSpec task, PlacementSpec placement, MemorySpec memory) {
    /** Job names: what may appear in a file name, a JMX object name and a folder name alike. */
    public static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]{0,63}");
    private static final Pattern RUNNER = Pattern.compile("[a-z][a-z0-9_-]{0,31}");

    public JobSpec {
        Checks c = new Checks();
        ownRules(c, name, runner, tisCap, steps);
        c.require(model != null && adapter != null && algorithm != null && kl != null && batch != null
                && sampling != null && optimizer != null && eval != null && checkpoint != null && async != null
                && task != null && placement != null && memory != null, "", "every section is required");
        c.done();
        c = new Checks();
        c.require(batch.samplesPerPrompt() >= 2, "batch.samples_per_prompt", "group-relative advantages ("
                + Section.yamlName(algorithm.name()) + ") need at least 2 samples per prompt, got "
                + batch.samplesPerPrompt());
        c.require(optimizer.warmupSteps() <= steps, "optimizer.warmup_steps", "must not exceed steps ("
                + steps + "), got " + optimizer.warmupSteps());
        c.done();
    }

    /** The rules on this record's own (non-section) fields; also checked when a section is invalid. */
    private static void ownRules(Checks c, String name, String runner, double tisCap, long steps) {
        c.require(name != null && NAME.matcher(name).matches(), "name", "a job name is 1 to 64 letters, digits, '.', '_'"
                + " or '-', starting with a letter or digit; got '" + name + "'");
        c.require(runner != null && RUNNER.matcher(runner).matches(), "runner",
                "expected a runner name such as rl (lower case letters, digits, '_', '-'), got '" + runner + "'");
        c.require(tisCap == 0 || (Double.isFinite(tisCap) && tisCap >= 1 && tisCap <= 1e6), "tis_cap",
                "must be 0 (off) or between 1 and 1000000, got " + Checks.fmt(tisCap));
        c.range("steps", steps, 1, 1_000_000_000);
    }

    /** The values that may change while the job runs. */
    public Tunables tunables() {
        return new Tunables(optimizer.lr(), sampling.temperature(), async.stalenessBound(), eval.interval());
    }

    /** This job with another async section (a command-line or test override). */
    public JobSpec withAsync(AsyncSpec a) {
        return new JobSpec(name, runner, model, adapter, algorithm, kl, tisCap, batch, sampling, optimizer, steps, eval,
                checkpoint, seed, a, task, placement, memory);
    }

    /** This job with another evaluation section (a command-line or test override). */
    public JobSpec withEval(EvalSpec e) {
        return new JobSpec(name, runner, model, adapter, algorithm, kl, tisCap, batch, sampling, optimizer, steps, e,
                checkpoint, seed, async, task, placement, memory);
    }

    /** This job with another model section (a command-line or test override). */
    public JobSpec withModel(ModelSpec m) {
        return new JobSpec(name, runner, m, adapter, algorithm, kl, tisCap, batch, sampling, optimizer, steps, eval,
                checkpoint, seed, async, task, placement, memory);
    }

    /** This job with another adapter section (a command-line or test override). */
    public JobSpec withAdapter(AdapterSpec a) {
        return new JobSpec(name, runner, model, a, algorithm, kl, tisCap, batch, sampling, optimizer, steps, eval,
                checkpoint, seed, async, task, placement, memory);
    }

    /** This job with another batch section (a command-line or test override). */
    public JobSpec withBatch(BatchSpec b) {
        return new JobSpec(name, runner, model, adapter, algorithm, kl, tisCap, b, sampling, optimizer, steps, eval,
                checkpoint, seed, async, task, placement, memory);
    }

    /** This job with another placement (a command-line or test override). */
    public JobSpec withPlacement(PlacementSpec p) {
        return new JobSpec(name, runner, model, adapter, algorithm, kl, tisCap, batch, sampling, optimizer, steps, eval,
                checkpoint, seed, async, task, p, memory);
    }

    /** This job with another step count (a command-line override for short runs). */
    public JobSpec withSteps(long n) {
        return new JobSpec(name, runner, model, adapter, algorithm, kl, tisCap, batch, sampling, optimizer, n, eval,
                checkpoint, seed, async, task, placement, memory);
    }

    /** This job with new tunable values (validated by the records they land in). */
    public JobSpec with(Tunables t) {
        OptimizerSpec o = optimizer;
        SamplingSpec s = sampling;
        AsyncSpec a = async;
        EvalSpec e = eval;
        return new JobSpec(name, runner, model, adapter, algorithm, kl, tisCap, batch,
                new SamplingSpec(t.temperature(), s.topP(), s.topK(), s.minP(), s.decodeGraphs(), s.kvCache()),
                new OptimizerSpec(t.learningRate(), o.schedule(), o.warmupSteps(), o.minLrRatio(), o.beta1(), o.beta2(),
                        o.eps(), o.weightDecay(), o.gradClip()),
                steps, new EvalSpec(t.evalInterval(), e.set(), e.size(), e.samples(), e.passAtK()), checkpoint, seed,
                new AsyncSpec(a.enabled(), t.stalenessBound(), a.partialRollouts(), a.maxLagGroups(), a.priority()), task, placement,
                memory);
    }

    static JobSpec read(Section s, String name, Path baseDir) {
        String runner = s.string("runner", "rl");
        ModelSpec model = ModelSpec.read(s.section("model"), baseDir);
        AdapterSpec adapter = AdapterSpec.read(s.section("adapter"));
        AlgorithmSpec algorithm = AlgorithmSpec.read(s.section("algorithm"));
        KlSpec kl = KlSpec.read(s.section("kl"));
        double tisCap = s.number("tis_cap", 2.0);
        BatchSpec batch = BatchSpec.read(s.section("batch"));
        SamplingSpec sampling = SamplingSpec.read(s.section("sampling"));
        OptimizerSpec optimizer = OptimizerSpec.read(s.section("optimizer"));
        long steps = s.longValue("steps", 100);
        EvalSpec eval = EvalSpec.read(s.section("eval"), baseDir);
        CheckpointSpec checkpoint = CheckpointSpec.read(s.section("checkpoint"));
        long seed = s.longValue("seed", 1234);
        AsyncSpec async = AsyncSpec.read(s.section("async"));
        TaskSpec task = TaskSpec.read(s.section("task"), baseDir);
        PlacementSpec placement = PlacementSpec.read(s.section("placement"));
        MemorySpec memory = MemorySpec.read(s.section("memory"));
        if (model == null || adapter == null || algorithm == null || kl == null || batch == null || sampling == null
                || optimizer == null || eval == null || checkpoint == null || async == null || task == null
                || placement == null || memory == null) {
            s.build(() -> { // this level's own rules still count; the sections' problems say the rest
                Checks c = new Checks();
                ownRules(c, name, runner, tisCap, steps);
                c.done();
                return null;
            });
            return null;
        }
        return s.build(() -> new JobSpec(name, runner, model, adapter, algorithm, kl, tisCap, batch, sampling, optimizer,
                steps, eval, checkpoint, seed, async, task, placement, memory));
    }
}
