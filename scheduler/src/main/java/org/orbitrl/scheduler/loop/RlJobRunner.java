package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.HostStagedRanks;
import org.orbitrl.kernels.comm.LocalGroup;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.model.parallel.AdapterParallel;
import org.orbitrl.model.parallel.RankGroups;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.scheduler.job.DeviceMemory;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.AsyncSpec;
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
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.AdamWConfig;
import org.orbitrl.scheduler.rl.Parameter;
import org.orbitrl.scheduler.rollout.Completion;
import org.orbitrl.scheduler.rollout.Request;
import org.orbitrl.scheduler.rollout.RolloutEngine;
import org.orbitrl.scheduler.rollout.SamplingParams;
import org.orbitrl.scheduler.task.Evaluation;
import org.orbitrl.scheduler.task.Problem;
import org.orbitrl.scheduler.task.Reward;
import org.orbitrl.scheduler.task.Task;

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
 * next adapter version into the rollout engine's idle slot; {@link #syncStep} is the loop body
 * and reads top to bottom. Async mode delegates the step to {@link AsyncStep}. The trainer and
 * the rollout engine are two views of one frozen base (weights shared, not copied), each with its
 * own adapter; with a rollout GPU ({@code placement: {backend: cuda, devices: 2, rollout_devices: 1}})
 * the engine runs on the first GPU over its own copy of the base, the trainer on the second, and
 * each adapter version is copied GPU to GPU into the engine's idle slot.
 */
public final class RlJobRunner implements JobRunner {
    private final JobContext ctx;
    private JobSpec spec;
    private volatile Tunables tunables;

    private AccountingAllocator memory;
    private Backend backend;
    private OpProfiler profiler;   // null unless -Dorbit.profile=true
    private PlanRequest planned;   // the request plan() checked, kept layers resolved; load() trains as it budgets
    private LoadedModel base;
    private Trainable trainerModel;
    private Adapter trainerAdapter;
    private RolloutReplicas rollout;
    private PolicyTrainer trainer;      // the first trainer's
    private TrainerReplicas trainers;   // every training device's
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

    /** One rank of a job split with expert parallelism ({@link ExpertParallelRunner}): its backend and its groups. */
    record Rank(Backend backend, RankGroups groups) {
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
        return RlPlan.plan(spec, planned);
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
                    : onDevice ? deviceBackend(spec, ctx.devices().subList(rolloutDevices, rolloutDevices + 1))
                    : new CpuBackend(Math.max(1, cores / trainingDevices), memory);
            // adapters and optimizer state live where the model computes: host memory (accounted) or the device
            adapterMemory = onDevice ? backend.allocator() : memory;
            // -Dorbit.profile=true: every operation of the model and optimizer timed, written to profile.txt at the end
            profiler = Boolean.getBoolean("orbit.profile") ? OpProfiler.wrap(backend,
                    backend instanceof CudaBackend gpu ? gpu::synchronize : () -> { }) : null;
            Backend compute = profiler == null ? backend : profiler.backend();
            base = LoadedModel.load(spec.model().path(), compute, baseFormat(spec), rank == null ? null : rank.groups());
            codec = TextCodec.forModel(spec.model().path(), base.spec());
            task = RlSetup.task(spec.task(), spec.eval().size());
            samples = new SampleFactory(spec, task, codec, () -> tunables, () -> state.adapterVersion());
            AdapterConfig cfg = RlSetup.adapterConfig(spec.adapter());
            // trainer: the loaded model and its trainable adapter; rollout: a view of the same weights with two slots
            trainerModel = (Trainable) base.model();
            trainerModel.setExpertChunk(RlPlan.expertChunk(spec));   // the chunk the plan budgets
            if (planned == null) {   // loaded without plan() first
                planned = RlPlan.checkedRequest(spec);
            }
            trainerModel.setKeptLayers(planned.keptLayers());   // the kept layers the plan budgets
            trainerModel.setOffloadedInputs(planned.recompute() && planned.offloadInputs());
            trainerAdapter = RlSetup.newAdapter(cfg, (AdapterTargets) trainerModel, adapterMemory, spec.seed());
            boolean isAsync = spec.async().enabled();
            DType kvCache = spec.sampling().kvCache().dtype();
            if (kvCache != DType.F32 && backend instanceof CudaBackend gpu && gpu.exact()) {
                throw new IllegalArgumentException("sampling.kv_cache: " + spec.sampling().kvCache().name().toLowerCase(java.util.Locale.ROOT)
                        + " needs the default kernels; with -Dorbit.cuda.exact=true a decode step must equal the training forward bit"
                        + " for bit, which needs kv_cache: f32");
            }
            trainer = newTrainer(trainerModel, trainerAdapter, compute, adapterMemory);
            if (rank != null) {   // each rank's expert gradients summed over the group before the optimizer
                Adapter a = trainerAdapter;
                RankGroups g = rank.groups();
                trainer.completeGradientsWith(loss -> {
                    AdapterParallel.completeGradients(a, g);
                    return loss;   // every rank trained on the whole batch
                });
            }
            trainers = trainerReplicas(cfg, trainingDevices, rolloutDevices);
            rollout = rolloutEngines(cfg, onDevice, isAsync);
            Files.createDirectories(ctx.dataDir());
            sampleLog = SampleLog.open(ctx.sampleLogDir());
            writer = sampleLog.writer();
            reader = sampleLog.reader();
            metrics = MetricsLog.open(ctx.dataDir());
            if (resumeFrom != null) {
                RlCheckpoint.restore(resumeFrom, this);
                trainers.copyFromFirst();   // every trainer resumes from the one adapter
            }
            reader.startAfter(state.consumedIndex());
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
     * The CUDA backend for {@code placement.backend: cuda} on the GPU the daemon gave the job ({@code cuda:N}, the first of
     * {@code devices}; GPU 0 when it names none), exact kernels when {@code -Dorbit.cuda.exact=true}; where there is no
     * such GPU, a job error that names the job file's key and says why.
     */
    static Backend deviceBackend(JobSpec spec, java.util.List<String> devices) throws JobException {
        try {
            return Backends.named(gpuOf(devices));
        } catch (IllegalStateException | UnsatisfiedLinkError | NoClassDefFoundError e) {
            throw new JobException("job " + spec.name() + ": placement.backend: cuda cannot be used here: "
                    + e.getMessage() + " (use placement.backend: cpu)", e);
        }
    }

