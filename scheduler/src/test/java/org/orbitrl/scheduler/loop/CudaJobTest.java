package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.scheduler.job.ComputeBackend;
import org.orbitrl.scheduler.job.EvalSpec;
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
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeFalse;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * {@code placement.backend: cuda} in an RL job. Where no GPU is present, loading the job fails
 * with an error that names the job file's key and carries the CUDA backend's reason. On a GPU
 * (exact kernels, {@code -Dorbit.cuda.exact=true} set by the test), two steps of the quickstart job
 * run on the device and the first step agrees with the CPU run: the same sampled tokens, so the
 * same rewards and token count exactly, and a loss and gradient norm within
 * 1e-4 + 1e-3·|cpu| (the CPU and CUDA kernels round bf16/f32 reductions differently; the
 * single-step trainer comparison in CudaPolicyStepTest holds them to 1e-5 + 1e-4·|cpu|, the job
 * adds a sampled rollout and more layers of accumulation on top).
 */
class CudaJobTest {

    static JobSpec onBackend(JobSpec q, ComputeBackend backend) {
        PlacementSpec p = q.placement();
        return onPlacement(q, new PlacementSpec(backend, p.devices(), p.rolloutDevices(), p.expertParallel(), p.tensorParallel()));
    }

    static JobSpec onPlacement(JobSpec q, PlacementSpec placement) {
        return new JobSpec(q.name(), q.runner(), q.model(), q.adapter(), q.algorithm(), q.kl(), q.tisCap(), q.batch(),
                q.sampling(), q.optimizer(), 2, new EvalSpec(0, EvalSpec.HELD_OUT, 4, 1, List.of(1)), q.checkpoint(),
                q.seed(), q.async(), q.task(), placement, q.memory());
    }

    private static List<StepMetrics> twoSteps(JobSpec spec, Path dir, String device) throws Exception {
        return twoSteps(spec, dir, List.of(device));
    }

    private static List<StepMetrics> twoSteps(JobSpec spec, Path dir, List<String> devices) throws Exception {
        JobContext ctx = new JobContext(spec, dir, dir.resolve("samples"), devices, () -> false);
        List<StepMetrics> out = new ArrayList<>();
        try (JobRunner runner = new RlRunnerProvider().create(ctx)) {
            runner.load(null);
            for (int i = 0; i < 2; i++) {
                out.add(runner.step());
            }
            // each of the job's GPUs reports what its allocators hold, beside its plan
            var memory = runner.memory();
            assertEquals(new java.util.LinkedHashSet<>(devices), memory.stream().map(m -> m.device())
                    .collect(java.util.stream.Collectors.toCollection(java.util.LinkedHashSet::new)), "devices reported");
            for (var m : memory) {   // the host's accounting sees no base (its weights are mapped from the checkpoint)
                var held = m.device().startsWith("cuda") ? org.orbitrl.kernels.MemoryCategory.BASE_WEIGHTS
                        : org.orbitrl.kernels.MemoryCategory.ADAPTER_PARAMS;
                assertTrue(m.live().get(held) > 0, m.device() + " holds its " + held + ": " + m);
                assertTrue(m.planned().getOrDefault(org.orbitrl.kernels.MemoryCategory.BASE_WEIGHTS, 0L) > 0,
                        m.device() + " has its plan: " + m);
            }
        }
        return out;
    }

    /** {@code n} devices cuda:0, cuda:1, ..., the last GPU repeated where the machine has fewer. */
    private static List<String> gpus(int n) {
        List<String> out = new ArrayList<>();
        for (int g = 0; g < n; g++) {
            out.add("cuda:" + Math.min(g, Cuda.deviceCount() - 1));
        }
        return out;
    }

    interface ExactBody {
        void run() throws Exception;
    }

    /** Runs {@code body} with {@code -Dorbit.cuda.exact=true} (the exact kernels), the property restored after. */
    private static void inExactMode(ExactBody body) throws Exception {
        String before = System.getProperty("orbit.cuda.exact");
        System.setProperty("orbit.cuda.exact", "true");
        try {
            body.run();
        } finally {
            if (before == null) {
                System.clearProperty("orbit.cuda.exact");
            } else {
                System.setProperty("orbit.cuda.exact", before);
            }
        }
    }

