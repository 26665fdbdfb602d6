package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.Backend;
import org.orbitrl.model.parallel.AdapterParallel;
import org.orbitrl.model.parallel.RankGroups;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.scheduler.job.DeviceMemory;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.job.Tunables;
import org.orbitrl.scheduler.job.checkpoint.CheckpointWriter;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleGroup;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogReader;
import org.orbitrl.scheduler.log.SampleLogWriter;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.report.EvalRecord;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.StepRecord;
import org.orbitrl.scheduler.rollout.Completion;
import org.orbitrl.scheduler.rollout.Request;
import org.orbitrl.scheduler.rollout.RolloutEngine;
import org.orbitrl.scheduler.rollout.SamplingParams;
import org.orbitrl.scheduler.task.Evaluation;
import org.orbitrl.scheduler.task.Problem;
import org.orbitrl.scheduler.task.Reward;
import org.orbitrl.scheduler.task.Task;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.nio.file.Files;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.IntFunction;

/**
 * Orbit's RL loop ({@code runner: rl}). Synchronous mode (the default): rollout with the serving
 * adapter version, rewards, the sample log, training on the logged samples, publication of the
 * next adapter version into the rollout engines' idle slots; {@link #syncStep} is the loop body
 * and reads top to bottom. Async mode delegates the step to {@link AsyncStep}. On one device the
 * trainer and the rollout engine are two views of one frozen base (weights shared, not copied),
 * each with its own adapter. Over several devices ({@link JobReplicas}): data-parallel trainers,
 * one a training device over its own copy of the base ({@link TrainerReplicas}), and rollout
 * engines, one a rollout device over its own copy or one a trainer over its weights
 * ({@link RolloutReplicas}); each adapter version is copied into every engine's idle slot.
 */
public final class RlJobRunner implements JobRunner {
    private static final Logger LOG = LoggerFactory.getLogger(RlJobRunner.class);
    private final JobContext ctx;
    private JobSpec spec;
    private volatile Tunables tunables;

    private volatile AccountingAllocator memory;
    private volatile long heldBase = -1;   // the trainer model's base bytes, counted once (they never change after load)
    private volatile Backend backend;
    private OpProfiler profiler;   // null unless -Dorbit.profile=true
    private PlanRequest planned;   // the request plan() checked, kept layers resolved; load() trains as it budgets
    private volatile JobPlan jobPlan;   // its bytes per device, beside each device's memory (null before plan())
    private LoadedModel base;
    private Trainable trainerModel;
    private Adapter trainerAdapter;
    private volatile RolloutReplicas rollout;   // read by the daemon's memory beans too
    private PolicyTrainer trainer;      // the first trainer's
    private volatile TrainerReplicas trainers;   // every training device's
    private Task task;
    private TextCodec codec;
    private SampleLog sampleLog;
    private SampleLogWriter writer;
    private SampleLogReader reader;
    private MetricsLog metrics;
    private AdapterPublisher publisher;
    private SampleFactory samples;
    private AsyncStep async;
    private TensorAllocator adapterMemory;

    private volatile RunnerState state = new RunnerState(0, 0, SampleLog.NO_INDEX, 0);
    private final Map<String, Double> gauges = new ConcurrentHashMap<>();

    /**
     * One rank of a job split with expert parallelism ({@link ExpertParallelRunner}): its index, its backend and its
     * groups.
     */
    record Rank(int index, Backend backend, RankGroups groups) {
    }

    private final Rank rank;   // null: the job's whole model here

    RlJobRunner(JobContext ctx) {
        this(ctx, null);
    }

    RlJobRunner(JobContext ctx, Rank rank) {
        this.ctx = ctx;
        this.spec = ctx.spec();
        this.tunables = spec.tunables();
        this.rank = rank;
    }

    @Override
    public JobPlan plan() throws JobException {
        if (rank == null) {
            RlPlan.requireRunnable(spec);
        }
        planned = RlPlan.checkedRequest(spec);
        jobPlan = RlPlan.plan(spec, planned);
        return jobPlan;
    }

