package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.scheduler.job.ComputeBackend;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.EvalSpec;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.PlacementSpec;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogReader;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.report.MetricsHistory;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.StepRecord;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code placement: {devices: 3, rollout_devices: 2}} on the CPU's logical devices: two rollout engines, each over a view
 * of the trainer's weights with its own thread pool, KV cache and adapter slots, drawing half of each step's prompts, and
 * one trainer. A request's samples depend neither on the engine that draws them nor on the requests beside them (each
 * sample's random stream comes from its request's seed), so the job's steps, its sample log and its evaluation equal the
 * one-device job's bit for bit, and each adapter version is copied into both engines (twice the bytes). In async mode
 * both engines serve the versions the trainer publishes.
 */
class RolloutDevicesJobTest {

    record Run(List<StepMetrics> steps, EvalResult eval) {
    }

    /** Two steps and an evaluation, the host's memory report checked after the steps. */
    static Run run(JobSpec spec, Path dir, List<String> devices) throws Exception {
        JobContext ctx = new JobContext(spec, dir, dir.resolve("samples"), devices, () -> false);
        List<StepMetrics> out = new ArrayList<>();
        try (JobRunner runner = new RlRunnerProvider().create(ctx)) {
            runner.plan();
            runner.load(null);
            for (int i = 0; i < 2; i++) {
                out.add(runner.step());
            }
            var memory = runner.memory();   // the host's accounted memory under the job's first device, with its plan
            assertEquals(1, memory.size(), "one host: " + memory);
            assertEquals(devices.get(0), memory.get(0).device());
            assertTrue(memory.get(0).live().get(org.orbitrl.kernels.MemoryCategory.ADAPTER_PARAMS) > 0, memory.toString());
            assertTrue(memory.get(0).planned().get(org.orbitrl.kernels.MemoryCategory.BASE_WEIGHTS) > 0, memory.toString());
            return new Run(out, runner.evaluate());
        }
    }

    private static JobSpec split(JobSpec q, int rolloutDevices) {
        return q.withPlacement(new PlacementSpec(ComputeBackend.CPU, rolloutDevices + 1, rolloutDevices, 1, 1));
    }