    @Test
    void withoutAGpuTheJobNamesTheKeyAndTheReason(@TempDir Path dir) throws Exception {
        assumeFalse(Cuda.available(), "a CUDA device is present: the error path is not reachable");
        JobSpec spec = onBackend(QuickstartJobTest.quickstart(), ComputeBackend.CUDA);
        JobContext ctx = new JobContext(spec, dir, dir.resolve("samples"), List.of("cuda:0"), () -> false);
        try (JobRunner runner = new RlRunnerProvider().create(ctx)) {
            JobException e = assertThrows(JobException.class, () -> runner.load(null));
            String m = e.getMessage();
            assertTrue(m.contains("placement.backend: cuda"), "names the job file key: " + m);
            assertTrue(m.contains("needs a CUDA GPU") && m.contains(Cuda.unavailableReason()),
                    "carries the backend's reason (" + Cuda.unavailableReason() + "): " + m);
            assertTrue(m.contains(spec.name()), "names the job: " + m);
        }
    }

    /**
     * {@code placement: {backend: cuda, devices: 2, rollout_devices: 1}}: the rollout engine on the first GPU over its own
     * copy of the base, the trainer on the second, each adapter version copied GPU to GPU into the engine's idle slot. In
     * exact mode two steps give the one-GPU job's metrics bit for bit (the same sampled tokens, rewards, loss, gradient
     * norm), and the train/rollout log-prob gap is zero on both. On a one-GPU machine both roles run on GPU 0 (two
     * backends, two copies of the base, the copy between their allocators): the same path, the same bits.
     */
    @Test
    void aRolloutGpuAndATrainingGpuGiveTheOneGpuStepsBitForBit(@TempDir Path dir) throws Exception {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        assertASplitGivesTheOneGpuSteps(dir, 1);
    }

    /**
     * {@code placement: {backend: cuda, devices: 3, rollout_devices: 2}}: two rollout engines, each on its GPU over its own
     * copy of the base drawing half of each step's prompts at once, and a training GPU; each version copied into both.
     * Exact mode: the one-GPU job's steps bit for bit. With fewer than three GPUs the devices repeat (each role its own
     * backend and copy of the base on the GPU it is given).
     */
    @Test
    void twoRolloutGpusAndATrainingGpuGiveTheOneGpuStepsBitForBit(@TempDir Path dir) throws Exception {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        assertASplitGivesTheOneGpuSteps(dir, 2);
    }

    private static void assertASplitGivesTheOneGpuSteps(Path dir, int rolloutGpus) throws Exception {
        inExactMode(() -> {
        JobSpec q = QuickstartJobTest.quickstart();
        List<StepMetrics> one = twoSteps(onBackend(q, ComputeBackend.CUDA), dir.resolve("one"), "cuda:0");
        List<String> gpus = gpus(rolloutGpus + 1);
        List<StepMetrics> split = twoSteps(onPlacement(q, new PlacementSpec(ComputeBackend.CUDA, rolloutGpus + 1, rolloutGpus,
                1, 1)), dir.resolve("split"), gpus);
        for (int i = 0; i < 2; i++) {
            StepMetrics a = one.get(i);
            StepMetrics b = split.get(i);
            String at = "step " + (i + 1) + " on " + gpus + " against one GPU: ";
            assertEquals(a.tokens(), b.tokens(), at + "response tokens");
            assertEquals(a.rewardMean(), b.rewardMean(), 0.0, at + "mean reward");
            assertEquals(a.extra().get("loss"), b.extra().get("loss"), 0.0, at + "loss");
            assertEquals(a.extra().get("grad_norm"), b.extra().get("grad_norm"), 0.0, at + "gradient norm");
            assertEquals(a.adapterVersion(), b.adapterVersion(), at + "adapter version");
            assertEquals(0.0, b.logprobGapMax(), 0.0, at + "the train/rollout gap in exact mode");
            assertEquals(rolloutGpus * a.extra().get("publish_bytes"), b.extra().get("publish_bytes"), 0.0,
                    at + "each version copied into every rollout engine");
        }
        System.out.printf("%d rollout GPU(s) + a training GPU on %s: loss %.9g, %.9g (one GPU %.9g, %.9g)%n", rolloutGpus,
                gpus, split.get(0).extra().get("loss"), split.get(1).extra().get("loss"), one.get(0).extra().get("loss"),
                one.get(1).extra().get("loss"));
        });
    }