    @Override
    public void load(org.orbitrl.scheduler.job.checkpoint.Checkpoint resumeFrom) throws JobException {
        if (rank == null) {
            RlPlan.requireRunnable(spec);
        }
        try {
            memory = new AccountingAllocator();
            boolean onDevice = spec.placement().backend() == org.orbitrl.scheduler.job.ComputeBackend.CUDA;
            int rolloutDevices = RlPlan.rolloutDevices(spec);   // devices [rollout 0 .. k-1, training k .. D-1]
            int devices = rank != null ? 1 : spec.placement().devices();
            if (devices > 1 && ctx.devices().size() != devices) {
                throw new JobException("job " + spec.name() + ": placement {devices: " + devices + ", rollout_devices: "
                        + rolloutDevices + "} needs " + devices + " devices, given " + ctx.devices());
            }
            int trainingDevices = devices - rolloutDevices;
            int cores = Runtime.getRuntime().availableProcessors();
            backend = rank != null ? rank.backend()
                    : onDevice ? JobReplicas.deviceBackend(spec, ctx.devices().isEmpty() ? List.of()   // none named: GPU 0
                            : ctx.devices().subList(rolloutDevices, rolloutDevices + 1))
                    : new CpuBackend(Math.max(1, cores / trainingDevices), memory);
            // adapters and optimizer state live where the model computes: host memory (accounted) or the device
            adapterMemory = onDevice ? backend.allocator() : memory;
            // -Dorbit.profile=true: every operation of the model and optimizer timed, written to profile.txt at the end
            profiler = Boolean.getBoolean("orbit.profile") ? OpProfiler.wrap(backend,
                    backend instanceof CudaBackend gpu ? gpu::synchronize : () -> { }) : null;
            Backend compute = profiler == null ? backend : profiler.backend();
            base = LoadedModel.load(spec.model().path(), compute, JobReplicas.baseFormat(spec), rank == null ? null : rank.groups());
            codec = TextCodec.forModel(spec.model().path(), base.spec());
            task = RlSetup.task(spec.task(), spec.eval().size());
            samples = new SampleFactory(spec, task, codec, () -> tunables, () -> state.adapterVersion());
            AdapterConfig cfg = RlSetup.adapterConfig(spec.adapter());
            // trainer: the loaded model and its trainable adapter; rollout: a view of the same weights with two slots
            trainerModel = (Trainable) base.model();
            trainerModel.setExpertChunk(RlPlan.expertChunk(spec));   // the chunk the plan budgets
            if (planned == null) {   // loaded without plan() first (an expert-parallel rank: its runner planned the job)
                planned = RlPlan.checkedRequest(spec);
                jobPlan = RlPlan.plan(spec, planned);
            }
            trainerModel.setKeptLayers(planned.keptLayers());   // the kept layers the plan budgets
            trainerModel.setOffloadedInputs(planned.recompute() && planned.offloadInputs());
            trainerAdapter = RlSetup.newAdapter(cfg, (AdapterTargets) trainerModel, adapterMemory, spec.seed(), true);
            boolean isAsync = spec.async().enabled();
            DType kvCache = spec.sampling().kvCache().dtype();
            if (kvCache != DType.F32 && backend instanceof CudaBackend gpu && gpu.exact()) {
                throw new IllegalArgumentException("sampling.kv_cache: " + spec.sampling().kvCache().name().toLowerCase(java.util.Locale.ROOT)
                        + " needs the default kernels; with -Dorbit.cuda.exact=true a decode step must equal the training forward bit"
                        + " for bit, which needs kv_cache: f32");
            }
            JobReplicas replicas = new JobReplicas(ctx, tunables, memory, planned, codec, cfg, backend, trainerModel,
                    trainerAdapter, adapterMemory);
            trainer = replicas.newTrainer(trainerModel, trainerAdapter, compute, adapterMemory);
            if (rank != null) {   // each rank's expert gradients summed over the group before the optimizer
                Adapter a = trainerAdapter;
                RankGroups g = rank.groups();
                trainer.completeGradientsWith(loss -> {
                    AdapterParallel.completeGradients(a, g);
                    return loss;   // every rank trained on the whole batch
                });
            }
            trainers = replicas.trainers(trainer, trainingDevices, rolloutDevices);
            rollout = replicas.engines(trainers, onDevice, isAsync);
            Files.createDirectories(ctx.dataDir());
            sampleLog = SampleLog.open(ctx.sampleLogDir());
            writer = sampleLog.writer();
            reader = sampleLog.reader();
            metrics = MetricsLog.open(ctx.dataDir());
            if (resumeFrom != null) {
                RlCheckpoint.restore(resumeFrom, this);
                if (rank != null) {   // the rank's own log: where it stopped reading there
                    state = state.withConsumedIndex(RlCheckpoint.rankConsumedIndex(resumeFrom, rank.index(), state.consumedIndex()));
                }
                trainers.copyFromFirst();   // every trainer resumes from the one adapter
            }
            reader.startAfter(state.consumedIndex());
            long restoredStep = resumeFrom == null ? -1 : state.step();
            long restoredVersion = state.adapterVersion();
            ResumeLeftovers.of(sampleLog, state.consumedIndex())
                    .ifPresent(l -> LOG.warn("job {}: {}", spec.name(), l.describe(restoredStep, restoredVersion)));
            // engine r copies from the trainer on its device where each engine has one (colocated), else the first's
            IntFunction<Adapter> sourceOf = rolloutDevices == 0 ? r -> trainers.trainers().get(r).adapter() : r -> trainerAdapter;
            rollout.publish(sourceOf, state.adapterVersion() + 1);   // rollout serves what the trainer holds
            state = new RunnerState(state.step(), state.adapterVersion() + 1, state.consumedIndex(), state.samplesTrained());
            publisher = new AdapterPublisher(rollout, sourceOf, trainerAdapter, writer, adapterMemory);
            if (isAsync) {
                async = new AsyncStep(ctx, spec, reader, trainers, publisher, metrics, memory, gauges, rollout,
                        sampleLog::writer, samples.producer(), firstRolloutStep(), null);
            }
        } catch (JobException e) {
            close();
            throw e;
        } catch (IOException | InterruptedException | RuntimeException e) {
            close();
            throw new JobException("loading job " + spec.name() + ": " + e.getMessage(), e);
        }
    }

