package org.orbitrl.daemon.jobs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.LedgerRunner;
import org.orbitrl.daemon.testing.LedgerState;

class JobLifecycleTest {
    @TempDir
    Path tmp;
    DaemonHarness h;

    @AfterEach
    void tearDown() {
        LedgerRunner.stepDelayMillis = 0;
        if (h != null) {
            h.close();
        }
    }

    @Test
    void aDroppedJobRunsThroughItsLifecycleAndTrainsEverySampleOnce() throws Exception {
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("alpha", DaemonHarness.ledgerJob(12, "checkpoint: {interval: 5}\n"));
        h.awaitState("alpha", JobState.COMPLETED);
        assertEquals(List.of("alpha:QUEUED->PLANNING", "alpha:PLANNING->LOADING", "alpha:LOADING->RUNNING",
                "alpha:RUNNING->COMPLETED"), h.events.stream().filter(e -> e.startsWith("alpha:") && e.contains("->")).toList());
        Job job = h.job("alpha");
        assertEquals(12, job.runnerState().step());
        assertEquals(12, job.lastEval().step(), "an evaluation after the last step");
        LedgerState s = h.lastCheckpoint("alpha");
        assertEquals(12, s.step);
        assertEquals(24, s.groupsTrained);
        assertEquals(0, s.duplicates);
        assertEquals(0, s.gaps);
        assertEquals(24, s.trained.cardinality());
        assertEquals(12, h.checkpointStep("alpha"));
    }

    @Test
    void jobsThatDoNotFitTheFreeDevicesWaitAndTooLargeOnesFail() throws Exception {
        LedgerRunner.stepDelayMillis = 30;
        h = new DaemonHarness(tmp, "devices: [cpu:0, cpu:1]\n").start();
        h.writeJob("big", DaemonHarness.ledgerJob(10, "placement: {devices: 2}\n"));
        h.awaitState("big", JobState.RUNNING);
        h.writeJob("small", DaemonHarness.ledgerJob(3, ""));
        h.await("small to wait for a device", Duration.ofSeconds(10),
                () -> h.daemon.jobs().job("small").map(j -> j.reason().startsWith("waiting for 1 free cpu device(s) (0 of 2"))
                        .orElse(false));
        assertEquals(JobState.QUEUED, h.job("small").state());
        h.writeJob("huge", DaemonHarness.ledgerJob(3, "placement: {devices: 3}\n"));
        h.awaitState("huge", JobState.FAILED);
        assertEquals("needs 3 cpu device(s); this daemon owns 2 (devices in orbit.yaml)", h.job("huge").reason());
        h.awaitState("big", JobState.COMPLETED);
        h.awaitState("small", JobState.COMPLETED);
        assertTrue(h.events.indexOf("big:RUNNING->COMPLETED") < h.events.indexOf("small:QUEUED->PLANNING"), h.events.toString());
    }