    /** The backend name of the job's GPU: its first device when that is a CUDA device id ({@code cuda:N}), else {@code cuda}. */
    static String gpuOf(java.util.List<String> devices) {
        return !devices.isEmpty() && devices.get(0).startsWith("cuda:") ? devices.get(0) : "cuda";
    }

    /** The policy trainer of {@code model}'s adapter: its AdamW over the adapter's tensors, where they live. */
    private PolicyTrainer newTrainer(Trainable model, Adapter adapter, Backend compute, TensorAllocator adapters) {
        List<Parameter> params = new ArrayList<>();
        for (Adapter.Param p : adapter.params()) {
            params.add(new Parameter(p.name(), p.value()));
        }
        var o = spec.optimizer();
        var b = spec.batch();
        AdamWConfig adamwConfig = new AdamWConfig(o.beta1(), o.beta2(), o.eps(), o.weightDecay(), o.gradClip());
        AdamW adamw = !adapters.hostMemory()
                ? new AdamW(adamwConfig, RlSetup.schedule(spec, tunables.learningRate()), params, compute)
                : new AdamW(adamwConfig, RlSetup.schedule(spec, tunables.learningRate()), params, memory);
        return new PolicyTrainer(model, adapter, adamw, RlSetup.advantages(spec.algorithm().name()),
                RlSetup.loss(spec), RlSetup.normalisation(spec.algorithm().name()),
                (double) b.samplesPerPrompt() * b.maxResponseTokens(), spec.tisCap(), b.microBatch(),
                spec.memory().recompute(), (float) tunables.temperature());
    }

