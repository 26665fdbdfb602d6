package org.orbitrl.scheduler.loop;

import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.PartialRollouts;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.StepAbortedException;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.job.Tunables;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleGroup;
import org.orbitrl.scheduler.log.SampleLogReader;
import org.orbitrl.scheduler.log.SampleLogWriter;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.StepRecord;
import org.orbitrl.scheduler.task.Reward;

import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.locks.Lock;
import java.util.function.Supplier;

/**
 * The RL step in async mode ({@code async.enabled}): a rollout thread ({@link AsyncRollout}) keeps
 * producing groups into the sample log while the trainer takes the next groups from it (waiting
 * only while rollout is behind), drops groups with a token older than the staleness bound
 * (counted), trains with importance sampling against the recorded rollout log-probs, and
 * publishes the next version into the engine's idle slot. Owns the rollout thread.
 */
final class AsyncStep implements AutoCloseable {

    /** A step's metrics and the runner state after it. */
    record Result(StepMetrics metrics, RunnerState state) {
    }

    private final JobContext ctx;
    private final JobSpec spec;
    private final SampleLogReader reader;
    private final TrainerReplicas trainer;
    private final AdapterPublisher publisher;
    private final MetricsLog metrics;
    private final AccountingAllocator memory;
    private final Map<String, Double> gauges;
    private final AsyncRollout rollout;
    private final Lock deviceLock; // null on the CPU; on a device shared with the rollout thread, held per phase
    private final long startedAt = System.nanoTime();
    private volatile long groupsConsumed;
    private long trainerIdleNanos;
    private long trainerBusyNanos;

    /**
     * Starts the rollout thread.
     *
     * @param writers   a new appender for the rollout thread (appenders belong to the thread that writes)
     * @param firstStep the rollout step number before the first the thread makes
     * @param deviceLock null when rollout and training have backends of their own; else the lock the
     *                   rollout engine holds per step, held here while training
     */
    AsyncStep(JobContext ctx, JobSpec spec, SampleLogReader reader, TrainerReplicas trainer, AdapterPublisher publisher,
              MetricsLog metrics, AccountingAllocator memory, Map<String, Double> gauges, RolloutReplicas engines,
              Supplier<SampleLogWriter> writers, AsyncRollout.Producer producer, long firstStep, Lock deviceLock) {
        this.ctx = ctx;
        this.deviceLock = deviceLock;
        this.spec = spec;
        this.reader = reader;
        this.trainer = trainer;
        this.publisher = publisher;
        this.metrics = metrics;
        this.memory = memory;
        this.gauges = gauges;
        var a = spec.async();
        this.rollout = new AsyncRollout(engines, writers, producer, spec.batch().samplesPerPrompt(),
                a.maxLagGroups(), a.partialRollouts() == PartialRollouts.ABORT, firstStep, 0, x -> groupsConsumed);
        rollout.start();
    }

    /** The rollout thread: paused for evaluation and while the job is paused. */
    AsyncRollout rollout() {
        return rollout;
    }