    /**
     * {@code placement: {backend: cuda, devices: 2}}: two data-parallel replicas, each GPU rolling out and training half of
     * a step's prompts over its own copy of the base, the adapter's gradients summed over NCCL (on a one-GPU machine both
     * replicas on GPU 0, summed through the host). Exact mode, micro-batches of one share each: the steps match the
     * one-GPU job's within 1e-6 relative (loss, gradient norm) with the same sampled tokens, the gap zero; the shares'
     * sums differ from the one GPU's accumulation of its micro-batches in their last bits.
     */
    @Test
    void twoDataParallelGpusMatchTheOneGpuSteps(@TempDir Path dir) throws Exception {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        inExactMode(() -> {
        JobSpec q = QuickstartJobTest.quickstart();
        var b = q.batch();
        q = q.withBatch(new org.orbitrl.scheduler.job.BatchSpec(b.promptsPerStep(), b.samplesPerPrompt(), b.maxPromptTokens(),
                b.maxResponseTokens(), b.promptsPerStep() * b.samplesPerPrompt() / 2));
        List<StepMetrics> one = twoSteps(onBackend(q, ComputeBackend.CUDA), dir.resolve("one"), "cuda:0");
        List<String> gpus = List.of("cuda:0", "cuda:" + Math.min(1, Cuda.deviceCount() - 1));
        List<StepMetrics> dp = twoSteps(onPlacement(q, new PlacementSpec(ComputeBackend.CUDA, 2, 0, 1, 1)), dir.resolve("dp"),
                gpus);
        for (int i = 0; i < 2; i++) {
            StepMetrics x = one.get(i);
            StepMetrics y = dp.get(i);
            String at = "step " + (i + 1) + ", two data-parallel replicas on " + gpus + " against one GPU: ";
            assertEquals(x.tokens(), y.tokens(), at + "response tokens");
            assertEquals(x.rewardMean(), y.rewardMean(), 0.0, at + "mean reward");
            assertEquals(x.extra().get("loss"), y.extra().get("loss"), 1e-6 * Math.abs(x.extra().get("loss")), at + "loss");
            assertEquals(x.extra().get("grad_norm"), y.extra().get("grad_norm"), 1e-6 * x.extra().get("grad_norm"),
                    at + "gradient norm");
            assertEquals(0.0, y.logprobGapMax(), 0.0, at + "the train/rollout gap in exact mode");
        }
        System.out.printf("two data-parallel replicas on %s: loss %.9g, %.9g, gradient norm %.9g, %.9g (one GPU %.9g, %.9g,"
                        + " %.9g, %.9g)%n", gpus, dp.get(0).extra().get("loss"), dp.get(1).extra().get("loss"),
                dp.get(0).extra().get("grad_norm"), dp.get(1).extra().get("grad_norm"), one.get(0).extra().get("loss"),
                one.get(1).extra().get("loss"), one.get(0).extra().get("grad_norm"), one.get(1).extra().get("grad_norm"));
        });
    }

    /**
     * Async mode on GPUs with several engines: two rollout GPUs and a training GPU, and two data-parallel replicas (on a
     * one-GPU machine every role on GPU 0, each with its own backend): four steps train, the trainers publish versions,
     * and both engines' groups were drawn with a published version.
     */
    @Test
    void asyncModeOnSeveralEnginesServesThePublishedVersions(@TempDir Path dir) throws Exception {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        for (PlacementSpec p : List.of(new PlacementSpec(ComputeBackend.CUDA, 3, 2, 1, 1),
                new PlacementSpec(ComputeBackend.CUDA, 2, 0, 1, 1))) {
            JobSpec spec = onPlacement(AsyncModeTest.asyncQuickstart(4, 2), p);
            List<String> gpus = gpus(p.devices());
            Path run = dir.resolve(p.devices() + "-" + p.rolloutDevices());
            String at = "async on " + gpus + " (rollout_devices " + p.rolloutDevices() + "): ";
            double trained = 0;
            long version;
            try (JobRunner runner = new RlRunnerProvider().create(new JobContext(spec, run, run.resolve("samples"), gpus,
                    () -> false))) {
                runner.load(null);
                for (int i = 0; i < 4; i++) {
                    trained += runner.step().extra().get("train_samples");
                }
                version = runner.state().adapterVersion();
            }
            assertTrue(trained > 0 && version > 1, at + trained + " samples trained, version " + version);
            int half = spec.batch().promptsPerStep() / 2;
            long[] newest = new long[2];
            for (var r : RolloutDevicesJobTest.samples(run)) {
                int engine = (int) (r.groupId() % 1_000_000L) < half ? 0 : 1;
                newest[engine] = Math.max(newest[engine], r.newestVersion());
            }
            assertTrue(newest[0] > 1 && newest[1] > 1, at + "both engines served a published version: " + newest[0] + ", "
                    + newest[1]);
            System.out.printf("%s%.0f samples trained in 4 steps, version %d; newest versions drawn %d, %d%n", at, trained,
                    version, newest[0], newest[1]);
        }
    }

