package org.orbitrl.daemon.jobs;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Map;
import java.util.TreeMap;
import org.orbitrl.daemon.state.JobRecord;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Between a job in memory and its persisted record. */
final class JobRecords {
    private static final Logger LOG = LoggerFactory.getLogger(JobRecords.class);
    /** Longest failure reason kept in the state map (the log and JMX keep all of it). */
    private static final int MAX_STORED_REASON = 8192;

    private JobRecords() {
    }

    /** The record of a job as it is now. */
    static JobRecord of(Job job) {
        RunnerState rs = job.runnerState;
        Map<String, Double> metrics = new TreeMap<>();
        Map<String, Double> passAtK = new TreeMap<>();
        var m = job.lastStep;
        if (m != null) {
            metrics.put("reward_mean", m.rewardMean());
            metrics.put("accuracy", m.accuracy());
            metrics.put("logprob_gap_mean", m.logprobGapMean());
            metrics.put("tokens_per_second", m.tokensPerSecond());
            metrics.put("step_seconds", m.stepSeconds());
        }
        var e = job.lastEval;
        if (e != null) {
            metrics.put("eval_accuracy", e.accuracy());
            e.passAtK().forEach((k, v) -> passAtK.put(Integer.toString(k), v));
        }
        metrics.values().removeIf(v -> !Double.isFinite(v));
        JobSpec spec = job.spec;
        String reason = job.reason.length() > MAX_STORED_REASON
                ? job.reason.substring(0, MAX_STORED_REASON) + " ... (" + (job.reason.length() - MAX_STORED_REASON)
                + " more characters)" : job.reason;
        return new JobRecord(1, job.name(), job.file == null ? null : job.file.toString(), job.fileHash,
                job.state.name(), reason, job.pausedByUser, rs.step(), spec == null ? 0 : spec.steps(),
                rs.adapterVersion(), rs.consumedIndex(), rs.samplesTrained(), job.lastCheckpointStep,
                job.lastCheckpointFile, job.lastCheckpointAt, metrics, passAtK, job.specYaml(), Instant.now().toString());
    }

    /**
     * A job from its record after a restart: an unfinished job is queued to resume from its
     * checkpoint; a finished one keeps its state and reason.
     */
    static Job toJob(JobRecord r) {
        Job job = new Job(r.name());
        job.file = r.file() == null ? null : Path.of(r.file());
        job.fileHash = r.fileSha256() == null ? "" : r.fileSha256();
        job.pausedByUser = r.pausedByUser();
        job.lastCheckpointStep = r.lastCheckpointStep();
        job.lastCheckpointFile = r.lastCheckpointFile() == null ? "" : r.lastCheckpointFile();
        job.lastCheckpointAt = r.lastCheckpointAt() == null ? "" : r.lastCheckpointAt();
        job.hasCheckpoint = r.lastCheckpointStep() >= 0;
        job.runnerState = new RunnerState(r.step(), r.adapterVersion(), r.consumedIndex(), r.samplesTrained());
        if (r.spec() != null && !r.spec().isBlank()) {
            try {
                job.spec = JobFiles.parse("state of job " + r.name(), r.spec().getBytes(StandardCharsets.UTF_8), r.name(),
                        Path.of("/"));
            } catch (ConfigException e) {
                LOG.error("job {}: its stored job file no longer validates: {}", r.name(), e.getMessage());
            }
        }
        JobState stored;
        try {
            stored = JobState.valueOf(r.state());
        } catch (IllegalArgumentException | NullPointerException e) {
            LOG.error("job {}: stored state '{}' is not a state; marking it failed", r.name(), r.state());
            stored = null;
        }
        if (stored == null) {
            job.state = JobState.FAILED;
            job.reason = "its stored state '" + r.state() + "' could not be read";
            return job;
        }
        if (!stored.terminal() && job.spec != null) {
            job.state = JobState.QUEUED;
            job.reason = "resuming after a daemon restart";
        } else {
            job.state = stored.terminal() ? stored : JobState.FAILED;
            job.reason = stored.terminal() ? r.reason() : "its stored job file no longer validates";
        }
        return job;
    }
}