    /**
     * One RL step, synchronous: rollout → reward → log → train → publish. The trainer reads the
     * samples back from the log by index, so a sample is trained exactly once across restarts.
     */
    @Override
    public StepMetrics step() throws JobException {
        if (async == null) {
            return syncStep();
        }
        AsyncStep.Result r = async.step(state, tunables);
        state = r.state();
        return r.metrics();
    }

    private StepMetrics syncStep() throws JobException {
        long t0 = System.nanoTime();
        phase("rollout");
        long step = state.step() + 1;
        long version = state.adapterVersion();
        var b = spec.batch();

        // 0. groups of this step that an interrupted attempt already logged are trained, not regenerated
        List<Problem> problems = task.trainBatch(spec.seed(), step, b.promptsPerStep());
        List<SampleRecord> batch = new ArrayList<>();
        long consumed = drain(batch, state.consumedIndex());
        java.util.Set<Long> logged = new java.util.HashSet<>();
        batch.forEach(r -> logged.add(r.groupId()));
        List<Integer> todo = new ArrayList<>();            // indices of the step's prompts still to roll out
        for (int i = 0; i < problems.size(); i++) {
            if (!logged.contains(SampleFactory.groupId(step, i))) {
                todo.add(i);
            }
        }

        // 1. rollout: prompts × G samples with the serving adapter version
        RolloutEngine.Stats before = rollout.stats();
        List<Completion> completions = rollout.generate(samples.requests(todo.stream().map(problems::get).toList(), step));
        long tRollout = System.nanoTime();
        RolloutEngine.Stats after = rollout.stats();

        // 2. reward, 3. log: each group appended to the sample queue as one entry
        long tokens = 0;
        for (int j = 0; j < todo.size(); j++) {
            int i = todo.get(j);
            Problem p = problems.get(i);
            List<SampleRecord> group = new ArrayList<>();
            for (int s = 0; s < b.samplesPerPrompt(); s++) {
                Completion c = completions.get(j * b.samplesPerPrompt() + s);
                Reward r = task.verify(p, codec.decode(c.tokens()));
                group.add(samples.record(step, i, s, p, c, r, t0));
                tokens += c.tokens().length;
            }
            writer.append(new SampleGroup(group));
        }
        long tReward = System.nanoTime();

        // 4. trainer: tail the queue for the step's groups (read back by index), one optimizer step on the adapter
        consumed = drain(batch, consumed);
        double rewardSum = 0;
        int correct = 0;
        for (SampleRecord r : batch) {
            rewardSum += r.reward();
            correct += r.rewardBreakdown().getOrDefault(Reward.CORRECT, 0.0) > 0 ? 1 : 0;
        }
        phase("train");
        PolicyTrainer.Outcome out = trainers.train(batch, b.samplesPerPrompt());
        phase("");
        long tTrain = System.nanoTime();

        // 5. publish v+1 into the rollout engine's idle slot (only the adapter moves)
        AdapterPublisher.Published pub = out.skipped() ? AdapterPublisher.Published.none(version)
                : publisher.publish(version + 1, step);
        long next = pub.version();
        double publishSeconds = pub.seconds();
        long publishBytes = pub.bytes();
        state = new RunnerState(step, next, consumed, state.samplesTrained() + batch.size());

        // metrics
        double seconds = (System.nanoTime() - t0) / 1e9;
        int n = Math.max(1, batch.size());
        Map<String, Double> extra = new TreeMap<>();
        extra.put("loss", out.loss());
        extra.put("grad_norm", out.gradNorm());
        extra.put("lr", out.lr());
        extra.put("kl", out.klMean());
        extra.put("clip_fraction", out.clipFraction());
        extra.put("rollout_seconds", (tRollout - t0) / 1e9);
        extra.put("rollout_engine_steps", (double) (after.steps() - before.steps()));   // summed over the engines
        extra.put("rollout_engines", (double) rollout.size());
        extra.put("trainers", (double) trainers.size());
        extra.put("rollout_graph_steps", (double) (after.graphSteps() - before.graphSteps()));
        extra.put("rollout_graph_arena_bytes", (double) after.graphArenaBytes());
        extra.put("rollout_graph_evictions", (double) (after.graphEvictions() - before.graphEvictions()));
        extra.put("reward_seconds", (tReward - tRollout) / 1e9);
        extra.put("train_seconds", (tTrain - tReward) / 1e9);
        extra.put("publish_seconds", publishSeconds);
        extra.put("publish_bytes", (double) publishBytes);
        extra.put("train_samples", (double) batch.size());
        extra.put("gap_exact_fraction", out.tokens() == 0 ? 1.0 : out.gapExact() / (double) out.tokens());
        extra.put("train_tokens_per_s", out.tokens() / Math.max(1e-9, (tTrain - tReward) / 1e9));
        if (out.skipped()) {
            extra.put("skipped", 1.0);
        }
        gauges.put("publish_bytes", (double) publishBytes);
        gauges.put("publish_seconds", publishSeconds);
        StepMetrics m = new StepMetrics(step, rewardSum / n, correct / (double) n, out.gapMean(), out.gapMax(), tokens,
                seconds, next, 0, 0, 0, batch.size(), new TreeMap<>(extra));
        metrics.step(new StepRecord(step, Instant.now(), m.rewardMean(), m.accuracy(), m.logprobGapMean(),
                m.logprobGapMax(), tokens, tokens / Math.max(1e-9, (tRollout - t0) / 1e9), seconds, next,
                new TreeMap<>(extra), memory.liveByName()));
        return m;
    }

