package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.scheduler.job.AsyncSpec;
import org.orbitrl.scheduler.job.ComputeBackend;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.PlacementSpec;
import org.orbitrl.scheduler.job.StepMetrics;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code placement: {devices: 2, expert_parallel: 2}}: the quickstart job (a Qwen3-MoE of 8 experts) with each of two
 * logical CPU ranks holding 4 experts of every layer, run by {@link ExpertParallelRunner} in lockstep. Its two steps and
 * its evaluation equal the one-device job's bit for bit (the same sampled tokens, rewards, loss, gradient norm,
 * train/rollout gap and accuracy): expert parallelism keeps every sum's order. Async mode is refused naming the key.
 */
class ExpertParallelJobTest {

    record Run(List<StepMetrics> steps, EvalResult eval) {
    }

    private static Run run(JobSpec spec, Path dir, List<String> devices) throws Exception {
        JobContext ctx = new JobContext(spec, dir, dir.resolve("samples"), devices, () -> false);
        List<StepMetrics> out = new ArrayList<>();
        try (JobRunner runner = new RlRunnerProvider().create(ctx)) {
            if (devices.size() > 1) {
                assertInstanceOf(ExpertParallelRunner.class, runner, "a job split by experts gets the expert-parallel runner");
            }
            runner.plan();
            runner.load(null);
            for (int i = 0; i < 2; i++) {
                out.add(runner.step());
            }
            return new Run(out, runner.evaluate());
        }
    }