    /**
     * {@code placement: {backend: cuda, devices: 2, expert_parallel: 2}} on two GPUs (skipped with fewer: NCCL takes one
     * rank a GPU): each GPU holds 4 of the quickstart model's 8 experts, the ranks in lockstep over NCCL. In exact mode
     * two steps give the one-GPU job's metrics bit for bit.
     */
    @Test
    void anExpertParallelJobOnTwoGpusGivesTheOneGpuStepsBitForBit(@TempDir Path dir) throws Exception {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        assumeTrue(Cuda.deviceCount() >= 2, () -> "an expert-parallel job over NCCL needs 2 GPUs; this machine has "
                + Cuda.deviceCount());
        inExactMode(() -> {
        JobSpec q = QuickstartJobTest.quickstart();
        List<StepMetrics> one = twoSteps(onBackend(q, ComputeBackend.CUDA), dir.resolve("one"), "cuda:0");
        List<StepMetrics> ep = twoSteps(onPlacement(q, new PlacementSpec(ComputeBackend.CUDA, 2, 0, 2, 1)),
                dir.resolve("ep"), List.of("cuda:0", "cuda:1"));
        for (int i = 0; i < 2; i++) {
            String at = "step " + (i + 1) + " with the experts split over 2 GPUs: ";
            assertEquals(one.get(i).tokens(), ep.get(i).tokens(), at + "response tokens");
            assertEquals(one.get(i).extra().get("loss"), ep.get(i).extra().get("loss"), 0.0, at + "loss");
            assertEquals(one.get(i).extra().get("grad_norm"), ep.get(i).extra().get("grad_norm"), 0.0, at + "gradient norm");
        }
        System.out.printf("expert parallel 2 on 2 GPUs: loss %.9g, %.9g (one GPU %.9g, %.9g)%n",
                ep.get(0).extra().get("loss"), ep.get(1).extra().get("loss"), one.get(0).extra().get("loss"),
                one.get(1).extra().get("loss"));
        });
    }

    @Test
    void twoQuickstartStepsOnTheGpuMatchTheCpuFirstStep(@TempDir Path dir) throws Exception {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        inExactMode(() -> {
        JobSpec q = QuickstartJobTest.quickstart();
        List<StepMetrics> cpu = twoSteps(onBackend(q, ComputeBackend.CPU), dir.resolve("cpu"), "cpu:0");
        List<StepMetrics> gpu = twoSteps(onBackend(q, ComputeBackend.CUDA), dir.resolve("cuda"), "cuda:0");
        assertEquals(2, gpu.size());
        StepMetrics a = cpu.get(0);
        StepMetrics b = gpu.get(0);
        assertEquals(a.tokens(), b.tokens(), "first step's response tokens, cpu vs cuda");
        assertEquals(a.rewardMean(), b.rewardMean(), 0.0, "first step's mean reward, cpu vs cuda");
        for (String key : List.of("loss", "grad_norm")) {
            double x = a.extra().get(key);
            double y = b.extra().get(key);
            assertTrue(Double.isFinite(y) && Math.abs(x - y) <= 1e-4 + 1e-3 * Math.abs(x),
                    "first step's " + key + ": cpu " + x + " cuda " + y + " (tolerance 1e-4 + 1e-3*|cpu|)");
        }
        assertTrue(Double.isFinite(gpu.get(1).extra().get("loss")), "second step's loss on cuda is finite");
        assertEquals(2, gpu.get(1).step());
        });
    }
}