    /** One async step from {@code state}, with the current tunables (staleness bound, temperature). */
    Result step(RunnerState state, Tunables tunables) throws JobException {
        long t0 = System.nanoTime();
        long step = state.step() + 1;
        var b = spec.batch();

        // 1. the next groups from the sample log (the trainer waits only while rollout is behind)
        List<SampleGroup> groups = new ArrayList<>();
        long consumed = state.consumedIndex();
        long waited = 0;
        while (groups.size() < b.promptsPerStep()) {
            LogEntry e = reader.next();
            if (e == null) {
                rollout.check();
                if (ctx.isStopRequested()) {
                    throw new StepAbortedException("stopping while waiting for rollouts");
                }
                long w0 = System.nanoTime();
                try {
                    Thread.sleep(1);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    throw new StepAbortedException("interrupted while waiting for rollouts");
                }
                waited += System.nanoTime() - w0;
                continue;
            }
            if (e instanceof LogEntry.Group g) {
                groups.add(g.group());
            }
            consumed = reader.lastReadIndex();
        }
        groupsConsumed += groups.size();

        // 2. staleness: a group with any token older than (current version - bound) is dropped and counted
        long current = state.adapterVersion();
        Staleness st = Staleness.filter(groups, current, tunables.stalenessBound());
        List<SampleRecord> batch = st.kept();
        double rewardSum = 0;
        int correct = 0;
        long tokens = 0;
        for (SampleRecord r : batch) {
            rewardSum += r.reward();
            correct += r.rewardBreakdown().getOrDefault(Reward.CORRECT, 0.0) > 0 ? 1 : 0;
            tokens += r.responseLength();
        }

        // 3. train: TIS uses the recorded rollout log-probs, whichever version made them
        long tTrain0 = System.nanoTime();
        PolicyTrainer.Outcome out;
        lockDevice();
        try {
            out = batch.isEmpty() ? null : trainer.train(batch, b.samplesPerPrompt());
        } finally {
            unlockDevice();
        }
        long tTrain = System.nanoTime();

        // 4. publish v+1 into the rollout engine's idle slot (it switches between decode steps)
        // (no device lock: publishing may wait for the engine's next step, and its copies are plain
        // stream-ordered memcpys, safe from this thread)
        AdapterPublisher.Published pub = out != null && !out.skipped()
                ? publisher.publish(current + 1, step) : AdapterPublisher.Published.none(current);
        RunnerState next = new RunnerState(step, pub.version(), consumed, state.samplesTrained() + batch.size());
        trainerIdleNanos += waited;
        trainerBusyNanos += System.nanoTime() - t0 - waited;

        double seconds = (System.nanoTime() - t0) / 1e9;
        Map<String, Double> extra = new TreeMap<>();
        if (out != null) {
            extra.put("loss", out.loss());
            extra.put("grad_norm", out.gradNorm());
            extra.put("lr", out.lr());
            extra.put("kl", out.klMean());
            extra.put("clip_fraction", out.clipFraction());
        }
        extra.put("train_seconds", (tTrain - tTrain0) / 1e9);
        extra.put("publish_seconds", pub.seconds());
        extra.put("publish_bytes", (double) pub.bytes());
        extra.put("train_samples", (double) batch.size());
        extra.put("trainer_idle_fraction", trainerIdleNanos / (double) Math.max(1, trainerIdleNanos + trainerBusyNanos));
        extra.put("rollout_idle_fraction", rollout.idleFraction());
        extra.put("dropped_stale", (double) st.dropped());
        extra.put("regenerated_samples", (double) rollout.regeneratedSamples());
        gauges.put("trainer_idle_fraction", extra.get("trainer_idle_fraction"));
        gauges.put("rollout_idle_fraction", rollout.idleFraction());
        gauges.put("rollout_backpressured", rollout.backpressured() ? 1.0 : 0.0);
        gauges.put("trainer_waiting", waited > 0 ? 1.0 : 0.0);
        gauges.put("queue_lag_groups", (double) (rollout.producedGroups() - groupsConsumed));
        gauges.put("publish_bytes", (double) pub.bytes());
        gauges.put("publish_seconds", pub.seconds());
        int n = Math.max(1, batch.size());
        StepMetrics m = new StepMetrics(step, rewardSum / n, correct / (double) n, out == null ? Double.NaN : out.gapMean(),
                out == null ? Double.NaN : out.gapMax(), tokens, seconds, pub.version(), st.meanStaleness(),
                st.maxStaleness(), st.dropped(), batch.size(), new TreeMap<>(extra));
        metrics.step(new StepRecord(step, Instant.now(), m.rewardMean(), m.accuracy(), m.logprobGapMean(),
                m.logprobGapMax(), tokens, rollout.generatedTokens() / Math.max(1e-9, (System.nanoTime() - startedAt) / 1e9),
                seconds, pub.version(), new TreeMap<>(extra), memory.liveByName()));
        return new Result(m, next);
    }

    private void lockDevice() {
        if (deviceLock != null) {
            deviceLock.lock();
        }
    }

    private void unlockDevice() {
        if (deviceLock != null) {
            deviceLock.unlock();
        }
    }

    @Override
    public void close() {
        rollout.close();
    }
}