    /**
     * The trainers: the first (the loaded model, its adapter and trainer), and with {@code m} training devices one more a
     * device, each over its own copy of the base with the same adapter (the same seed) and optimizer, their gradients
     * summed over a data-parallel group: NCCL between distinct GPUs, the host's logical ranks on the CPU, and on GPUs
     * that repeat (one GPU standing in for several) logical ranks staged through the host.
     */
    private TrainerReplicas trainerReplicas(AdapterConfig cfg, int m, int rolloutDevices) throws JobException {
        String first = ctx.devices().isEmpty() ? "cpu:0" : ctx.devices().get(Math.min(rolloutDevices, ctx.devices().size() - 1));
        List<TrainerReplicas.Trainer> ts = new ArrayList<>();
        ts.add(new TrainerReplicas.Trainer(first, backend, trainerModel, trainerAdapter, trainer, adapterMemory, null));
        if (m == 1) {
            return new TrainerReplicas(ts, List.of(), null, spec.name());
        }
        boolean onDevice = backend instanceof CudaBackend;
        int cores = Runtime.getRuntime().availableProcessors();
        List<Communicator> comms = new ArrayList<>();
        LocalGroup hosts = null;
        try {
            for (int j = 1; j < m; j++) {
                String device = ctx.devices().get(rolloutDevices + j);
                Backend own = onDevice ? deviceBackend(spec, List.of(device)) : new CpuBackend(Math.max(1, cores / m), memory);
                LoadedModel copy = null;
                try {
                    copy = LoadedModel.load(spec.model().path(), own, baseFormat(spec));
                    Trainable model = (Trainable) copy.model();
                    model.setExpertChunk(RlPlan.expertChunk(spec));
                    model.setKeptLayers(planned.keptLayers());
                    model.setOffloadedInputs(planned.recompute() && planned.offloadInputs());
                    TensorAllocator adapters = onDevice ? own.allocator() : memory;
                    Adapter adapter = RlSetup.newAdapter(cfg, (AdapterTargets) model, adapters, spec.seed());
                    LoadedModel ownedCopy = copy;
                    AutoCloseable owned = () -> {
                        try (AutoCloseable closedLast = own; AutoCloseable closedFirst = ownedCopy) {
                            // the copy of the base, then the backend it lives on
                        }
                    };
                    ts.add(new TrainerReplicas.Trainer(device, own, model, adapter, newTrainer(model, adapter, own, adapters),
                            adapters, owned));
                } catch (RuntimeException e) {
                    try (AutoCloseable closedLast = own; AutoCloseable closedFirst = copy) {
                        // what was made of this trainer
                    } catch (Exception suppressed) {
                        e.addSuppressed(suppressed);
                    }
                    throw e;
                }
            }
            List<Backend> backends = ts.stream().map(TrainerReplicas.Trainer::backend).toList();
            long distinct = ts.stream().map(TrainerReplicas.Trainer::device).distinct().count();
            if (onDevice && distinct == m) {
                comms.addAll(NcclCommunicator.initAll(backends.stream().map(x -> (CudaBackend) x).toList()));
            } else {
                hosts = LocalGroup.of(m);
                for (int j = 0; j < m; j++) {
                    comms.add(onDevice ? new HostStagedRanks(hosts.communicator(j), backends.get(j)) : hosts.communicator(j));
                }
            }
        } catch (RuntimeException | JobException e) {
            for (TrainerReplicas.Trainer t : ts) {
                try (AutoCloseable o = t.owned()) {
                    // the other trainers' copies and backends
                } catch (Exception suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
        return new TrainerReplicas(ts, comms, hosts, spec.name());
    }

    /**
     * The rollout engines: with {@code rollout_devices: k} one a rollout device: on a GPU over its own copy of the base,
     * on the CPU's logical devices a view of the trainer's weights with a thread pool of its own; else one a trainer, over
     * a view of its weights (in async mode on a backend of its own: on the CPU its own thread pool, on the GPU its own
     * stream, cuBLAS handle, scratch and allocator). Each engine's KV cache holds its share of the step's sequences, as
     * the planner budgets a rollout device.
     */
    private RolloutReplicas rolloutEngines(AdapterConfig cfg, boolean onDevice, boolean isAsync) throws JobException {
        int k = RlPlan.rolloutDevices(spec);
        int engines = k > 0 ? k : trainers.size();
        int cores = Runtime.getRuntime().availableProcessors();
        List<RolloutReplicas.Replica> replicas = new ArrayList<>();
        try {
            for (int r = 0; r < engines; r++) {
                Backend own;              // the engine's backend where it has one; null: its trainer's
                LoadedModel copy = null;  // a rollout GPU's copy of the base
                CausalLM model;
                TrainerReplicas.Trainer with = k > 0 ? null : trainers.trainers().get(r);   // the trainer it shares weights with
                if (k > 0 && onDevice) {
                    own = deviceBackend(spec, ctx.devices().subList(r, r + 1));
                    copy = LoadedModel.load(spec.model().path(), own, baseFormat(spec));
                    model = copy.model();
                    if (model instanceof Trainable t) {
                        t.setExpertChunk(RlPlan.expertChunk(spec));   // the trainer's kernels: exact mode's bits match
                    }
                } else if (k > 0) {
                    own = new CpuBackend(Math.max(1, cores / (isAsync ? 2 * k : k)), memory);
                    model = trainerModel.view(own);
                } else {
                    own = !isAsync ? null
                            : onDevice ? new CudaBackend((CudaBackend) with.backend(), spec.async().priority() == AsyncSpec.Priority.ROLLOUT)
                            : new CpuBackend(Math.max(1, cores / (2 * engines)), memory);
                    model = own != null ? with.model().view(own) : with.model().view();
                }
                boolean ownStream = onDevice && own != null;
                TensorAllocator slotMemory = ownStream ? own.allocator() : with != null ? with.memory() : adapterMemory;
                CausalLM m = model;
                AdapterSlots slots = new AdapterSlots((AdapterTargets) m,
                        () -> RlSetup.newAdapter(cfg, (AdapterTargets) m, slotMemory, spec.seed()), 0, slotMemory);
                RolloutEngine engine = new RolloutEngine(model, slots, engineOptions(engines), codec::decode);
                LoadedModel ownedCopy = copy;
                Backend ownedBackend = own;
                AutoCloseable owned = () -> {
                    try (AutoCloseable closedLast = ownedBackend; AutoCloseable closedFirst = ownedCopy) {
                        // the copy of the base, then the backend it lives on (either may be null)
                    }
                };
                Runnable fence = ownStream ? () -> ((CudaBackend) ownedBackend).stream().synchronize() : () -> { };
                String device = k > 0 ? ctx.devices().get(r) : with.device();
                replicas.add(new RolloutReplicas.Replica(device, engine, slots, ownStream, fence, owned));
            }
        } catch (RuntimeException | JobException e) {
            for (RolloutReplicas.Replica r : replicas) {
                try (AutoCloseable closedLast = r.owned(); AutoCloseable closedFirst = r.engine()) {
                    // the engine, then what it ran on
                } catch (Exception suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
        return new RolloutReplicas(replicas, trainers::fence, spec.name());
    }

    /**
     * An engine's cache and batch limits for its share of the step's sequences over {@code engines} engines: every
     * sequence of its share at once (the planner's KV budget of a rollout device), evaluation's greedy requests likewise.
     */
    private RolloutEngine.Options engineOptions(int engines) {
        var b = spec.batch();
        int seqTokens = b.maxPromptTokens() + b.maxResponseTokens();
        int sequences = ceil(b.promptsPerStep() * b.samplesPerPrompt(), engines);
        int blockSize = 16;
        return new RolloutEngine.Options(blockSize, Math.max(64, sequences * ((seqTokens + blockSize - 1) / blockSize + 1)),
                Math.max(sequences, ceil(spec.eval().size(), engines)), Math.max(4096, sequences * 64),
                RolloutEngine.Graphs.valueOf(spec.sampling().decodeGraphs().name()), spec.sampling().kvCache().dtype());
    }

    private static int ceil(int a, int b) {
        return (a + b - 1) / b;
    }

    static BaseFormat baseFormat(JobSpec spec) throws JobException {
        return switch (spec.model().baseFormat()) {
            case AUTO, BF16 -> BaseFormat.BF16;
            case INT4 -> BaseFormat.INT4;
            case MXFP4 -> BaseFormat.MXFP4;
            case NVFP4 -> BaseFormat.NVFP4;
            case FP8 -> throw new JobException("model.base_format fp8 is not available for this model on the CPU backend");
        };
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
        extra.put("rollout_engine_steps", (double) (after.steps() - before.steps()));
        extra.put("rollout_graph_steps", (double) (after.graphSteps() - before.graphSteps()));
        extra.put("rollout_graph_arena_bytes", (double) after.graphArenaBytes());
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

    @Override
    public List<DeviceMemory> memory() {
        if (memory == null) {
            return List.of();
        }
        return List.of(new DeviceMemory("cpu:0", memory.live(), memory.peak(), Map.of()));
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
        Exception first = null;
        for (AutoCloseable c : owned) {
            if (c == null) {
                continue;
            }
            try {
                c.close();
            } catch (Exception e) {
                if (first == null) {
                    first = e;
                } else {
                    first.addSuppressed(e);
                }
            }
        }
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
