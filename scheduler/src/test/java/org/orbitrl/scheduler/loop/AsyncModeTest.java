package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.scheduler.job.AsyncSpec;
import org.orbitrl.scheduler.job.EvalSpec;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.PartialRollouts;
import org.orbitrl.scheduler.job.checkpoint.CheckpointStore;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogReader;
import org.orbitrl.scheduler.report.MetricsHistory;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.StepRecord;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Async mode on the quickstart job: no group older than the staleness bound is trained on (the
 * dropped ones are counted); the rollout thread never runs further ahead of the trainer than the
 * lag bound allows; and groups logged but not yet trained when the job stops are trained after
 * the resume, none lost and none twice.
 */
class AsyncModeTest {

    static JobSpec asyncQuickstart(int steps, int bound) throws Exception {
        return QuickstartJobTest.quickstart().withEval(new EvalSpec(0, "held_out", 8, 1, List.of(1))).withSteps(steps)
                .withAsync(new AsyncSpec(true, bound, PartialRollouts.CONTINUE, 4));
    }

    @Test
    void staleGroupsAreDroppedAndLagIsBounded(@TempDir Path dir) throws Exception {
        JobSpec spec = asyncQuickstart(6, 0);
        ForegroundRun.run(spec, dir, new PrintStream(new ByteArrayOutputStream()), new AtomicBoolean());
        List<StepRecord> steps = MetricsHistory.read(dir.resolve(MetricsLog.FILE_NAME)).steps();
        assertEquals(6, steps.size());
        double dropped = 0;
        for (StepRecord s : steps) {
            dropped += s.extras().getOrDefault("dropped_stale", 0.0);
        }
        // with bound 0, everything produced before a publish is stale once the trainer has moved on
        assertTrue(dropped > 0, "a bound of 0 must drop groups made by an older version");
        long logged = groups(dir, -1);
        long consumed = consumedGroups(dir);
        assertTrue(logged - consumed <= 4 + spec.batch().promptsPerStep(),
                "rollout ran " + (logged - consumed) + " groups ahead of the trainer; the bound is 4 (+ one step's prompts in flight)");
    }

    @Test
    void groupsLoggedBeforeAStopAreTrainedAfterTheResume(@TempDir Path dir) throws Exception {
        PrintStream quiet = new PrintStream(new ByteArrayOutputStream());
        ForegroundRun.run(asyncQuickstart(2, 4), dir, quiet, new AtomicBoolean());
        long consumedAtStop = consumedIndex(dir);
        long loggedAtStop = lastGroupIndex(dir);
        assertTrue(loggedAtStop > consumedAtStop, "the rollout thread had logged groups the trainer had not read yet");
        ForegroundRun.run(asyncQuickstart(4, 4), dir, quiet, new AtomicBoolean());
        // the resumed trainer read on from the consumed index: the leftovers are behind it now
        assertTrue(consumedIndex(dir) >= loggedAtStop, "groups logged before the stop were trained after the resume");
    }

    static long consumedIndex(Path dir) throws Exception {
        var cp = new CheckpointStore(dir.resolve("checkpoints"), 3).latest().checkpoint();
        try (DataInputStream d = new DataInputStream(new java.io.ByteArrayInputStream(cp.bytes("state")))) {
            d.readInt();
            d.readLong();
            d.readLong();
            return d.readLong();
        }
    }

    static long consumedGroups(Path dir) throws Exception {
        return groups(dir, consumedIndex(dir));
    }

    /** Groups in the log at indices up to {@code upTo} (all if negative). */
    static long groups(Path dir, long upTo) {
        long n = 0;
        try (SampleLog log = SampleLog.openReadOnly(dir.resolve("samples")); SampleLogReader r = log.reader()) {
            for (LogEntry e; (e = r.next()) != null; ) {
                if (upTo >= 0 && r.lastReadIndex() > upTo) {
                    break;
                }
                n += e instanceof LogEntry.Group ? 1 : 0;
            }
        }
        return n;
    }

    static long lastGroupIndex(Path dir) {
        long last = -1;
        try (SampleLog log = SampleLog.openReadOnly(dir.resolve("samples")); SampleLogReader r = log.reader()) {
            for (LogEntry e; (e = r.next()) != null; ) {
                if (e instanceof LogEntry.Group) {
                    last = r.lastReadIndex();
                }
            }
        }
        return last;
    }
}
