package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaDevice;
import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.BaseFormat;
import org.orbitrl.memory.plan.BatchShape;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlan;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.ParamFamily;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.memory.plan.PlanTable;
import org.orbitrl.memory.plan.StorageFormat;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.scheduler.job.AdapterKind;
import org.orbitrl.scheduler.job.ComputeBackend;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.MemorySpec;
import org.orbitrl.scheduler.job.PlanRefusedException;
import org.orbitrl.scheduler.job.SamplingSpec;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** The memory plan of an RL job on the CPU backend: the host's memory as one device. */
final class RlPlan {
    private RlPlan() {
    }

    /** The experts dequantized at a time: the job's {@code memory.expert_chunk}, or the planner's default for 0. */
    static int expertChunk(JobSpec spec) {
        return Math.max(1, spec.memory().expertChunk() == 0 ? PlanRequest.DEFAULT_EXPERT_CHUNK : spec.memory().expertChunk());
    }

    /**
     * What the job is planned against: the host's memory for the CPU backend; for CUDA, the job's
     * {@code placement.devices} GPUs with the memory device 0 reports, or H200s where no device is
     * visible (planning on a machine without the GPUs).
     */
    static NodeSpec node(JobSpec spec) {
        if (spec.placement().backend() != ComputeBackend.CUDA) {
            return new NodeSpec(NodeSpec.HOST, 1, Math.max(Runtime.getRuntime().maxMemory(), 1L << 30));
        }
        int gpus = Math.max(1, spec.placement().devices());
        if (Cuda.available()) {
            CudaDevice d = new CudaDevice(0);
            return new NodeSpec(gpus + "x" + d.name().replace(' ', '_'), gpus, d.totalMemory());
        }
        return NodeSpec.parse(gpus + "xH200");
    }

    /**
     * The request the job is planned as, with its kept layers resolved: {@code memory.kept_layers}
     * as given (at most the model's layers), or for {@code auto} the most the plan fits (0 without
     * recompute or when even one does not fit). The job's base and adapter are the ones its runner loads
     * and attaches ({@link #base}, {@link #adapter}); a placement its runner refuses, and a base format it
     * refuses, are refused here with the runner's message ({@link #requirePlacementRuns}).
     */
    static PlanRequest request(JobSpec spec) throws JobException {
        ModelSpec model = ConfigLoader.load(spec.model().path());
        requirePlacementRuns(spec, model);
        NodeSpec node = node(spec);
        var b = spec.batch();
        PlanRequest req = new PlanRequest(model, spec.model().path(), base(spec, model), adapter(spec),
                new BatchShape(b.promptsPerStep(), b.samplesPerPrompt(), b.maxPromptTokens(), b.maxResponseTokens(),
                        b.microBatch()), node, layout(spec, model, node), spec.memory().recompute(),
                expertChunk(spec),
                spec.sampling().kvCache().dtype(), 2048, PlanRequest.ENGINE_PREFILL,
                node.hostMemory() ? 0 : spec.memory().reserve().bytes())
                .withExact(!node.hostMemory() && Boolean.getBoolean("orbit.cuda.exact"))   // the backend the job gets
                .withOffloadedInputs(spec.memory().offloadInputs())
                .withRolloutReplicated(expertParallel(spec))    // its ranks roll out the same requests in lockstep
                .withDecodeGraphs(spec.sampling().decodeGraphs() != SamplingSpec.DecodeGraphs.OFF);
        if (!spec.memory().recompute()) {
            return req;
        }
        int kept = spec.memory().keptLayerCount();
        return req.withKeptLayers(kept == MemorySpec.AUTO ? MemoryPlanner.maxKeptLayers(req) : Math.min(kept, model.numLayers()));
    }

    /**
     * The base as the runner loads it ({@link JobReplicas#baseFormat}), in the planner's terms: every weight as the
     * checkpoint stores it ({@code native}) for {@code auto} and {@code bf16}; for {@code int4}, {@code mxfp4} and
     * {@code nvfp4} the routed experts in that format where they are stored in full precision or FP8 (the ones the
     * loaders quantize on load), as stored where they already ship in a 4-bit format, and the rest as stored.
     */
    static BaseFormat base(JobSpec spec, ModelSpec model) throws JobException {
        BaseFormat stored = BaseFormat.parse("native", model);
        org.orbitrl.model.BaseFormat loaded = JobReplicas.baseFormat(spec);
        StorageFormat experts = stored.of(ParamFamily.ROUTED_EXPERTS);
        boolean quantizedOnLoad = experts == StorageFormat.BF16 || experts == StorageFormat.F32
                || experts == StorageFormat.FP8_BLOCK128 || experts == StorageFormat.FP8_BLOCK128_UE8M0;
        if (loaded.quantFormat() == null || !model.isMoe() || !quantizedOnLoad) {
            return stored;
        }
        StorageFormat to = switch (loaded) {
            case INT4 -> StorageFormat.INT4_G32;
            case MXFP4 -> StorageFormat.MXFP4;
            case NVFP4 -> StorageFormat.NVFP4;
            case BF16 -> throw new IllegalStateException("bf16 keeps the experts as stored");
        };
        return stored.withRoutedExperts(to);
    }

