package org.orbitrl.daemon.jobs;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobRunnerProvider;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.JobSpecDiff;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.StepAbortedException;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.job.checkpoint.Checkpoint;
import org.orbitrl.scheduler.job.checkpoint.CheckpointStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The thread of one job: plan, load (resuming from the newest valid checkpoint), then steps with
 * evaluation and checkpoints on the job's cadence, acting on pause, stop, checkpoint and tunable
 * requests between steps. A failure of any kind ends the job FAILED with its reason; the daemon
 * and other jobs go on.
 */
final class JobLoop implements Runnable {
    private static final Logger LOG = LoggerFactory.getLogger(JobLoop.class);
    private static final Logger PROGRESS = LoggerFactory.getLogger("orbit.progress");
    /** Checkpoint section the daemon writes beside the runner's: the job's effective file and position. */
    static final String HOST_SECTION = "orbit.host";
    private static final ObjectMapper JSON = new ObjectMapper();

    private final JobManager manager;
    private final Job job;
    private final JobRunnerProvider provider;
    private final Path dir;
    private final boolean progress;
    private CheckpointStore checkpoints;
    private JobRunner runner;
    private long lastCheckpointNanos = System.nanoTime();
    private double emaStepSeconds = Double.NaN;

    JobLoop(JobManager manager, Job job, JobRunnerProvider provider, Path dir, boolean progress) {
        this.manager = manager;
        this.job = job;
        this.provider = provider;
        this.dir = dir;
        this.progress = progress;
    }

    @Override
    public void run() {
        try {
            runJob();
        } catch (StepAbortedException e) {
            stopAfterCheckpoint();
        } catch (Throwable t) { // NOPMD: any failure of one job must end that job, never the daemon
            fail(t);
        } finally {
            if (runner != null) {
                try {
                    runner.close();
                } catch (RuntimeException e) {
                    LOG.error("job {}: closing its runner failed: {}", job.name(), e.toString());
                }
            }
            manager.finished(job);
        }
    }

    private void runJob() throws Exception {
        JobSpec spec = job.spec;
        Files.createDirectories(dir);
        checkpoints = new CheckpointStore(dir.resolve("checkpoints"), spec.checkpoint().keep());
        JobContext ctx = new JobContext(spec, dir, manager.sampleLogDir(job.name()), job.devices,
                () -> job.stopRequested() != StopKind.NONE);
        runner = provider.create(ctx);
        JobPlan plan = runner.plan();
        if (!plan.table().isBlank()) {
            LOG.info("job {}: memory plan\n{}", job.name(), plan.table());
        }
        if (stopRequestedBeforeLoad()) {
            return;
        }
        manager.transition(job, JobState.LOADING, "");
        CheckpointStore.Found found = checkpoints.latest();
        for (String w : found.warnings()) {
            LOG.warn("job {}: {}", job.name(), w);
            manager.notice(job, "checkpoint-warning", w);
        }
        Checkpoint cp = found.checkpoint();
        if (cp != null) {
            verifyFixedFields(cp);
            LOG.info("job {}: resuming from checkpoint step {} ({})", job.name(), cp.step(), cp.file());
        }
        LOG.info("job {}: effective job file\n{}", job.name(), job.specYaml().stripTrailing());
        job.runner = runner;
        runner.load(cp);
        runner.apply(job.spec.tunables()); // values tuned while it was down or loading
        job.runnerState = runner.state();
        forgetMeasurementsAhead(runner.state().step());
        job.hasCheckpoint = cp != null;
        job.lastCheckpointStep = cp == null ? -1 : cp.step();
        job.lastCheckpointFile = cp == null ? "" : cp.file().toString();
        if (stopRequestedBeforeLoad()) {
            return;
        }
        enterRunningOrPaused();
        if (runner.state().step() == 0 && job.lastEval == null) {
            evaluate(); // the baseline, before any training
        }
        loop();
    }

    private void loop() throws Exception {
        while (true) {
            if (job.takeTunablesChanged()) {
                runner.apply(job.spec.tunables());
            }
            if (job.takeCheckpointRequest()) {
                checkpoint("requested");
            }
            StopKind stop = job.stopRequested();
            if (stop != StopKind.NONE) {
                stopAfterCheckpoint();
                return;
            }
            if (job.pausedByUser) {
                if (job.state == JobState.RUNNING) {
                    if (job.lastCheckpointStep != runner.state().step()) {
                        checkpoint("pause");
                    }
                    runner.pause();
                    manager.transition(job, JobState.PAUSED, "paused by request");
                }
                job.awaitWhilePaused();
                continue;
            }
            if (job.state == JobState.PAUSED) {
                runner.resume();
                manager.transition(job, JobState.RUNNING, "resumed");
            }
            RunnerState before = runner.state();
            JobSpec spec = job.spec;
            if (before.step() >= spec.steps()) {
                break;
            }
            StepMetrics m = runner.step();
            onStep(m);
            long step = runner.state().step();
            int evalEvery = spec.eval().interval();
            if (evalEvery > 0 && step % evalEvery == 0) {
                evaluate();
            }
            int ckptEvery = spec.checkpoint().interval();
            boolean byTime = !spec.checkpoint().every().isZero()
                    && System.nanoTime() - lastCheckpointNanos >= spec.checkpoint().every().toNanos();
            if ((ckptEvery > 0 && step % ckptEvery == 0) || byTime) {
                checkpoint(byTime ? "time" : "interval");
            }
        }
        long step = runner.state().step();
        if (job.lastEval == null || job.lastEval.step() != step) {
            evaluate();
        }
        if (job.lastCheckpointStep != step) {
            checkpoint("end");
        }
        manager.transition(job, JobState.COMPLETED, "ran " + step + " steps");
    }

