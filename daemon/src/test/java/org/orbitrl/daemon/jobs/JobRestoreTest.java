package org.orbitrl.daemon.jobs;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.management.ObjectName;
import javax.management.openmbean.CompositeData;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.state.JobRecord;
import org.orbitrl.daemon.state.StateStore;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.LedgerRunner;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.StepMetrics;

/**
 * After a restart the daemon lists its jobs in the order it first accepted them, each with the measurements of its
 * last step and its last evaluation, as JMX (and so {@code orbitctl jobs}) showed them before.
 */
class JobRestoreTest {
    /** Accepted in this order: neither sorted nor the state map's hash order. */
    private static final List<String> NAMES = List.of("zeta", "beta", "omega", "alpha", "kappa", "delta", "mu", "eta");

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
    void aRestartedDaemonListsItsJobsInTheOrderItAcceptedThemWithTheirLastMetrics() throws Exception {
        LedgerRunner.stepDelayMillis = 10;
        h = new DaemonHarness(tmp, "").start();
        for (String name : NAMES) {
            h.writeJob(name, DaemonHarness.ledgerJob(3 + name.length(), ""));
            h.awaitState(name, JobState.COMPLETED);
        }
        h.writeJob("stopped", DaemonHarness.ledgerJob(100_000, "").replace("interval: 10", "interval: 2"));
        h.await("a few steps and evaluations", java.time.Duration.ofSeconds(20),
                () -> h.daemon.jobs().job("stopped").map(j -> j.lastEval() != null && j.lastEval().step() >= 4).orElse(false));
        h.daemon.jobs().stop("stopped");
        h.awaitState("stopped", JobState.STOPPED);
        List<String> order = new ArrayList<>(NAMES);
        order.add("stopped");
        Map<String, StepMetrics> steps = new LinkedHashMap<>();
        Map<String, EvalResult> evals = new LinkedHashMap<>();
        for (String name : order) {
            steps.put(name, assertNotNull(h.job(name).lastStep()));
            evals.put(name, assertNotNull(h.job(name).lastEval()));
        }
        List<String> rows = rows();

        h.close();
        h.start();
        assertEquals(order, h.daemon.jobs().jobs().stream().map(Job::name).toList());
        for (String name : order) {
            assertEquals(steps.get(name), h.job(name).lastStep(), name);
            assertEquals(evals.get(name), h.job(name).lastEval(), name);
        }
        assertEquals(rows, rows(), "the daemon's job list over JMX");
    }

    /**
     * A daemon killed after steps it had not checkpointed leaves measurements of those steps in the state map; the job
     * resumes from its checkpoint, before them, and takes those steps and their evaluation again rather than keep
     * measurements of a state it no longer has.
     */
    @Test
    void measurementsOfStepsAfterTheCheckpointAreTakenAgain() throws Exception {
        LedgerRunner.stepDelayMillis = 10;
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("cut", DaemonHarness.ledgerJob(20, "").replace("interval: 10", "interval: 0")
                + "checkpoint: {interval: 100}\n");
        h.await("a few steps", java.time.Duration.ofSeconds(20),
                () -> h.daemon.jobs().job("cut").map(j -> j.runnerState().step() >= 3).orElse(false));
        h.daemon.jobs().stop("cut");
        h.awaitState("cut", JobState.STOPPED);
        long checkpointed = h.checkpointStep("cut");
        h.close();
        try (StateStore store = StateStore.open(h.dataDir.resolve("state"), 1024)) {   // as if killed at step 20
            JobRecord r = store.get("cut").orElseThrow();
            Map<String, Double> metrics = new java.util.TreeMap<>(r.metrics());
            metrics.put("eval_accuracy", 0.987);
            store.put(new JobRecord(r.version(), r.name(), r.seq(), r.file(), r.fileSha256(), r.state(), r.reason(),
                    r.pausedByUser(), 20, r.totalSteps(), 20, r.consumedIndex(), r.samplesTrained(), r.lastCheckpointStep(),
                    r.lastCheckpointFile(), r.lastCheckpointAt(), metrics, r.passAtK(), 20, 20, r.stepExtra(), r.spec(),
                    r.updatedAt()));
        }
        h.start();
        assertEquals(20, h.job("cut").lastEval().step());
        h.daemon.jobs().resume("cut");
        h.awaitState("cut", JobState.COMPLETED);
        EvalResult last = h.job("cut").lastEval();
        assertEquals(20, last.step());
        assertEquals(0.1 + 0.01 * 20, last.accuracy(), 1e-12, "evaluated after the last step (from step "
                + checkpointed + ")");
    }

    /** The daemon's job list over JMX: name, state, step, reward and evaluation of each row. */
    private List<String> rows() throws Exception {
        CompositeData[] jobs = (CompositeData[]) h.mbeans.getAttribute(new ObjectName("org.orbitrl:type=Daemon"), "Jobs");
        return Arrays.stream(jobs).map(j -> j.get("name") + " " + j.get("state") + " " + j.get("step") + "/"
                + j.get("totalSteps") + " " + j.get("rewardMean") + " " + j.get("evalAccuracy")).toList();
    }

    private static <T> T assertNotNull(T value) {
        org.junit.jupiter.api.Assertions.assertNotNull(value);
        return value;
    }
}