    /**
     * The adapter the runner attaches ({@link RlSetup#adapterConfig}): the same modules and fused expert parameters,
     * f32 parameters and gradients as {@code LoraAdapter} and {@code OftAdapter} hold them.
     */
    static AdapterSpec adapter(JobSpec spec) {
        AdapterConfig cfg = RlSetup.adapterConfig(spec.adapter());
        List<String> modules = new ArrayList<>(cfg.targetModules());
        modules.addAll(cfg.targetParameters());
        return spec.adapter().type() == AdapterKind.LORA
                ? new AdapterSpec.Lora(cfg.rank(), AdapterSpec.PROJECTION_FAMILIES, modules, DType.F32)
                : new AdapterSpec.Oft(spec.adapter().oftBlockSize(), AdapterSpec.PROJECTION_FAMILIES, modules, DType.F32);
    }

    /**
     * The planner's layout of a placement its runner takes: the host's memory as one device for the CPU backend;
     * rollout devices and training devices; data-parallel replicas, each device planned as one; or the routed
     * experts split over every device.
     */
    private static ParallelLayout layout(JobSpec spec, ModelSpec model, NodeSpec node) {
        if (node.hostMemory()) {
            return ParallelLayout.auto(model, node, 0, 0);
        }
        if (replicated(spec)) {
            return rolloutDevices(spec) > 0 ? ParallelLayout.split(1, 1, rolloutDevices(spec), trainingDevices(spec))
                    : ParallelLayout.colocated(1, 1);
        }
        if (expertParallel(spec)) {
            return ParallelLayout.colocated(spec.placement().expertParallel(), 1);
        }
        throw new IllegalStateException("job " + spec.name() + ": placement " + spec.placement()
                + " has no runner; requirePlacementRuns refuses it");
    }

    /**
     * Refuses, with its runner's message, a placement the runner {@link RlRunnerProvider} makes for this job refuses
     * before anything is loaded, from the job file alone: {@link ExpertParallelRunner#requireRunnable} for a job split by
     * experts, {@link #requireRunnable} for any other (the devices the daemon gives a job are checked when it runs).
     */
    static void requirePlacementRuns(JobSpec spec, ModelSpec model) throws JobException {
        if (expertParallel(spec)) {
            ExpertParallelRunner.requireRunnable(spec, model);
        } else {
            requireRunnable(spec);
        }
    }

    /** {@link #request}, its failures (an unreadable config, an impossible layout) as the job's. */
    static PlanRequest checkedRequest(JobSpec spec) throws JobException {
        try {
            return request(spec);
        } catch (RuntimeException e) {
            throw new JobException("planning job " + spec.name() + ": " + describe(spec, e), e);
        }
    }

    /**
     * A planning failure as the job's: adapter modules that name no projection of the model put to the job's keys
     * ({@code adapter.targets}, {@code adapter.expert_targets}); anything else as it is.
     */
    static String describe(JobSpec spec, RuntimeException e) {
        if (!(e instanceof AdapterSpec.UnmatchedModulesException u)) {
            return e.getMessage();
        }
        List<String> targets = new ArrayList<>();
        List<String> experts = new ArrayList<>();
        for (String m : u.modules()) {
            if (spec.adapter().targets().contains(m)) {
                targets.add(m);
            } else if (m.equals("mlp.experts.gate_up_proj")) {   // the fused parameter of gate_proj and up_proj
                spec.adapter().expertTargets().stream().filter(t -> t.equals("gate_proj") || t.equals("up_proj")).forEach(experts::add);
            } else {
                experts.add(m.startsWith("mlp.experts.") ? m.substring("mlp.experts.".length()) : m);
            }
        }
        List<String> parts = new ArrayList<>();
        if (!targets.isEmpty()) {
            parts.add("adapter.targets: " + u.whatIsWrong(targets));
        }
        if (!experts.isEmpty()) {
            parts.add("adapter.expert_targets: " + u.whatIsWrong(experts));
        }
        return String.join("; ", parts);
    }

