package org.orbitrl.daemon.jobs;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.orbitrl.daemon.state.JobRecord;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Between a job in memory and its persisted record. */
final class JobRecords {
    private static final Logger LOG = LoggerFactory.getLogger(JobRecords.class);
    /** Longest failure reason kept in the state map (the log and JMX keep all of it). */
    private static final int MAX_STORED_REASON = 8192;
    /** The step measurements version 1 records held. */
    private static final List<String> STEP_KEYS_V1 = List.of("reward_mean", "accuracy", "logprob_gap_mean",
            "tokens_per_second", "step_seconds");

    private JobRecords() {
    }

    /** The record of a job as it is now. */
    static JobRecord of(Job job) {
        RunnerState rs = job.runnerState;
        Map<String, Double> metrics = new TreeMap<>();
        Map<String, Double> passAtK = new TreeMap<>();
        Map<String, Double> extra = new TreeMap<>();
        StepMetrics m = job.lastStep;
        if (m != null) {
            metrics.put("reward_mean", m.rewardMean());
            metrics.put("accuracy", m.accuracy());
            metrics.put("logprob_gap_mean", m.logprobGapMean());
            metrics.put("logprob_gap_max", m.logprobGapMax());
            metrics.put("tokens", (double) m.tokens());
            metrics.put("tokens_per_second", m.tokensPerSecond());
            metrics.put("step_seconds", m.stepSeconds());
            metrics.put("step_adapter_version", (double) m.adapterVersion());
            metrics.put("staleness_mean", m.stalenessMean());
            metrics.put("staleness_max", (double) m.stalenessMax());
            metrics.put("dropped_stale", (double) m.droppedStale());
            metrics.put("step_samples_trained", (double) m.samplesTrained());
            extra.putAll(m.extra());
        }
        EvalResult e = job.lastEval;
        if (e != null) {
            metrics.put("eval_accuracy", e.accuracy());
            metrics.put("eval_prompts", (double) e.prompts());
            metrics.put("eval_seconds", e.seconds());
            e.passAtK().forEach((k, v) -> passAtK.put(Integer.toString(k), v));
        }
        metrics.values().removeIf(v -> !Double.isFinite(v));
        extra.values().removeIf(v -> !Double.isFinite(v));
        JobSpec spec = job.spec;
        String reason = job.reason.length() > MAX_STORED_REASON
                ? job.reason.substring(0, MAX_STORED_REASON) + " ... (" + (job.reason.length() - MAX_STORED_REASON)
                + " more characters)" : job.reason;
        return new JobRecord(JobRecord.VERSION, job.name(), job.acceptedSeq, job.file == null ? null : job.file.toString(),
                job.fileHash, job.state.name(), reason, job.pausedByUser, rs.step(), spec == null ? 0 : spec.steps(),
                rs.adapterVersion(), rs.consumedIndex(), rs.samplesTrained(), job.lastCheckpointStep,
                job.lastCheckpointFile, job.lastCheckpointAt, metrics, passAtK, m == null ? -1 : m.step(),
                e == null ? -1 : e.step(), extra, job.specYaml(), Instant.now().toString());
    }

    /**
     * The last step's measurements a record holds, or null: NaN (or 0 for counts) where it holds none. A version 1
     * record does not say which step they are of (its last one) nor how many tokens the step made (its rate times
     * its time).
     */
    static StepMetrics lastStep(JobRecord r) {
        Map<String, Double> m = r.metrics();
        long step = r.version() >= 2 ? r.metricsStep()
                : STEP_KEYS_V1.stream().anyMatch(m::containsKey) ? r.step() : -1;
        if (step < 0) {
            return null;
        }
        double seconds = m.getOrDefault("step_seconds", Double.NaN);
        long tokens = m.containsKey("tokens") ? m.get("tokens").longValue()
                : seconds > 0 && m.containsKey("tokens_per_second") ? Math.round(m.get("tokens_per_second") * seconds) : 0;
        return new StepMetrics(step, m.getOrDefault("reward_mean", Double.NaN), m.getOrDefault("accuracy", Double.NaN),
                m.getOrDefault("logprob_gap_mean", Double.NaN), m.getOrDefault("logprob_gap_max", Double.NaN), tokens,
                seconds, count(m, "step_adapter_version"), m.getOrDefault("staleness_mean", Double.NaN),
                count(m, "staleness_max"), count(m, "dropped_stale"), count(m, "step_samples_trained"),
                new TreeMap<>(r.stepExtra()));
    }

    /**
     * The last evaluation a record holds, or null. A version 1 record does not say which step it ran at: taken as the
     * record's last step, as it is for a job that completed.
     */
    static EvalResult lastEval(JobRecord r) {
        Map<String, Double> m = r.metrics();
        long step = r.version() >= 2 ? r.evalStep()
                : m.containsKey("eval_accuracy") || !r.passAtK().isEmpty() ? r.step() : -1;
        if (step < 0) {
            return null;
        }
        TreeMap<Integer, Double> passAtK = new TreeMap<>();
        r.passAtK().forEach((k, v) -> {
            try {
                passAtK.put(Integer.parseInt(k), v);
            } catch (NumberFormatException ex) {
                LOG.warn("job {}: stored pass@k key '{}' is not a number; ignored", r.name(), k);
            }
        });
        return new EvalResult(step, m.getOrDefault("eval_accuracy", Double.NaN), passAtK,
                (int) count(m, "eval_prompts"), m.getOrDefault("eval_seconds", Double.NaN));
    }

    private static long count(Map<String, Double> m, String key) {
        Double v = m.get(key);
        return v == null ? 0 : v.longValue();
    }

    /**
     * A job from its record after a restart, with its place in the list and its last measurements:
     * an unfinished job is queued to resume from its checkpoint; a finished one keeps its state and reason.
     */
    static Job toJob(JobRecord r) {
        Job job = new Job(r.name());
        job.acceptedSeq = r.seq();
        job.lastStep = lastStep(r);
        job.lastEval = lastEval(r);
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