    @Test
    void twoExpertParallelRanksRunTheOneDeviceJobBitForBit(@TempDir Path dir) throws Exception {
        JobSpec q = CudaJobTest.onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CPU);
        Run one = run(q, dir.resolve("one"), List.of("cpu:0"));
        Run split = run(CudaJobTest.onPlacement(q, new PlacementSpec(ComputeBackend.CPU, 2, 0, 2, 1)), dir.resolve("ep"),
                List.of("cpu:0", "cpu:1"));
        for (int i = 0; i < 2; i++) {
            StepMetrics a = one.steps().get(i);
            StepMetrics b = split.steps().get(i);
            String at = "step " + (i + 1) + ", expert parallel 2 against one device: ";
            assertEquals(a.tokens(), b.tokens(), at + "response tokens");
            assertEquals(a.rewardMean(), b.rewardMean(), 0.0, at + "mean reward");
            assertEquals(a.extra().get("loss"), b.extra().get("loss"), 0.0, at + "loss");
            assertEquals(a.extra().get("grad_norm"), b.extra().get("grad_norm"), 0.0, at + "gradient norm");
            assertEquals(a.logprobGapMax(), b.logprobGapMax(), 0.0, at + "train/rollout gap");
        }
        assertEquals(one.eval().accuracy(), split.eval().accuracy(), 0.0, "evaluation after two steps");
        assertTrue(dir.resolve("ep").resolve("ranks").resolve("1").toFile().isDirectory(), "rank 1 keeps its files apart");
        System.out.printf("expert parallel 2 on logical CPU ranks: losses %.9g, %.9g (one device %.9g, %.9g)%n",
                split.steps().get(0).extra().get("loss"), split.steps().get(1).extra().get("loss"),
                one.steps().get(0).extra().get("loss"), one.steps().get(1).extra().get("loss"));
    }

    /**
     * Checkpoint and resume: 4 steps straight and 2 + 2 resumed from the checkpoint (every rank restores rank 0's adapter
     * and reads its own log on from its own index) leave the same adapter and optimizer state, also where rank 1's log
     * indexes differ from rank 0's, and all are the one-device job's after 4 steps, byte for byte.
     */
    @Test
    void resumingAnExpertParallelJobGivesTheOneDeviceAdapter(@TempDir Path dir) throws Exception {
        var smallEval = new org.orbitrl.scheduler.job.EvalSpec(0, "held_out", 8, 1, List.of(1));
        JobSpec one = CudaJobTest.onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CPU).withEval(smallEval).withSteps(4);
        JobSpec ep = CudaJobTest.onPlacement(one, new PlacementSpec(ComputeBackend.CPU, 2, 0, 2, 1)).withEval(smallEval)
                .withSteps(4);
        oneStraightAndResumed(one, ep, dir);
        // rank 1's log one entry ahead of rank 0's from the start (as when a roll of the log's cycle falls between the
        // two ranks' appends of one entry): each rank reads on from its own index after the resume
        try (var log = org.orbitrl.scheduler.log.SampleLog.open(dir.resolve("shifted").resolve("ranks").resolve("1")
                .resolve("samples")); var w = log.writer()) {
            w.append(org.orbitrl.scheduler.log.AdapterVersionEvent.of(1, 0, "0", "", 0, 0));
        }
        var quiet = new java.io.PrintStream(new java.io.ByteArrayOutputStream());
        ForegroundRun.run(ep.withSteps(2), dir.resolve("shifted"), quiet, new java.util.concurrent.atomic.AtomicBoolean());
        assertEquals(4, ForegroundRun.run(ep, dir.resolve("shifted"), quiet, new java.util.concurrent.atomic.AtomicBoolean())
                .steps());
        for (String part : List.of("adapter", "optimizer")) {
            assertSameState(dir, part);
            org.junit.jupiter.api.Assertions.assertArrayEquals(latest(dir.resolve("straight"), part), latest(dir.resolve("shifted"), part),
                    part + " after 4 steps: straight vs resumed with rank 1's log indexes shifted");
        }
    }

    /**
     * DeepSeek-V3 (the Kimi-K2 architecture), the transformers fixture with Orbit's byte tokenizer beside it, LoRA on the
     * latent attention's projections and on the routed experts (one fused adapter over all experts, each rank's the same
     * tensor, its experts' gradients summed over the group): 4 steps straight and 2 + 2 resumed from rank 0's checkpoint
     * leave the same adapter and optimizer state, and both equal the one-device job's, byte for byte.
     */
    @Test
    void aDeepseekV3JobOverTwoRanksResumesAsOneDevice(@TempDir Path dir) throws Exception {
        Path hf = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf", "deepseek_v3");
        Path model = dir.resolve("model");
        java.nio.file.Files.createDirectories(model);
        for (String f : List.of("config.json", "generation_config.json", "model.safetensors")) {
            java.nio.file.Files.copy(hf.resolve(f), model.resolve(f));
        }
        org.orbitrl.scheduler.sft.ByteTokenizerFiles.write(model);
        var smallEval = new org.orbitrl.scheduler.job.EvalSpec(0, "held_out", 4, 1, List.of(1));
        JobSpec q = CudaJobTest.onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CPU);
        var lora = q.adapter();   // the latent attention's projections, and every routed expert's
        JobSpec one = q.withModel(new org.orbitrl.scheduler.job.ModelSpec(model, q.model().baseFormat())).withEval(smallEval)
                .withAdapter(new org.orbitrl.scheduler.job.AdapterSpec(lora.type(), lora.rank(), lora.alpha(), lora.dropout(),
                        List.of("q_b_proj", "kv_b_proj", "o_proj"), List.of("gate_proj", "up_proj", "down_proj"),
                        lora.oftBlockSize()))
                .withSteps(4);
        JobSpec ep = one.withPlacement(new PlacementSpec(ComputeBackend.CPU, 2, 0, 2, 1));
        oneStraightAndResumed(one, ep, dir);
        var names = RlCheckpoint.readTensors(latest(dir.resolve("one"), "adapter"), "one device").keySet();
        assertTrue(names.stream().anyMatch(n -> n.contains(".mlp.experts.lora_A")), "the experts' LoRA is trained: " + names);
        for (String part : List.of("adapter", "optimizer")) {
            assertSameState(dir, part);
        }
    }

    /** The one-device job under one/, the split job 4 steps straight under straight/ and 2 + resumed 2 under resumed/. */
    private static void oneStraightAndResumed(JobSpec one, JobSpec split, Path dir) throws Exception {
        var quiet = new java.io.PrintStream(new java.io.ByteArrayOutputStream());
        ForegroundRun.run(one, dir.resolve("one"), quiet, new java.util.concurrent.atomic.AtomicBoolean());
        ForegroundRun.run(split, dir.resolve("straight"), quiet, new java.util.concurrent.atomic.AtomicBoolean());
        ForegroundRun.run(split.withSteps(2), dir.resolve("resumed"), quiet, new java.util.concurrent.atomic.AtomicBoolean());
        assertEquals(4, ForegroundRun.run(split, dir.resolve("resumed"), quiet, new java.util.concurrent.atomic.AtomicBoolean())
                .steps());
    }

    /** The checkpoint section {@code part} after 4 steps: the one-device job's, the straight run's and the resumed run's. */
    private static void assertSameState(Path dir, String part) throws java.io.IOException {
        byte[] a = latest(dir.resolve("one"), part);
        byte[] b = latest(dir.resolve("straight"), part);
        byte[] c = latest(dir.resolve("resumed"), part);
        org.junit.jupiter.api.Assertions.assertArrayEquals(a, b, part + " after 4 steps: one device vs expert parallel 2");
        org.junit.jupiter.api.Assertions.assertArrayEquals(b, c, part + " after 4 steps: straight vs 2 + resumed 2");
    }

    private static byte[] latest(Path run, String part) throws java.io.IOException {
        return new org.orbitrl.scheduler.job.checkpoint.CheckpointStore(run.resolve("checkpoints"), 3).latest().checkpoint()
                .bytes(part);
    }

    /** A model without an expert-parallel form (gpt_oss, deepseek_v4) is refused when planned, naming its model_type. */
    @Test
    void aModelWithoutAnExpertSplitIsRefusedNamingItsType(@TempDir Path dir) throws Exception {
        Path hf = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");
        for (String type : List.of("gpt_oss", "deepseek_v4")) {
            JobSpec q = CudaJobTest.onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CPU);
            JobSpec spec = q.withModel(new org.orbitrl.scheduler.job.ModelSpec(hf.resolve(type), q.model().baseFormat()))
                    .withPlacement(new PlacementSpec(ComputeBackend.CPU, 2, 0, 2, 1));
            JobContext ctx = new JobContext(spec, dir, dir.resolve("samples"), List.of("cpu:0", "cpu:1"), () -> false);
            try (JobRunner runner = new RlRunnerProvider().create(ctx)) {
                JobException e = assertThrows(JobException.class, runner::plan);
                assertTrue(e.getMessage().contains("model_type " + type + " has no expert-parallel form")
                        && e.getMessage().contains("expert_parallel"), e.getMessage());
                assertThrows(JobException.class, () -> runner.load(null), type + ": load refuses it too");
            }
        }
    }

    @Test
    void asyncModeIsRefusedNamingTheKeys(@TempDir Path dir) throws Exception {
        JobSpec q = CudaJobTest.onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CPU);
        JobSpec spec = CudaJobTest.onPlacement(q, new PlacementSpec(ComputeBackend.CPU, 2, 0, 2, 1))
                .withAsync(new AsyncSpec(true, 2, q.async().partialRollouts(), 8, q.async().priority()));
        JobContext ctx = new JobContext(spec, dir, dir.resolve("samples"), List.of("cpu:0", "cpu:1"), () -> false);
        try (JobRunner runner = new RlRunnerProvider().create(ctx)) {
            JobException e = assertThrows(JobException.class, runner::plan);
            assertTrue(e.getMessage().contains("expert_parallel") && e.getMessage().contains("async.enabled: false"), e.getMessage());
        }
    }
}
