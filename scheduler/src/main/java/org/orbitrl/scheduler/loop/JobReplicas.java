package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.HostStagedRanks;
import org.orbitrl.kernels.comm.LocalGroup;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.memory.plan.KvCacheLayout;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.scheduler.job.AsyncSpec;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.Tunables;
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.AdamWConfig;
import org.orbitrl.scheduler.rl.Parameter;
import org.orbitrl.scheduler.rollout.RolloutEngine;

import java.util.ArrayList;
import java.util.List;

/**
 * Builds an RL job's trainers and rollout engines on the devices the daemon gave it, around the first trainer's model
 * and adapter (which the runner loads): the other training devices' copies of the base with their adapters and
 * optimizers and their data-parallel group, and the engines (on rollout devices over copies of the base, or one a
 * trainer over its weights). Also the job's device backend and base format.
 */
final class JobReplicas {
    private final JobContext ctx;
    private final JobSpec spec;
    private final Tunables tunables;
    private final AccountingAllocator memory;   // the host's accounted memory (CPU backends, host-side optimizers)
    private final PlanRequest planned;          // the kept layers and offload the plan budgets
    private final TextCodec codec;
    private final AdapterConfig cfg;
    private final Backend backend;              // the first trainer's
    private final Trainable trainerModel;
    private final Adapter trainerAdapter;
    private final TensorAllocator adapterMemory;

