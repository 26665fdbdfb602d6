package org.orbitrl.daemon.jobs;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.scheduler.job.DeviceMemory;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The daemon on a GPU machine, its devices the machine's GPUs (at most two): two quickstart jobs on the CUDA backend
 * ({@code placement: {backend: cuda, devices: 1}}) dropped into its jobs folder together. With two GPUs each job is
 * given its own and both run at once, each GPU's memory report holding that job's base weights; with one GPU the second
 * job waits for the other to finish. Both complete their 3 steps, evaluation and checkpoint. Skipped without CUDA.
 */
class CudaJobsInDaemonTest {
    @TempDir
    Path tmp;
    DaemonHarness h;

    @AfterEach
    void stop() {
        if (h != null) {
            h.close();
        }
    }

    @Test
    void twoGpuJobsDroppedTogetherRunOnTheirOwnGpus() throws Exception {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        int gpus = Math.min(2, Cuda.deviceCount());
        List<String> devices = new ArrayList<>();
        for (int g = 0; g < gpus; g++) {
            devices.add("cuda:" + g);
        }
        h = new DaemonHarness(tmp, "devices: " + devices + "\n").start(true);
        String yaml = RlJobInDaemonTest.quickstart() + "placement: {backend: cuda, devices: 1}\n";
        h.writeJob("first", yaml);
        h.writeJob("second", yaml);
        List<String> memorySeen = new ArrayList<>();
        java.util.Map<String, List<String>> given = new java.util.HashMap<>();   // each job's devices while both ran
        if (gpus == 2) {
            h.await("both jobs running at once", Duration.ofSeconds(300), () -> {
                boolean both = running("first") && running("second");
                if (both) {   // each GPU's report, taken while both jobs hold their GPUs
                    for (String j : List.of("first", "second")) {
                        given.put(j, h.job(j).devices());
                        for (DeviceMemory m : h.job(j).memory()) {
                            memorySeen.add(j + "@" + m.device() + " base " + m.live().get(MemoryCategory.BASE_WEIGHTS));
                        }
                    }
                }
                return both || finished("first") || finished("second");
            });
        }
        h.await("both jobs to finish", Duration.ofSeconds(600), () -> finished("first") && finished("second"));
        for (String j : List.of("first", "second")) {
            Job job = h.job(j);
            assertEquals(JobState.COMPLETED, job.state(), j + ": " + job.reason());
            assertEquals(3, job.runnerState().step(), j);
            assertEquals(3 * 8 * 8, job.runnerState().samplesTrained(), j);
            assertEquals(3, job.lastEval().step(), j);
            assertEquals(3, h.checkpointStep(j), j);
        }
        List<String> events = h.events.stream().filter(e -> e.contains("->")).toList();
        if (gpus == 2) {
            assertEquals(1, given.get("first").size(), "first: " + given);
            assertNotEquals(given.get("first"), given.get("second"), "each job its own GPU");
            assertEquals(2, memorySeen.size(), "one GPU report a job while both ran: " + memorySeen);
            for (String seen : memorySeen) {
                String job = seen.substring(0, seen.indexOf('@'));
                String device = seen.substring(seen.indexOf('@') + 1, seen.indexOf(' '));
                assertEquals(given.get(job).get(0), device, seen);
                assertTrue(Long.parseLong(seen.substring(seen.lastIndexOf(' ') + 1)) > 0, "base weights held: " + seen);
            }
        } else {   // one GPU: whichever job ran first, the other starts running only after it has completed
            String ranFirst = events.indexOf("first:LOADING->RUNNING") < events.indexOf("second:LOADING->RUNNING")
                    ? "first" : "second";
            String other = ranFirst.equals("first") ? "second" : "first";
            int done = events.indexOf(ranFirst + ":RUNNING->COMPLETED");
            int otherRuns = events.indexOf(other + ":LOADING->RUNNING");
            assertTrue(done >= 0 && otherRuns > done, "one job a GPU: " + events);
        }
        System.out.println("daemon on " + devices + ": " + events + "; devices given " + given + "; " + memorySeen);
    }

    private boolean running(String job) {
        return h.daemon.jobs().job(job).map(j -> j.state() == JobState.RUNNING).orElse(false);
    }

    private boolean finished(String job) {
        return h.daemon.jobs().job(job).map(j -> j.state() == JobState.COMPLETED || j.state() == JobState.FAILED)
                .orElse(false);
    }
}