    /**
     * Measurements restored from the state map of steps after the checkpoint the job resumed from (the daemon was
     * killed after them) are of a state the job no longer has; the steps and evaluations run again.
     */
    private void forgetMeasurementsAhead(long step) {
        if (job.lastStep != null && job.lastStep.step() > step) {
            job.lastStep = null;
        }
        if (job.lastEval != null && job.lastEval.step() > step) {
            job.lastEval = null;
        }
    }

    private void onStep(StepMetrics m) {
        job.lastStep = m;
        job.runnerState = runner.state();
        emaStepSeconds = Double.isNaN(emaStepSeconds) ? m.stepSeconds() : 0.8 * emaStepSeconds + 0.2 * m.stepSeconds();
        long left = job.spec.steps() - job.runnerState.step();
        job.etaSeconds = left * emaStepSeconds;
        manager.persist(job);
        manager.stepped(job, m);
        if (progress) {
            PROGRESS.info(ProgressLine.step(job.name(), m, job.spec.steps(), job.etaSeconds));
        }
    }

    private void evaluate() throws JobException {
        EvalResult r = runner.evaluate();
        job.lastEval = r;
        manager.persist(job);
        manager.evaluated(job, r);
        if (progress) {
            PROGRESS.info(ProgressLine.eval(job.name(), r));
        }
    }

    private void checkpoint(String why) throws IOException, JobException {
        RunnerState s = runner.state();
        long t0 = System.nanoTime();
        Checkpoint cp = checkpoints.write(s.step(), out -> {
            runner.checkpoint(out);
            out.section(HOST_SECTION, hostSection(s));
        });
        lastCheckpointNanos = System.nanoTime();
        job.hasCheckpoint = true;
        job.lastCheckpointStep = s.step();
        job.lastCheckpointFile = cp.file().toString();
        job.lastCheckpointAt = Instant.now().toString();
        job.runnerState = s;
        manager.persist(job);
        LOG.info("job {}: checkpoint at step {} ({}, {} bytes, {} ms)", job.name(), s.step(), why, cp.sizeBytes(),
                (lastCheckpointNanos - t0) / 1_000_000);
    }

    private byte[] hostSection(RunnerState s) throws IOException {
        Map<String, Object> host = new LinkedHashMap<>();
        host.put("job", job.name());
        host.put("step", s.step());
        host.put("adapter_version", s.adapterVersion());
        host.put("consumed_index", s.consumedIndex());
        host.put("samples_trained", s.samplesTrained());
        host.put("written_at", Instant.now().toString());
        host.put("spec", JobFiles.toYaml(job.spec));
        return JSON.writeValueAsBytes(host);
    }

    /** A resumed job keeps the fixed fields it was checkpointed with; tunables come from the current file. */
    private void verifyFixedFields(Checkpoint cp) throws IOException {
        if (!cp.has(HOST_SECTION)) {
            return;
        }
        Map<?, ?> host = JSON.readValue(cp.bytes(HOST_SECTION), Map.class);
        Object yaml = host.get("spec");
        if (!(yaml instanceof String text)) {
            return;
        }
        try {
            JobSpec stored = JobFiles.parse(cp.file() + "#" + HOST_SECTION, text.getBytes(StandardCharsets.UTF_8),
                    job.name(), Path.of("/"));
            List<JobSpecDiff.Change> fixed = JobSpecDiff.fixed(JobSpecDiff.between(stored, job.spec));
            if (!fixed.isEmpty()) {
                String msg = "fixed fields differ from the checkpoint the job resumes from; the checkpoint's values are"
                        + " kept: " + fixed;
                LOG.warn("job {}: {}", job.name(), msg);
                manager.notice(job, "refused-change", msg);
                job.spec = stored.with(job.spec.tunables());
            }
        } catch (org.orbitrl.scheduler.job.yaml.ConfigException e) {
            LOG.warn("job {}: the job file stored in {} does not validate ({}); using the current one", job.name(),
                    cp.file(), e.getMessage());
        }
    }

    private void enterRunningOrPaused() throws IOException, JobException {
        if (job.pausedByUser) {
            runner.pause();
            manager.transition(job, JobState.PAUSED, "paused by request");
        } else {
            manager.transition(job, JobState.RUNNING, "");
        }
    }

    /** When the job's folder has (almost) no space left, says so: the usual cause of write failures. */
    private String freeSpaceNote() {
        try {
            long free = Files.getFileStore(dir).getUsableSpace();
            return free < (1 << 20) ? "; " + dir + " has " + free + " bytes free" : "";
        } catch (IOException | RuntimeException e) {
            return "";
        }
    }

    private boolean stopRequestedBeforeLoad() {
        StopKind stop = job.stopRequested();
        if (stop == StopKind.NONE) {
            return false;
        }
        if (stop != StopKind.SHUTDOWN) {
            manager.transition(job, JobState.STOPPED, stop.reason);
        }
        return true;
    }

    private void stopAfterCheckpoint() {
        StopKind stop = job.stopRequested();
        try {
            if (runner != null && job.runner != null && job.lastCheckpointStep != runner.state().step()) {
                checkpoint(stop.reason);
            }
        } catch (Throwable t) { // NOPMD: a failed final checkpoint fails the job, with its reason
            fail(t);
            return;
        }
        if (stop == StopKind.SHUTDOWN) {
            LOG.info("job {}: checkpointed at step {} for shutdown; it resumes on the next start", job.name(),
                    job.runnerState.step());
        } else {
            manager.transition(job, JobState.STOPPED, stop.reason);
        }
    }

    private void fail(Throwable t) {
        String reason = FailureReason.of(t) + freeSpaceNote();
        LOG.error("job {} failed: {}", job.name(), reason, t instanceof JobException ? null : t);
        manager.transition(job, JobState.FAILED, reason);
    }
}