    /** Appends every sample group logged after {@code after} to {@code out}; returns the last index read. */
    private long drain(List<SampleRecord> out, long after) {
        long last = after;
        for (LogEntry e; (e = reader.next()) != null; ) {
            if (e instanceof LogEntry.Group g) {
                out.addAll(g.group().samples());
            }
            last = reader.lastReadIndex();
        }
        return last;
    }

    /**
     * Async rollout steps number their groups after every group already in the log, so that
     * groups made after a restart never share an id with groups still waiting to be trained.
     */
    private long firstRolloutStep() {
        long max = (state.step() + 1_000_000L) * 1_000_000L;
        try (SampleLogReader r = sampleLog.reader()) {
            r.startAfter(state.consumedIndex());
            for (LogEntry e; (e = r.next()) != null; ) {
                if (e instanceof LogEntry.Group g) {
                    max = Math.max(max, g.group().groupId());
                }
            }
        }
        return max / 1_000_000L;
    }

    /** Accuracy at temperature 0 and pass@k over the held-out split, with the serving adapter. */
    @Override
    public EvalResult evaluate() throws JobException {
        if (async == null) {
            return evaluateNow();
        }
        try {
            async.rollout().quiesce();            // the engine serves one caller at a time
            return evaluateNow();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new JobException("interrupted while pausing rollout for evaluation");
        } finally {
            async.rollout().setPaused(false);
        }
    }

