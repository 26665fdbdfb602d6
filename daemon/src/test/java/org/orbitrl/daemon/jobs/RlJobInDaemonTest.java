package org.orbitrl.daemon.jobs;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.testing.DaemonHarness;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The quickstart job file, dropped into the daemon's jobs folder, runs on Orbit's RL runner
 * (found by its {@code runner: rl} key) through the whole lifecycle: 3 steps, an evaluation after
 * the last, a checkpoint, the sample log and metrics in the job's data folder.
 */
class RlJobInDaemonTest {
    @TempDir
    Path tmp;
    DaemonHarness h;

    @AfterEach
    void stop() {
        if (h != null) {
            h.close();
        }
    }

    /**
     * The same job split by experts over two of the daemon's devices ({@code placement: {devices: 2, expert_parallel: 2}},
     * logical CPU ranks): the daemon gives it both devices, it completes its 3 steps, evaluation and checkpoint, with rank
     * 1's files under the job's data folder.
     */
    @Test
    void anExpertParallelJobTakesTwoDevicesAndCompletes() throws Exception {
        String yaml = quickstart() + "placement: {backend: cpu, devices: 2, expert_parallel: 2}\n";
        h = new DaemonHarness(tmp, "devices: [cpu:0, cpu:1]\n").start(true);
        h.writeJob("split", yaml);
        h.await("job split to complete", java.time.Duration.ofSeconds(300),
                () -> h.daemon.jobs().job("split").map(j -> j.state() == JobState.COMPLETED
                        || j.state() == JobState.FAILED).orElse(false));
        assertEquals(JobState.COMPLETED, h.job("split").state(), h.job("split").reason());
        Job job = h.job("split");
        assertEquals(3, job.runnerState().step());
        assertEquals(3 * 8 * 8, job.runnerState().samplesTrained());
        assertTrue(h.checkpointStep("split") == 3);
        try (var files = Files.walk(h.dataDir)) {
            assertTrue(files.anyMatch(p -> p.toString().contains("ranks") && p.getFileName().toString().equals("1")),
                    "rank 1 keeps its files under the job's data folder");
        }
    }

    /**
     * A job over three of the daemon's devices: one rollout device and two data-parallel trainers
     * ({@code placement: {devices: 3, rollout_devices: 1}}, logical CPU devices): the daemon gives it all three, it trains
     * every sample of its 3 steps once and checkpoints.
     */
    @Test
    void aJobWithARolloutDeviceAndTwoTrainersTakesThreeDevicesAndCompletes() throws Exception {
        String yaml = quickstart() + "placement: {backend: cpu, devices: 3, rollout_devices: 1}\n";
        h = new DaemonHarness(tmp, "devices: [cpu:0, cpu:1, cpu:2]\n").start(true);
        h.writeJob("replicas", yaml);
        h.await("job replicas to complete", java.time.Duration.ofSeconds(300),
                () -> h.daemon.jobs().job("replicas").map(j -> j.state() == JobState.COMPLETED
                        || j.state() == JobState.FAILED).orElse(false));
        assertEquals(JobState.COMPLETED, h.job("replicas").state(), h.job("replicas").reason());
        Job job = h.job("replicas");
        assertEquals(3, job.runnerState().step());
        assertEquals(3 * 8 * 8, job.runnerState().samplesTrained());
        assertTrue(h.checkpointStep("replicas") == 3);
    }

    /** The quickstart job file, its model path absolute, 3 steps and a small evaluation. */
    static String quickstart() throws java.io.IOException {
        Path repo = Path.of(System.getProperty("orbit.repo", "../"));
        return Files.readString(repo.resolve("conf/jobs.d/quickstart.yaml"))
                .replace("path: ../../models/quickstart", "path: " + repo.resolve("models/quickstart").toAbsolutePath())
                .replace("steps: 30", "steps: 3")
                .replace("  size: 100\n  samples: 8\n  pass_at_k: [1, 4, 8]", "  size: 8\n  samples: 2\n  pass_at_k: [1, 2]");
    }

    @Test
    void theQuickstartJobRunsInTheDaemon() throws Exception {
        Path repo = Path.of(System.getProperty("orbit.repo", "../"));
        String yaml = Files.readString(repo.resolve("conf/jobs.d/quickstart.yaml"))
                .replace("path: ../../models/quickstart", "path: " + repo.resolve("models/quickstart").toAbsolutePath())
                .replace("steps: 30", "steps: 3")
                .replace("  size: 100\n  samples: 8\n  pass_at_k: [1, 4, 8]", "  size: 8\n  samples: 2\n  pass_at_k: [1, 2]");
        assertTrue(yaml.contains("steps: 3") && yaml.contains("size: 8"), "the job file was shortened:\n" + yaml);
        h = new DaemonHarness(tmp, "").start(true);
        h.writeJob("quick", yaml);
        h.await("job quick to complete", java.time.Duration.ofSeconds(240),
                () -> h.daemon.jobs().job("quick").map(j -> j.state() == JobState.COMPLETED
                        || j.state() == JobState.FAILED).orElse(false));
        assertEquals(JobState.COMPLETED, h.job("quick").state(), h.job("quick").reason());
        assertEquals(List.of("quick:QUEUED->PLANNING", "quick:PLANNING->LOADING", "quick:LOADING->RUNNING",
                "quick:RUNNING->COMPLETED"), h.events.stream().filter(e -> e.startsWith("quick:") && e.contains("->")).toList());
        Job job = h.job("quick");
        assertEquals(3, job.runnerState().step());
        assertEquals(3, job.lastEval().step());
        assertEquals(3 * 8 * 8, job.runnerState().samplesTrained());
        assertTrue(h.checkpointStep("quick") == 3);
        try (var files = Files.walk(h.dataDir)) {
            assertTrue(files.anyMatch(p -> p.getFileName().toString().equals("metrics.jsonl")), "metrics written");
        }
    }
}