    /**
     * True for the placements the RL runner drives from one job (one host, no model split): one device; data-parallel
     * replicas ({@code devices: N}, each device rolling out and training its share of a step); rollout devices and
     * training devices ({@code devices: k + m, rollout_devices: k}: k engines, each with its own copy of the base on a GPU,
     * and m data-parallel trainers).
     */
    static boolean replicated(JobSpec spec) {
        var p = spec.placement();
        return p.expertParallel() == 1 && p.tensorParallel() == 1 && p.nodes() == 1;
    }

    /** The rollout-only devices of a {@link #replicated} job (the first k of its devices); 0 for any other placement. */
    static int rolloutDevices(JobSpec spec) {
        return replicated(spec) ? spec.placement().rolloutDevices() : 0;
    }

    /** The training devices of a {@link #replicated} job (the devices after its rollout devices); 1 for any other. */
    static int trainingDevices(JobSpec spec) {
        return replicated(spec) ? spec.placement().devices() - spec.placement().rolloutDevices() : 1;
    }

    /**
     * True for a job whose routed experts split over all its devices (expert_parallel = devices on one host, tensor
     * parallelism 1, every device both rolling out and training): {@link ExpertParallelRunner}.
     */
    static boolean expertParallel(JobSpec spec) {
        var p = spec.placement();
        return p.devices() > 1 && p.expertParallel() == p.devices() && p.tensorParallel() == 1 && p.rolloutDevices() == 0
                && p.nodes() == 1;
    }

    /**
     * The RL runner drives the {@link #replicated} placements (on the devices the daemon gives it);
     * {@link ExpertParallelRunner} drives one rank a device of an expert-parallel job. Any other placement (tensor
     * parallelism, an expert split with rollout devices or beside data-parallel replicas, several hosts) is refused when
     * the job is to run or is planned, before anything is loaded, naming its keys. The split model itself
     * ({@code ParallelLayout}, {@code RankGroups}) runs from code; docs/multi-gpu.md.
     */
    static void requireRunnable(JobSpec spec) throws JobException {
        var p = spec.placement();
        if (!replicated(spec)) {
            throw new JobException("job " + spec.name() + ": placement {devices: " + p.devices() + ", rollout_devices: "
                    + p.rolloutDevices() + ", expert_parallel: " + p.expertParallel() + ", tensor_parallel: "
                    + p.tensorParallel() + (p.nodes() > 1 ? ", hosts: " + p.hosts() : "") + "}: the RL runner runs a job on"
                    + " one device, on data-parallel replicas (devices: N), on rollout devices and training devices"
                    + " (devices: k + m, rollout_devices: k), all with expert_parallel 1, tensor_parallel 1 and one host,"
                    + " or with its routed experts split over all its devices (expert_parallel equal to devices,"
                    + " tensor_parallel 1, rollout_devices 0, synchronous)");
        }
    }

    static JobPlan plan(JobSpec spec) throws JobException {
        return plan(spec, checkedRequest(spec));
    }

    /** The plan of {@code req}, the job's resolved request; refused with the table if it does not fit. */
    static JobPlan plan(JobSpec spec, PlanRequest req) throws JobException {
        try {
            NodeSpec node = req.node();
            MemoryPlan plan = MemoryPlanner.plan(req);
            String table = PlanTable.render(plan);
            if (!plan.fits()) {
                throw new PlanRefusedException("job " + spec.name() + " does not fit " + (node.hostMemory() ? "this host's memory"
                        : node.gpus() + " GPU(s) of " + node.bytesPerGpu() / (1L << 20) + " MiB (" + node.name() + ")") + ":\n" + table);
            }
            Map<String, Map<MemoryCategory, Long>> bytes = new java.util.LinkedHashMap<>();
            boolean split = rolloutDevices(spec) > 0 && !node.hostMemory();
            for (int g = 0; g < node.gpus(); g++) {   // split: the first rollout_devices GPUs generate, the last trains
                bytes.put(node.hostMemory() ? "cpu:0" : "cuda:" + g, !split ? plan.perGpuBytes()
                        : plan.budget(g < spec.placement().rolloutDevices() ? GpuRole.ROLLOUT : GpuRole.TRAIN).bytes());
            }
            return new JobPlan(bytes, table);
        } catch (PlanRefusedException e) {
            throw e;
        } catch (RuntimeException e) {
            throw new JobException("planning job " + spec.name() + ": " + describe(spec, e), e);
        }
    }
}