    private EvalResult evaluateNow() throws JobException {
        long t0 = System.nanoTime();
        var e = spec.eval();
        List<Problem> problems = task.evalSplit(e.size());
        List<Request> greedy = new ArrayList<>();
        List<Request> sampled = new ArrayList<>();
        for (int i = 0; i < problems.size(); i++) {
            int[] prompt = codec.encode(problems.get(i).prompt());
            SamplingParams g = new SamplingParams(0, 1, 0, 0, spec.batch().maxResponseTokens(), codec.stopTokens(),
                    task.stopStrings(), 0);
            greedy.add(Request.of("eval-greedy-" + i, prompt, g));
            if (e.samples() > 0) {
                sampled.add(new Request("eval-" + i, prompt, g.withSeed(spec.seed() + 17L * i)
                        .withTemperature(Math.max(1e-3f, (float) tunables.temperature())), e.samples()));
            }
        }
        List<Completion> gOut = rollout.generate(greedy);
        boolean[] gOk = new boolean[problems.size()];
        for (int i = 0; i < problems.size(); i++) {
            gOk[i] = task.verify(problems.get(i), codec.decode(gOut.get(i).tokens())).correct();
        }
        Evaluation ev;
        if (e.samples() > 0) {
            List<Completion> sOut = rollout.generate(sampled);
            boolean[][] sOk = new boolean[problems.size()][e.samples()];
            for (int i = 0; i < problems.size(); i++) {
                for (int k = 0; k < e.samples(); k++) {
                    sOk[i][k] = task.verify(problems.get(i), codec.decode(sOut.get(i * e.samples() + k).tokens())).correct();
                }
            }
            ev = Evaluation.of(gOk, sOk, e.passAtK());
        } else {
            ev = Evaluation.greedy(gOk);
        }
        EvalResult r = new EvalResult(state.step(), ev.accuracy(), ev.passAtK(), problems.size(), (System.nanoTime() - t0) / 1e9);
        metrics.eval(new EvalRecord(state.step(), Instant.now(), r.accuracy(), r.passAtK()));
        return r;
    }

    @Override
    public void checkpoint(CheckpointWriter out) throws IOException, JobException {
        RlCheckpoint.write(out, this);
    }

    @Override
    public RunnerState state() {
        return state;
    }

    @Override
    public void pause() {
        if (async != null) {
            async.rollout().setPaused(true);
        }
    }

    @Override
    public void resume() {
        if (async != null) {
            async.rollout().setPaused(false);
        }
    }

    @Override
    public void apply(Tunables t) throws JobException {
        this.tunables = t;
        if (trainers != null) {
            for (TrainerReplicas.Trainer r : trainers.trainers()) {
                r.trainer().setTemperature((float) t.temperature());
                r.trainer().optimizer().setSchedule(RlSetup.schedule(spec, t.learningRate()));
            }
        }
    }

    @Override
    public Map<String, Double> gauges() {
        return Map.copyOf(gauges);
    }

