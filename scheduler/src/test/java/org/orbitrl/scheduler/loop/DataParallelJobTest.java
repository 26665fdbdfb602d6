package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.scheduler.job.BatchSpec;
import org.orbitrl.scheduler.job.ComputeBackend;
import org.orbitrl.scheduler.job.EvalSpec;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.PlacementSpec;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.log.SampleRecord;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Data-parallel trainers on the CPU's logical devices: {@code placement: {devices: 2}} (each device rolling out and
 * training half of a step's prompts) and {@code {devices: 3, rollout_devices: 1}} (one rollout device, two trainers).
 * Each trainer's share is normalised as part of the whole batch and the gradients are summed over the trainers in
 * trainer order, with micro-batches of one share each (the one-device job's micro-batches). The first step equals the
 * one-device job's bit for bit (the same samples, loss and gradient norm). After it the trainers' sums differ from the
 * one-device job's accumulation in their last bits (it adds each micro-batch's products into the running gradient,
 * the trainers add whole shares), so later steps are held to 1e-9 relative (the step-2 gradient norms of the two agreed
 * to 4e-14) with the same sampled tokens; a data-parallel job resumed from its checkpoint equals the one run straight
 * through byte for byte, and both hold the one-device job's adapter within 1e-5 of its largest value (1.3e-6 measured:
 * AdamW divides by the root of the second moment, which magnifies the last bits of the smallest gradients).
 */
class DataParallelJobTest {

    private static RolloutDevicesJobTest.Run run(JobSpec spec, Path dir, List<String> devices) throws Exception {
        return RolloutDevicesJobTest.run(spec, dir, devices);   // two steps and an evaluation
    }

