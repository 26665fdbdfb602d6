package org.orbitrl.daemon.watch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.jobs.JobState;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.LedgerRunner;
import org.orbitrl.daemon.testing.LedgerState;

class JobsWatcherTest {
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
    void editsThroughATemporaryFileApplyTunablesAndRefuseFixedFields() throws Exception {
        LedgerRunner.stepDelayMillis = 25;
        h = new DaemonHarness(tmp, "").start();
        String base = DaemonHarness.ledgerJob(100_000, "adapter: {rank: 16}\n");
        h.writeJob("tune", base);
        h.awaitState("tune", JobState.RUNNING);
        h.await("a first checkpoint", Duration.ofSeconds(10), () -> h.job("tune").lastCheckpointStep() >= 0
                || h.job("tune").runnerState().step() > 0);
        // A live-tunable change, written the way editors do (temporary file, then rename).
        h.writeJob("tune", base.replace("eval: {interval: 10", "eval: {interval: 3") + "sampling: {temperature: 0.4}\n");
        h.await("the runner to get temperature 0.4", Duration.ofSeconds(10),
                () -> LedgerRunner.APPLIED.get("tune") != null && LedgerRunner.APPLIED.get("tune").temperature() == 0.4);
        assertEquals(3, h.job("tune").spec().eval().interval());
        // A fixed field (adapter rank) with a tunable one (lr): the tunable applies, the fixed one is refused.
        h.writeJob("tune", base.replace("rank: 16", "rank: 64") + "optimizer: {lr: 5.0e-5}\n");
        h.await("a refused change", Duration.ofSeconds(10), () -> h.events.stream().anyMatch(e -> e.startsWith(
                "tune:notice:refused-change:")));
        String notice = h.events.stream().filter(e -> e.startsWith("tune:notice:refused-change:")).findFirst().orElseThrow();
        assertTrue(notice.contains("changes to fixed fields are refused, the job keeps its running values: [adapter.rank: 16 -> 64]"),
                notice);
        assertEquals(16, h.job("tune").spec().adapter().rank());
        h.await("lr applied", Duration.ofSeconds(10), () -> LedgerRunner.APPLIED.get("tune").learningRate() == 5e-5);
        assertEquals(JobState.RUNNING, h.job("tune").state());
        assertTrue(h.job("tune").lastNotice().contains("adapter.rank"));
    }

    @Test
    void aFileStillBeingWrittenIsNotReadHalfWay() throws Exception {
        h = new DaemonHarness(tmp, "").start();
        Path file = h.jobsDir.resolve("slow.yaml");
        String full = DaemonHarness.ledgerJob(50, "");
        int cut = full.indexOf("steps: 5") + "steps: 5".length(); // the prefix is itself a valid job of 5 steps
        try (OutputStream out = Files.newOutputStream(file)) {
            for (int i = 0; i < full.length(); i += 7) {
                out.write(full.substring(i, Math.min(full.length(), i + 7)).getBytes(StandardCharsets.UTF_8));
                out.flush();
                Thread.sleep(i < cut ? 5 : 20); // keeps writing within the 150ms debounce
            }
        }
        // Editor side files are ignored.
        Files.writeString(h.jobsDir.resolve(".slow.yaml.swp"), "binary swap \u0000");
        Files.writeString(h.jobsDir.resolve("slow.yaml~"), "steps: 1");
        Files.writeString(h.jobsDir.resolve("notes.txt"), "not a job");
        h.awaitState("slow", JobState.COMPLETED);
        assertEquals(50, h.job("slow").runnerState().step());
        assertEquals(List.of("slow"), h.daemon.jobs().jobs().stream().map(j -> j.name()).toList());
        assertFalse(h.events.stream().anyMatch(e -> e.contains("notice")), h.events.toString());
    }

    @Test
    void deletingAJobFileStopsItAfterACheckpointAndPuttingItBackResumesIt() throws Exception {
        LedgerRunner.stepDelayMillis = 25;
        h = new DaemonHarness(tmp, "").start();
        String yaml = DaemonHarness.ledgerJob(60, "checkpoint: {interval: 50}\n");
        Path file = h.writeJob("gone", yaml);
        h.await("some steps", Duration.ofSeconds(20),
                () -> h.daemon.jobs().job("gone").map(j -> j.runnerState().step() >= 5).orElse(false));
        Files.delete(file);
        h.awaitState("gone", JobState.STOPPED);
        assertEquals("job file deleted", h.job("gone").reason());
        long stoppedAt = h.job("gone").runnerState().step();
        assertEquals(stoppedAt, h.checkpointStep("gone"), "stopped after a checkpoint of its last step");
        assertTrue(stoppedAt < 50, "stopped early: " + stoppedAt);
        // Touching nothing else: the job stays stopped. The file comes back: it resumes and finishes.
        h.writeJob("gone", yaml);
        h.awaitState("gone", JobState.COMPLETED);
        LedgerState s = h.lastCheckpoint("gone");
        assertEquals(120, s.groupsTrained);
        assertEquals(0, s.duplicates);
        assertEquals(0, s.gaps);
    }
}