    @Test
    void twoRolloutDevicesRunTheOneDeviceJobBitForBit(@TempDir Path dir) throws Exception {
        JobSpec q = CudaJobTest.onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CPU);
        Run one = run(q, dir.resolve("one"), List.of("cpu:0"));
        Run two = run(split(q, 2), dir.resolve("split"), List.of("cpu:0", "cpu:1", "cpu:2"));
        for (int i = 0; i < 2; i++) {
            StepMetrics a = one.steps().get(i);
            StepMetrics b = two.steps().get(i);
            String at = "step " + (i + 1) + ", two rollout devices against one device: ";
            assertEquals(a.tokens(), b.tokens(), at + "response tokens");
            assertEquals(a.rewardMean(), b.rewardMean(), 0.0, at + "mean reward");
            assertEquals(a.extra().get("loss"), b.extra().get("loss"), 0.0, at + "loss");
            assertEquals(a.extra().get("grad_norm"), b.extra().get("grad_norm"), 0.0, at + "gradient norm");
            assertEquals(a.logprobGapMax(), b.logprobGapMax(), 0.0, at + "train/rollout gap");
            assertEquals(a.adapterVersion(), b.adapterVersion(), at + "adapter version");
            assertEquals(2 * a.extra().get("publish_bytes"), b.extra().get("publish_bytes"), 0.0,
                    at + "the version copied into both engines");
        }
        assertEquals(one.eval().accuracy(), two.eval().accuracy(), 0.0, "evaluation after two steps");
        List<SampleRecord> a = samples(dir.resolve("one"));
        List<SampleRecord> b = samples(dir.resolve("split"));
        assertEquals(a.size(), b.size(), "samples logged");
        for (int i = 0; i < a.size(); i++) {
            assertEquals(a.get(i).groupId(), b.get(i).groupId(), "sample " + i + ": the same group, in the same order");
            assertArrayEquals(a.get(i).responseTokens(), b.get(i).responseTokens(), "sample " + i + ": its tokens");
            assertArrayEquals(a.get(i).rolloutLogprobs(), b.get(i).rolloutLogprobs(), "sample " + i + ": its rollout log-probs");
        }
        System.out.printf("two rollout devices + a training device on logical CPU devices: losses %.9g, %.9g (one device"
                        + " %.9g, %.9g)%n", two.steps().get(0).extra().get("loss"), two.steps().get(1).extra().get("loss"),
                one.steps().get(0).extra().get("loss"), one.steps().get(1).extra().get("loss"));
    }

    /**
     * Async mode on two rollout devices, and on two data-parallel replicas (each device rolling out and training): every
     * step trains, and both engines' groups carry versions the trainers published.
     */
    @Test
    void asyncModeServesEachPublishedVersionOnBothEngines(@TempDir Path dir) throws Exception {
        for (PlacementSpec p : List.of(new PlacementSpec(ComputeBackend.CPU, 3, 2, 1, 1),
                new PlacementSpec(ComputeBackend.CPU, 2, 0, 1, 1))) {
            JobSpec spec = AsyncModeTest.asyncQuickstart(4, 2).withPlacement(p);
            Path run = dir.resolve(p.devices() + "-" + p.rolloutDevices());
            ForegroundRun.run(spec, run, new PrintStream(new ByteArrayOutputStream()), new AtomicBoolean());
            String at = "{devices: " + p.devices() + ", rollout_devices: " + p.rolloutDevices() + "}: ";
            List<StepRecord> steps = MetricsHistory.read(run.resolve(MetricsLog.FILE_NAME)).steps();
            assertEquals(4, steps.size(), at + "steps run");
            assertTrue(steps.get(steps.size() - 1).adapterVersion() > 1, at + "the trainers published versions: " + steps);
            int half = spec.batch().promptsPerStep() / 2;
            long[] newest = new long[2];   // the newest version each engine's prompts were drawn with
            for (SampleRecord r : samples(run)) {
                int engine = (int) (r.groupId() % 1_000_000L) < half ? 0 : 1;
                newest[engine] = Math.max(newest[engine], r.newestVersion());
            }
            assertTrue(newest[0] > 1 && newest[1] > 1, at + "both engines served a published version: newest " + newest[0]
                    + ", " + newest[1]);
        }
    }

    @Test
    void aRolloutSplitGivenTheWrongNumberOfDevicesIsRefused(@TempDir Path dir) throws Exception {
        JobSpec spec = split(CudaJobTest.onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CPU), 2);
        JobContext ctx = new JobContext(spec, dir, dir.resolve("samples"), List.of("cpu:0", "cpu:1"), () -> false);
        try (JobRunner runner = new RlRunnerProvider().create(ctx)) {
            JobException e = assertThrows(JobException.class, () -> runner.load(null));
            assertTrue(e.getMessage().contains("placement {devices: 3, rollout_devices: 2} needs 3 devices")
                    && e.getMessage().contains("[cpu:0, cpu:1]"), e.getMessage());
        }
    }

    /** The shares of R requests over k engines: contiguous, in order, covering every request once, sizes within one. */
    @Test
    void requestsAreSharedContiguouslyAndEvenly() {
        for (int requests = 0; requests <= 23; requests++) {
            for (int k = 1; k <= 5; k++) {
                int next = 0;
                int min = Integer.MAX_VALUE;
                int max = 0;
                for (int r = 0; r < k; r++) {
                    int[] b = RolloutReplicas.shareBounds(requests, k, r);
                    assertEquals(next, b[0], requests + " requests over " + k + ": share " + r + " starts where the last ended");
                    next = b[1];
                    min = Math.min(min, b[1] - b[0]);
                    max = Math.max(max, b[1] - b[0]);
                }
                assertEquals(requests, next, requests + " requests over " + k + ": every request shared");
                assertTrue(max - min <= 1, requests + " requests over " + k + ": shares of " + min + " to " + max);
            }
        }
    }

    static List<SampleRecord> samples(Path dir) {
        List<SampleRecord> out = new ArrayList<>();
        try (SampleLog log = SampleLog.openReadOnly(dir.resolve("samples")); SampleLogReader r = log.reader()) {
            for (LogEntry e; (e = r.next()) != null; ) {
                if (e instanceof LogEntry.Group g) {
                    out.addAll(g.group().samples());
                }
            }
        }
        return out;
    }
}