    @Test
    void pauseResumeStopCheckpointAndTunablesAreAppliedBetweenSteps() throws Exception {
        LedgerRunner.stepDelayMillis = 40;
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("ctl", DaemonHarness.ledgerJob(1000, "checkpoint: {interval: 0}\n"));
        h.awaitState("ctl", JobState.RUNNING);
        JobManager m = h.daemon.jobs();
        m.pause("ctl");
        h.awaitState("ctl", JobState.PAUSED);
        long pausedAt = h.job("ctl").runnerState().step();
        assertEquals(pausedAt, h.checkpointStep("ctl"), "pausing checkpoints");
        Thread.sleep(200);
        assertEquals(pausedAt, h.job("ctl").runnerState().step(), "no step runs while paused");
        m.set("ctl", "temperature", "0.25");
        h.await("the runner to receive the temperature", Duration.ofSeconds(5),
                () -> LedgerRunner.APPLIED.get("ctl") != null && LedgerRunner.APPLIED.get("ctl").temperature() == 0.25);
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> m.set("ctl", "temperature", "11"));
        assertEquals("sampling.temperature: must be between 0 and 10, got 11", bad.getMessage());
        bad = assertThrows(IllegalArgumentException.class, () -> m.set("ctl", "adapter.rank", "8"));
        assertTrue(bad.getMessage().contains("not a live-tunable key"), bad.getMessage());
        m.resume("ctl");
        h.awaitState("ctl", JobState.RUNNING);
        h.await("steps after resume", Duration.ofSeconds(10), () -> h.job("ctl").runnerState().step() > pausedAt + 2);
        m.checkpointNow("ctl");
        h.await("a requested checkpoint", Duration.ofSeconds(10), () -> h.job("ctl").lastCheckpointStep() > pausedAt);
        m.stop("ctl");
        h.awaitState("ctl", JobState.STOPPED);
        assertEquals("stopped by request", h.job("ctl").reason());
        assertEquals(h.job("ctl").runnerState().step(), h.checkpointStep("ctl"), "stopping checkpoints the last step");
        IllegalStateException again = assertThrows(IllegalStateException.class, () -> m.stop("ctl"));
        assertEquals("job ctl is already stopped", again.getMessage());
    }

    @Test
    void aFailingJobFailsWithItsReasonAndOthersKeepRunning() throws Exception {
        LedgerRunner.stepDelayMillis = 10;
        h = new DaemonHarness(tmp, "devices: [cpu:0, cpu:1]\n").start();
        h.writeJob("ok", DaemonHarness.ledgerJob(30, ""));
        h.writeJob("bad", DaemonHarness.ledgerJob(30, "seed: -3\n"));
        h.awaitState("bad", JobState.FAILED);
        assertEquals("injected failure at step 3", h.job("bad").reason());
        h.writeJob("refused", DaemonHarness.ledgerJob(30, "memory: {reserve: 2TiB}\n"));
        h.awaitState("refused", JobState.FAILED);
        assertEquals("memory.reserve 2TiB exceeds the device's 1TiB", h.job("refused").reason());
        h.writeJob("norunner", DaemonHarness.ledgerJob(3, "").replace("runner: ledger", "runner: rl"));
        h.awaitState("norunner", JobState.FAILED);
        assertEquals("no runner named 'rl' is installed (installed: ledger)", h.job("norunner").reason());
        h.awaitState("ok", JobState.COMPLETED);
    }

    @Test
    void aRestartedDaemonResumesFromTheLastCheckpointWithoutLosingOrRepeatingSamples() throws Exception {
        LedgerRunner.stepDelayMillis = 20;
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("long", DaemonHarness.ledgerJob(40, "checkpoint: {interval: 7}\n"));
        h.await("some steps", Duration.ofSeconds(20),
                () -> h.daemon.jobs().job("long").map(j -> j.runnerState().step() >= 10).orElse(false));
        h.close(); // shutdown: checkpoint and keep the job's state
        long stepAtShutdown = h.checkpointStep("long");
        assertTrue(stepAtShutdown >= 10, "checkpointed at shutdown: " + stepAtShutdown);
        h.events.clear();
        h.start();
        h.awaitState("long", JobState.COMPLETED);
        LedgerState s = h.lastCheckpoint("long");
        assertEquals(80, s.groupsTrained);
        assertEquals(0, s.duplicates);
        assertEquals(0, s.gaps);
        assertEquals(80, s.trained.cardinality());
    }

    @Test
    void aCorruptNewestCheckpointIsSetAsideAndThePreviousOneUsedWithAWarning() throws Exception {
        LedgerRunner.stepDelayMillis = 20;
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("torn", DaemonHarness.ledgerJob(40, "checkpoint: {interval: 5, keep: 5}\n"));
        h.await("a few checkpoints", Duration.ofSeconds(20),
                () -> h.daemon.jobs().job("torn").map(j -> j.lastCheckpointStep() >= 15).orElse(false));
        h.close();
        java.nio.file.Path dir = h.dataDir.resolve("jobs/torn/checkpoints");
        java.util.List<java.nio.file.Path> files;
        try (var s = java.nio.file.Files.list(dir)) {
            files = s.sorted().toList();
        }
        java.nio.file.Path newest = files.getLast();
        long newestStep = Long.parseLong(newest.getFileName().toString().substring(5, 17));
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(newest.toFile(), "rw")) {
            f.setLength(f.length() / 2); // torn by a crashing disk, say
        }
        h.events.clear();
        h.start();
        h.awaitState("torn", JobState.COMPLETED);
        String warning = h.events.stream().filter(e -> e.startsWith("torn:notice:checkpoint-warning:")).findFirst()
                .orElseThrow(() -> new AssertionError("no checkpoint warning: " + h.events));
        assertTrue(warning.contains(newest.getFileName() + " is corrupt: truncated or unfinished"), warning);
        assertTrue(java.nio.file.Files.exists(dir.resolve(newest.getFileName() + ".corrupt")));
        LedgerState s = h.lastCheckpoint("torn");
        assertEquals(80, s.groupsTrained, "resumed from step " + (newestStep - 5) + " and retrained from the log");
        assertEquals(0, s.duplicates + s.gaps);
    }
}