    /**
     * @param backend        the first trainer's backend, on which {@code trainerModel} computes
     * @param adapterMemory  where {@code trainerAdapter}'s tensors live (the accounted host memory or the device's)
     */
    JobReplicas(JobContext ctx, Tunables tunables, AccountingAllocator memory, PlanRequest planned, TextCodec codec,
                AdapterConfig cfg, Backend backend, Trainable trainerModel, Adapter trainerAdapter, TensorAllocator adapterMemory) {
        this.ctx = ctx;
        this.spec = ctx.spec();
        this.tunables = tunables;
        this.memory = memory;
        this.planned = planned;
        this.codec = codec;
        this.cfg = cfg;
        this.backend = backend;
        this.trainerModel = trainerModel;
        this.trainerAdapter = trainerAdapter;
        this.adapterMemory = adapterMemory;
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
    PolicyTrainer newTrainer(Trainable model, Adapter adapter, Backend compute, TensorAllocator adapters) {
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
    TrainerReplicas trainers(PolicyTrainer trainer, int m, int rolloutDevices) throws JobException {
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
                    Adapter adapter = RlSetup.newAdapter(cfg, (AdapterTargets) model, adapters, spec.seed(), true);
                    LoadedModel ownedCopy = copy;
                    AutoCloseable owned = () -> Closing.orThrow(ownedCopy, own);   // the copy, then its backend
                    ts.add(new TrainerReplicas.Trainer(device, own, model, adapter, newTrainer(model, adapter, own, adapters),
                            adapters, owned));
                } catch (RuntimeException e) {
                    Closing.after(e, copy, own);   // what was made of this trainer
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
            Closing.after(e, ts.stream().map(TrainerReplicas.Trainer::owned).toArray(AutoCloseable[]::new));
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
    RolloutReplicas engines(TrainerReplicas trainers, boolean onDevice, boolean isAsync) throws JobException {
        int k = RlPlan.rolloutDevices(spec);
        int engines = k > 0 ? k : trainers.size();
        List<RolloutReplicas.Replica> replicas = new ArrayList<>();
        try {
            for (int r = 0; r < engines; r++) {
                replicas.add(replica(r, k, engines, trainers, onDevice, isAsync));
            }
        } catch (RuntimeException | JobException e) {
            for (RolloutReplicas.Replica r : replicas) {
                Closing.after(e, r.engine(), r.owned());   // the engine, then what it ran on
            }
            throw e;
        }
        return new RolloutReplicas(replicas, trainers::fence, spec.name());
    }

    /**
     * Engine {@code r} of {@code engines}: on rollout device r (k > 0) or over trainer r's weights; what it made is closed
     * again if it fails part way (a copy of the base, a backend).
     */
    private RolloutReplicas.Replica replica(int r, int k, int engines, TrainerReplicas trainers, boolean onDevice,
                                            boolean isAsync) throws JobException {
        int cores = Runtime.getRuntime().availableProcessors();
        TrainerReplicas.Trainer with = k > 0 ? null : trainers.trainers().get(r);   // the trainer it shares weights with
        Backend own = null;       // the engine's backend where it has one; null: its trainer's
        LoadedModel copy = null;  // a rollout GPU's copy of the base
        CudaAllocator publishing = null;   // the stream publications copy into its slots on, where it has its own
        try {
            CausalLM model;
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
            // a publication copies into the idle slot on a stream of its own, never the engine's: in async mode the
            // engine's thread may be capturing a decode step there meanwhile. The engine's last reads of the idle slot
            // are done by then: every step reads its sampled tokens back, after the step's kernels, before it switches.
            publishing = ownStream ? CudaAllocator.sideStreamOf((CudaAllocator) own.allocator()) : null;
            CausalLM m = model;
            AdapterSlots slots = new AdapterSlots((AdapterTargets) m,
                    () -> RlSetup.newAdapter(cfg, (AdapterTargets) m, slotMemory, spec.seed(), false), 0,
                    publishing != null ? publishing : slotMemory);
            RolloutEngine engine = new RolloutEngine(model, slots, engineOptions(spec, engines), codec::decode);
            LoadedModel ownedCopy = copy;
            Backend ownedBackend = own;
            CudaAllocator ownedPublishing = publishing;
            // the copy, the publishing stream, then the backend (any may be null)
            AutoCloseable owned = () -> Closing.orThrow(ownedCopy, ownedPublishing, ownedBackend);
            Runnable fence = ownedPublishing != null ? ownedPublishing::synchronize : () -> { };
            String device = k > 0 ? ctx.devices().get(r) : with.device();
            return new RolloutReplicas.Replica(device, own != null ? own : with.backend(), engine, slots, ownStream, fence,
                    owned);
        } catch (RuntimeException | JobException e) {
            Closing.after(e, copy, publishing, own);   // what was made of this engine
            throw e;
        }
    }

    /**
     * An engine's cache and batch limits for its share of the step's sequences over {@code engines} engines: every
     * sequence of its share at once (the planner's KV budget of a rollout device), evaluation's greedy requests likewise;
     * the new tokens of one forward as the planner's prefill ({@link KvCacheLayout#engineBatchTokens}); the window pool
     * of sliding-window layers as the planner's ({@link KvCacheLayout#windowBlocks}); the captured decode steps' arenas
     * within the planner's budget ({@link org.orbitrl.memory.plan.DecodeGraphBudget#engineBytes}) of the step's share:
     * an evaluation batch wider than that share captures its steps beyond the budget one at a time, every other step
     * closed while it runs.
     */
    static RolloutEngine.Options engineOptions(JobSpec spec, int engines) {
        var b = spec.batch();
        int seqTokens = b.maxPromptTokens() + b.maxResponseTokens();
        int sequences = ceil(b.promptsPerStep(), engines) * b.samplesPerPrompt();   // the largest share of whole prompts
        int batchTokens = KvCacheLayout.engineBatchTokens(sequences);
        org.orbitrl.model.spec.ModelSpec model = org.orbitrl.model.spec.ConfigLoader.load(spec.model().path());
        int window = KvCacheLayout.windowPoolWindow(model);
        int running = Math.max(sequences, ceil(spec.eval().size(), engines));
        return new RolloutEngine.Options(KvCacheLayout.PAGED_BLOCK_TOKENS, KvCacheLayout.pagedBlocks(sequences, seqTokens),
                running, batchTokens, RolloutEngine.Graphs.valueOf(spec.sampling().decodeGraphs().name()),
                spec.sampling().kvCache().dtype(), window == 0 ? 0 : KvCacheLayout.windowBlocks(sequences, seqTokens, window, batchTokens),
                org.orbitrl.memory.plan.DecodeGraphBudget.engineBytes(model, sequences, 1));
    }

    private static int ceil(int a, int b) {
        return (a + b - 1) / b;
    }

    /**
     * The format the job's base loads in: as the checkpoint stores it for {@code auto} and {@code bf16}, else with the
     * routed experts quantized on load; {@code fp8} is refused (no loader converts to it).
     */
    static BaseFormat baseFormat(JobSpec spec) throws JobException {
        return switch (spec.model().baseFormat()) {
            case AUTO, BF16 -> BaseFormat.BF16;
            case INT4 -> BaseFormat.INT4;
            case MXFP4 -> BaseFormat.MXFP4;
            case NVFP4 -> BaseFormat.NVFP4;
            case FP8 -> throw new JobException("job " + spec.name() + ": model.base_format fp8 is not a format the runner"
                    + " loads a base in: expected auto or bf16 (the checkpoint as stored, FP8 where it ships FP8), or int4,"
                    + " mxfp4 or nvfp4 (the routed experts quantized on load)");
        };
    }
}