    /**
     * Each device's memory, by category, with its plan: on GPUs what every allocator computing there holds (the trainer's,
     * an engine's own, a rollout device's copy of the base), each counted once; on the CPU the host's accounted memory,
     * under the job's first device.
     */
    @Override
    public List<DeviceMemory> memory() {
        if (memory == null) {
            return List.of();
        }
        List<String> devices = ctx.devices().isEmpty() ? List.of("cpu:0") : ctx.devices();
        if (backend instanceof CudaBackend && (trainers == null || rollout == null)) {
            return List.of();   // loading: the GPUs' allocators are not all there yet
        }
        if (!(backend instanceof CudaBackend)) {
            Map<MemoryCategory, Long> live = memory.live();
            Map<MemoryCategory, Long> peak = memory.peak();
            Trainable m = trainerModel;
            long base = heldBase;
            if (base < 0 && m != null) {
                base = m.heldBaseBytes();
                heldBase = base;
            }
            if (base > 0 && live.get(MemoryCategory.BASE_WEIGHTS) == 0) {   // read in place from the checkpoint's files
                live.put(MemoryCategory.BASE_WEIGHTS, base);
                peak.put(MemoryCategory.BASE_WEIGHTS, base);
            }
            return List.of(new DeviceMemory(devices.get(0), live, peak, plannedBytes(0)));
        }
        Map<String, java.util.Set<CudaAllocator>> allocators = new java.util.LinkedHashMap<>();
        trainers.trainers().forEach(t -> allocators.computeIfAbsent(t.device(), d -> java.util.Collections.newSetFromMap(
                new java.util.IdentityHashMap<>())).add(((CudaBackend) t.backend()).allocator()));
        rollout.replicas().forEach(r -> allocators.computeIfAbsent(r.device(), d -> java.util.Collections.newSetFromMap(
                new java.util.IdentityHashMap<>())).add(((CudaBackend) r.backend()).allocator()));
        List<DeviceMemory> out = new ArrayList<>();
        allocators.forEach((device, held) -> {
            Map<MemoryCategory, Long> live = new java.util.EnumMap<>(MemoryCategory.class);
            Map<MemoryCategory, Long> peak = new java.util.EnumMap<>(MemoryCategory.class);
            for (CudaAllocator a : held) {
                for (MemoryCategory c : MemoryCategory.values()) {
                    live.merge(c, a.liveBytes(c), Long::sum);
                    peak.merge(c, a.peakBytes(c), Long::sum);   // each allocator's own peak: an upper bound of the sum's
                }
            }
            out.add(new DeviceMemory(device, live, peak, plannedBytes(devices.indexOf(device))));
        });
        return out;
    }

    /** The plan's bytes of the job's device {@code i} (the plan names a job's devices by position), or none. */
    private Map<MemoryCategory, Long> plannedBytes(int i) {
        JobPlan p = jobPlan;
        if (p == null || i < 0 || i >= p.bytes().size()) {
            return Map.of();
        }
        return new ArrayList<>(p.bytes().values()).get(i);
    }

    /** Names what the profiler counts next (when profiling). */
    private void phase(String name) {
        if (profiler != null) {
            profiler.phase(name);
        }
    }

    @Override
    public void close() {
        AutoCloseable profile = profiler == null ? null : () -> {   // -Dorbit.profile=true: the operation profile
            Files.createDirectories(ctx.dataDir());
            Files.writeString(ctx.dataDir().resolve("profile.txt"), profiler.report(60));
        };
        // in dependency order: the rollout thread before the engine it drives, the model before its backend
        AutoCloseable[] owned = {profile, async, rollout, trainers, metrics, reader, writer, sampleLog, base,
                rank == null ? backend : null};   // a rank's backend is its runner's
        Exception first = Closing.all(java.util.Arrays.asList(owned));
        if (first != null) {
            throw new IllegalStateException("closing job " + spec.name() + ": " + first.getMessage(), first);
        }
    }

    // ---- state access for the checkpoint code
    Adapter trainerAdapter() {
        return trainerAdapter;
    }

    /** Where the adapters' tensors live: the accounted host allocator, or the device's. */
    TensorAllocator adapterMemory() {
        return adapterMemory;
    }

    PolicyTrainer trainer() {
        return trainer;
    }

    void restoreState(RunnerState s) {
        this.state = s;
    }

    JobSpec spec() {
        return spec;
    }
}
