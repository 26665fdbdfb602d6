package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.LocalGroup;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.parallel.ParallelLayout;
import org.orbitrl.model.parallel.RankGroups;
import org.orbitrl.scheduler.job.ComputeBackend;
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
import org.orbitrl.scheduler.job.checkpoint.Checkpoint;
import org.orbitrl.scheduler.job.checkpoint.CheckpointWriter;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * An RL job whose routed experts are split over its devices ({@code placement: {devices: N, expert_parallel: N}},
 * synchronous mode): one {@link RlJobRunner} a device, each with its backend, its block of every MoE layer's experts and
 * its expert-parallel group (NCCL between GPUs; logical ranks on the CPU), run in lockstep: every rank rolls out the same
 * requests (the same logits on every rank, so the same tokens), trains on the same samples with its experts' gradients
 * summed over the group, and takes the same optimizer step, so their adapters stay one adapter. Rank 0 is the job: its
 * data folder, sample log, metrics and checkpoints; the other ranks keep theirs under {@code ranks/N} of it. A rank that
 * fails fails the job (the other ranks' collectives are aborted, not left waiting); ranks whose losses disagree fail it
 * too.
 */
final class ExpertParallelRunner implements JobRunner {
    private final JobContext ctx;
    private final int n;
    private final RankThreads threads;   // one a rank, its only thread
    private final List<Backend> backends = new ArrayList<>();
    private final List<Communicator> comms = new ArrayList<>();
    private LocalGroup localGroup;   // the CPU's logical ranks (null on GPUs)
    private final List<RlJobRunner> ranks = new ArrayList<>();

    ExpertParallelRunner(JobContext ctx) {
        this.ctx = ctx;
        this.n = ctx.spec().placement().devices();
        this.threads = new RankThreads("ep-rank-" + ctx.spec().name(), n, this::abort);
    }

    @Override
    public JobPlan plan() throws JobException {
        requireRunnable();
        return RlPlan.plan(ctx.spec());
    }

    /**
     * Refuses, naming the key, what {@link #requireRunnable(JobSpec, org.orbitrl.model.spec.ModelSpec)} refuses and a
     * device count other than the placement's.
     */
    private void requireRunnable() throws JobException {
        org.orbitrl.model.spec.ModelSpec model;
        try {
            model = org.orbitrl.model.spec.ConfigLoader.load(ctx.spec().model().path());
        } catch (RuntimeException e) {
            throw new JobException("job " + ctx.spec().name() + ": model.path: " + e.getMessage(), e);
        }
        requireRunnable(ctx.spec(), model);
        if (ctx.devices().size() != n) {
            throw new JobException("job " + ctx.spec().name() + ": placement.devices " + n + " but given " + ctx.devices());
        }
    }

    /**
     * Refuses, naming the key, what the job file alone shows this runner cannot run: a model without an expert-parallel
     * form, and async mode (its rollout and trainer threads would issue a rank's collectives in an order of their own).
     */
    static void requireRunnable(JobSpec spec, org.orbitrl.model.spec.ModelSpec model) throws JobException {
        int n = spec.placement().devices();
        if (!org.orbitrl.model.LoadedModel.splits(model)) {
            throw new JobException("job " + spec.name() + ": placement.expert_parallel " + n + ": model_type "
                    + model.modelType() + " has no expert-parallel form (qwen3_moe, deepseek_v3 and kimi_k2 have); it runs"
                    + " on one device, on data-parallel replicas or with rollout devices (expert_parallel: 1)");
        }
        if (spec.async().enabled()) {
            throw new JobException("job " + spec.name() + ": placement.expert_parallel " + n + " runs synchronously;"
                    + " set async.enabled: false (async mode runs without an expert split: on one device, data-parallel replicas, or rollout and training devices)");
        }
    }

    /** {@code call} on every rank at once; a rank's failure aborts the others' collectives and fails the call, naming it. */
    private <T> List<T> all(String what, RankThreads.Call<T> call) throws JobException {
        try {
            return threads.all(call);
        } catch (RankThreads.RankFailure f) {
            JobException e = new JobException("job " + ctx.spec().name() + ": " + what + " failed on expert-parallel rank "
                    + f.rank() + " of " + n + ": " + f.getMessage(), f.getCause());
            for (Throwable s : f.getSuppressed()) {
                e.addSuppressed(s);
            }
            throw e;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new JobException("job " + ctx.spec().name() + ": interrupted waiting for its expert-parallel ranks", e);
        }
    }

    private void abort() {
        if (localGroup != null) {
            localGroup.abort();
        }
        for (Communicator c : comms) {
            if (c instanceof NcclCommunicator nc) {
                nc.abort();
            }
        }
    }

    @Override
    public void load(Checkpoint resumeFrom) throws JobException {
        requireRunnable();
        var spec = ctx.spec();
        boolean gpu = spec.placement().backend() == ComputeBackend.CUDA;
        try {
            for (int r = 0; r < n; r++) {
                backends.add(gpu ? JobReplicas.deviceBackend(spec, ctx.devices().subList(r, r + 1))
                        : new CpuBackend(Math.max(1, Runtime.getRuntime().availableProcessors() / n)));
            }
            if (gpu) {
                List<CudaBackend> cuda = backends.stream().map(b -> (CudaBackend) b).toList();
                comms.addAll(NcclCommunicator.initAll(cuda));
            } else {
                localGroup = LocalGroup.of(n);
                for (int r = 0; r < n; r++) {
                    comms.add(localGroup.communicator(r));
                }
            }
        } catch (RuntimeException e) {
            throw new JobException("job " + spec.name() + ": starting its " + n + " expert-parallel ranks on " + ctx.devices()
                    + ": " + e.getMessage(), e);
        }
        ParallelLayout layout = new ParallelLayout(n, 1, n);
        List<RankGroups> groups = all("splitting the communicators", r -> RankGroups.split(layout, comms.get(r)));
        for (int r = 0; r < n; r++) {
            JobContext rc = r == 0 ? ctx : new JobContext(spec, ctx.dataDir().resolve("ranks").resolve(String.valueOf(r)),
                    ctx.dataDir().resolve("ranks").resolve(String.valueOf(r)).resolve("samples"),
                    ctx.devices().subList(Math.min(r, ctx.devices().size() - 1), Math.min(r, ctx.devices().size() - 1) + 1),
                    ctx::isStopRequested);
            ranks.add(new RlJobRunner(rc, new RlJobRunner.Rank(r, backends.get(r), groups.get(r))));
        }
        all("loading", r -> {
            ranks.get(r).load(resumeFrom);
            return null;
        });
    }

    @Override
    public StepMetrics step() throws JobException {
        List<StepMetrics> m = all("the step", r -> ranks.get(r).step());
        Double loss = m.get(0).extra().get("loss");
        for (int r = 1; r < n; r++) {
            Double other = m.get(r).extra().get("loss");
            if (m.get(r).tokens() != m.get(0).tokens() || !java.util.Objects.equals(loss, other)) {
                throw new JobException("job " + ctx.spec().name() + ": expert-parallel rank " + r + " diverged from rank 0 at step "
                        + m.get(0).step() + " (tokens " + m.get(r).tokens() + " vs " + m.get(0).tokens() + ", loss " + other + " vs "
                        + loss + ")");
            }
        }
        return m.get(0);
    }

    @Override
    public EvalResult evaluate() throws JobException {
        return all("the evaluation", r -> ranks.get(r).evaluate()).get(0);
    }

    /**
     * Rank 0's, with every rank's index in its own sample log: the ranks hold one adapter, and each rank resumes from it
     * and reads its own log on from its own index.
     */
    @Override
    public void checkpoint(CheckpointWriter out) throws IOException, JobException {
        try {
            threads.on(0, r -> {
                ranks.get(0).checkpoint(out);
                return null;
            });
            // each rank's own log index: the ranks append the same entries, but a roll of the log's cycle may fall
            // between two ranks' appends of one entry, so the same entry can have other indexes in their logs
            long[] consumed = new long[n];
            for (int r = 0; r < n; r++) {
                consumed[r] = ranks.get(r).state().consumedIndex();
            }
            RlCheckpoint.writeRankConsumed(out, consumed);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new JobException("job " + ctx.spec().name() + ": interrupted writing its checkpoint", e);
        } catch (RankThreads.RankFailure f) {
            if (f.getCause() instanceof IOException io) {
                throw io;
            }
            if (f.getCause() instanceof JobException je) {
                throw je;
            }
            throw new JobException("job " + ctx.spec().name() + ": checkpoint: " + f.getMessage(), f.getCause());
        }
    }

    @Override
    public RunnerState state() {
        return ranks.isEmpty() ? new RunnerState(0, 0, org.orbitrl.scheduler.log.SampleLog.NO_INDEX, 0) : ranks.get(0).state();
    }

    @Override
    public void pause() {
        ranks.forEach(RlJobRunner::pause);
    }

    @Override
    public void resume() {
        ranks.forEach(RlJobRunner::resume);
    }

    @Override
    public void apply(Tunables tunables) throws JobException {
        for (RlJobRunner r : ranks) {
            r.apply(tunables);
        }
    }

    @Override
    public Map<String, Double> gauges() {
        return ranks.isEmpty() ? Map.of() : ranks.get(0).gauges();
    }

    /** Every rank's device. */
    @Override
    public List<DeviceMemory> memory() {
        List<DeviceMemory> out = new ArrayList<>();
        ranks.forEach(r -> out.addAll(r.memory()));
        return out;
    }

    @Override
    public void close() {
        RuntimeException first = null;
        for (int i = 0; i < ranks.size(); i++) {
            RlJobRunner r = ranks.get(i);
            try {
                threads.on(i, rank -> {   // on the rank's thread, where its logs were opened
                    r.close();
                    return null;
                });
            } catch (RankThreads.RankFailure f) {
                first = first == null ? new IllegalStateException("closing expert-parallel rank " + i + ": " + f.getMessage(),
                        f.getCause()) : first;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                first = first == null ? new IllegalStateException("interrupted closing expert-parallel rank " + i, e) : first;
            }
        }
        comms.forEach(Communicator::close);
        backends.forEach(Backend::close);
        threads.close();
        if (first != null) {
            throw first;
        }
    }
}