    /** The quickstart job on the CPU with micro-batches of {@code microBatch} samples. */
    private static JobSpec quickstart(int microBatch) throws Exception {
        JobSpec q = CudaJobTest.onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CPU);
        BatchSpec b = q.batch();
        return q.withBatch(new BatchSpec(b.promptsPerStep(), b.samplesPerPrompt(), b.maxPromptTokens(), b.maxResponseTokens(),
                microBatch));
    }

    private static void assertSameSteps(RolloutDevicesJobTest.Run one, RolloutDevicesJobTest.Run split, String what) {
        for (int i = 0; i < 2; i++) {
            StepMetrics a = one.steps().get(i);
            StepMetrics b = split.steps().get(i);
            String at = "step " + (i + 1) + ", " + what + " against one device: ";
            double rel = i == 0 ? 0 : 1e-9;   // the first step bit for bit; after it the last bits of the sums
            assertEquals(a.tokens(), b.tokens(), at + "response tokens");
            assertEquals(a.rewardMean(), b.rewardMean(), 0.0, at + "mean reward");
            assertEquals(a.extra().get("loss"), b.extra().get("loss"), rel * Math.abs(a.extra().get("loss")), at + "loss");
            assertEquals(a.extra().get("grad_norm"), b.extra().get("grad_norm"), rel * a.extra().get("grad_norm"),
                    at + "gradient norm");
            assertEquals(a.logprobGapMean(), b.logprobGapMean(), 1e-12 + rel * a.logprobGapMean(), at + "mean train/rollout gap");
            assertEquals(a.logprobGapMax(), b.logprobGapMax(), rel * a.logprobGapMax(), at + "largest train/rollout gap");
            assertEquals(a.extra().get("train_samples"), b.extra().get("train_samples"), 0.0, at + "samples trained");
        }
        assertEquals(one.eval().accuracy(), split.eval().accuracy(), 0.0, what + ": evaluation after two steps");
    }

    @Test
    void twoDataParallelDevicesRunTheOneDeviceJobBitForBit(@TempDir Path dir) throws Exception {
        JobSpec q = quickstart(32);
        var one = run(q, dir.resolve("one"), List.of("cpu:0"));
        var two = run(q.withPlacement(new PlacementSpec(ComputeBackend.CPU, 2, 0, 1, 1)), dir.resolve("dp"),
                List.of("cpu:0", "cpu:1"));
        assertSameSteps(one, two, "two data-parallel devices");
        assertEquals(2.0, two.steps().get(0).extra().get("rollout_engines"), "an engine a replica");
        assertEquals(2.0, two.steps().get(0).extra().get("trainers"), "a trainer a replica");
        List<SampleRecord> a = RolloutDevicesJobTest.samples(dir.resolve("one"));
        List<SampleRecord> b = RolloutDevicesJobTest.samples(dir.resolve("dp"));
        assertEquals(a.size(), b.size(), "samples logged");
        for (int i = 0; i < a.size(); i++) {
            assertArrayEquals(a.get(i).responseTokens(), b.get(i).responseTokens(), "sample " + i + ": its tokens");
        }
        System.out.printf("two data-parallel devices on logical CPU devices: losses %.9g, %.9g (one device %.9g, %.9g)%n",
                two.steps().get(0).extra().get("loss"), two.steps().get(1).extra().get("loss"),
                one.steps().get(0).extra().get("loss"), one.steps().get(1).extra().get("loss"));
    }

    @Test
    void aRolloutDeviceAndTwoTrainersRunTheOneDeviceJobBitForBit(@TempDir Path dir) throws Exception {
        JobSpec q = quickstart(32);
        var one = run(q, dir.resolve("one"), List.of("cpu:0"));
        var split = run(q.withPlacement(new PlacementSpec(ComputeBackend.CPU, 3, 1, 1, 1)), dir.resolve("split"),
                List.of("cpu:0", "cpu:1", "cpu:2"));
        assertSameSteps(one, split, "a rollout device and two trainers");
        assertEquals(1.0, split.steps().get(0).extra().get("rollout_engines"), "one engine, on the rollout device");
        assertEquals(2.0, split.steps().get(0).extra().get("trainers"), "two trainers");
    }

    /**
     * Four data-parallel devices: four steps straight and 2 + 2 resumed (every trainer restored from the checkpoint's one
     * adapter) leave the same adapter and optimizer state byte for byte, and the one-device job's adapter within 1e-5
     * of its largest value.
     */
    @Test
    void resumingADataParallelJobGivesTheOneDeviceAdapter(@TempDir Path dir) throws Exception {
        var smallEval = new EvalSpec(0, "held_out", 8, 1, List.of(1));
        JobSpec one = quickstart(16).withEval(smallEval).withSteps(4);
        JobSpec dp = one.withPlacement(new PlacementSpec(ComputeBackend.CPU, 4, 0, 1, 1));
        var quiet = new PrintStream(new ByteArrayOutputStream());
        ForegroundRun.run(one, dir.resolve("one"), quiet, new AtomicBoolean());
        ForegroundRun.run(dp, dir.resolve("straight"), quiet, new AtomicBoolean());
        ForegroundRun.run(dp.withSteps(2), dir.resolve("resumed"), quiet, new AtomicBoolean());
        ForegroundRun.Outcome second = ForegroundRun.run(dp, dir.resolve("resumed"), quiet, new AtomicBoolean());
        assertEquals(4, second.steps());
        for (String part : List.of("adapter", "optimizer")) {
            assertArrayEquals(latest(dir.resolve("straight"), part), latest(dir.resolve("resumed"), part),
                    part + " after 4 steps: straight vs 2 + resumed 2");
        }
        var a = RlCheckpoint.readTensors(latest(dir.resolve("one"), "adapter"), "one device");
        var b = RlCheckpoint.readTensors(latest(dir.resolve("straight"), "adapter"), "data parallel");
        assertEquals(a.keySet(), b.keySet(), "adapter tensors");
        double largest = 0, worst = 0;
        for (var e : a.entrySet()) {
            float[] x = e.getValue().toFloatArray();
            float[] y = b.get(e.getKey()).toFloatArray();
            for (int i = 0; i < x.length; i++) {
                largest = Math.max(largest, Math.abs(x[i]));
                worst = Math.max(worst, Math.abs(x[i] - y[i]));
            }
        }
        assertTrue(worst <= 1e-5 * largest, "adapter after 4 steps, 4 data-parallel devices vs one: worst |d| " + worst
                + " of largest " + largest);
        System.out.printf("4 data-parallel devices vs one device after 4 steps: adapter worst |d| %.3g of largest %.3g%n",
                worst, largest);
    }

    /**
     * More trainers than a step has prompts: with 2 prompts over 4 data-parallel devices two trainers have an empty share
     * and still take their part in the gradients' sum and the step; the job matches the one-device job (the first step
     * bit for bit, the second within 1e-9), two engines drawing nothing.
     */
    @Test
    void trainersWithoutSamplesStillStepWithTheOthers(@TempDir Path dir) throws Exception {
        JobSpec q = quickstart(8);
        BatchSpec b = q.batch();
        q = q.withBatch(new BatchSpec(2, b.samplesPerPrompt(), b.maxPromptTokens(), b.maxResponseTokens(), 8));
        var one = run(q, dir.resolve("one"), List.of("cpu:0"));
        var four = run(q.withPlacement(new PlacementSpec(ComputeBackend.CPU, 4, 0, 1, 1)), dir.resolve("dp"),
                List.of("cpu:0", "cpu:1", "cpu:2", "cpu:3"));
        assertSameSteps(one, four, "four data-parallel devices, two with no prompt");
    }

    /** Shares of whole groups, contiguous and in order, group counts within one of each other. */
    @Test
    void trainersGetContiguousSharesOfWholeGroups() {
        List<SampleRecord> batch = new ArrayList<>();
        int[] sizes = {3, 3, 2, 3, 3, 1, 3};   // ragged sizes: a share never cuts a group
        for (int g = 0; g < sizes.length; g++) {
            for (int s = 0; s < sizes[g]; s++) {
                batch.add(SampleRecord.builder().job("j").promptId("p" + g).group(100 + g, s, sizes[g]).promptTokens(1, 2)
                        .response(new int[]{3}, new float[]{-0.5f}, new boolean[]{true}).version(1).reward(1, java.util.Map.of())
                        .finishReason(org.orbitrl.scheduler.log.FinishReason.STOP).temperature(1f)
                        .timings(new org.orbitrl.scheduler.log.SampleTimings(0, 0, 0)).build());
            }
        }
        for (int m = 1; m <= 8; m++) {
            List<SampleRecord> joined = new ArrayList<>();
            for (int j = 0; j < m; j++) {
                List<SampleRecord> share = TrainerReplicas.share(batch, m, j);
                if (!share.isEmpty() && !joined.isEmpty()) {
                    assertTrue(share.get(0).groupId() != joined.get(joined.size() - 1).groupId(),
                            m + " trainers: share " + j + " starts a new group");
                }
                long groups = share.stream().mapToLong(SampleRecord::groupId).distinct().count();
                assertTrue(Math.abs(groups - sizes.length / (double) m) < 1, m + " trainers: share " + j + " has " + groups + " groups");
                joined.addAll(share);
            }
            assertEquals(batch, joined, m + " trainers: the shares in order are the batch");
        }
    }

    private static byte[] latest(Path run, String part) throws java.io.IOException {
        return new org.orbitrl.scheduler.job.checkpoint.CheckpointStore(run.resolve("checkpoints"), 3).latest().checkpoint()
                .bytes(part);
    }
}
