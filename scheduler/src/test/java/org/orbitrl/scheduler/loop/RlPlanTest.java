package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.scheduler.job.ComputeBackend;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.MemorySpec;
import org.orbitrl.scheduler.job.PlacementSpec;
import org.orbitrl.scheduler.job.SamplingSpec;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A job is planned against the memory it will run in: the host's for the CPU backend (one "device",
 * cpu:0), and for CUDA each of its {@code placement.devices} GPUs (cuda:0..), with the device-only
 * categories (the CUDA runtime's reserve) that a host plan does not have; the GPU is the visible
 * device 0, or an H200 where none is visible. The expert chunk is the job's, or the planner's
 * default for 0.
 */
class RlPlanTest {

    @Test
    void adapterModulesTheModelLacksAreRefusedAtTheJobsKeys(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();   // qwen3_moe
        org.orbitrl.scheduler.job.AdapterSpec a = q.adapter();
        JobSpec bad = q.withAdapter(new org.orbitrl.scheduler.job.AdapterSpec(a.type(), a.rank(), a.alpha(), a.dropout(),
                List.of("q_proj", "qq_proj", "o_projj"), a.expertTargets(), a.oftBlockSize()));
        JobException e = assertThrows(JobException.class, () -> RlPlan.plan(bad));
        assertTrue(e.getMessage().startsWith("planning job quickstart: adapter.targets: qq_proj, o_projj name no projection"
                + " of qwen3_moe (its projections: "), e.getMessage());
        // run in the foreground, the refusal is the same and leaves no folders behind
        Path data = tmp.resolve("data");
        JobException run = assertThrows(JobException.class, () -> ForegroundRun.run(bad, data,
                new java.io.PrintStream(java.io.OutputStream.nullOutputStream()), new java.util.concurrent.atomic.AtomicBoolean()));
        assertEquals(e.getMessage(), run.getMessage());
        assertFalse(java.nio.file.Files.exists(data), "a refused job's data folder");
        assertTrue(e.getMessage().contains("q_proj") && e.getMessage().contains("down_proj"), "lists the model's: " + e.getMessage());
        // a dense model has no experts: the expert targets are the keys at fault, as the job file wrote them
        Path dense = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf", "qwen3");
        JobSpec onDense = q.withModel(new org.orbitrl.scheduler.job.ModelSpec(dense, q.model().baseFormat()));
        e = assertThrows(JobException.class, () -> RlPlan.plan(onDense));
        assertTrue(e.getMessage().startsWith("planning job quickstart: adapter.expert_targets: gate_proj, up_proj, down_proj"
                + " name no projection of qwen3 "), e.getMessage());
    }

    @Test
    void cpuAndCudaJobsArePlannedAgainstTheirOwnMemory() throws Exception {
        JobSpec cpu = QuickstartJobTest.quickstart();
        assertEquals(ComputeBackend.CPU, cpu.placement().backend(), "the quickstart job runs on the CPU");
        JobPlan host = RlPlan.plan(cpu);
        assertEquals(List.of("cpu:0"), List.copyOf(host.bytes().keySet()));
        assertEquals(0L, host.bytes().get("cpu:0").getOrDefault(MemoryCategory.RUNTIME_RESERVE, 0L),
                "a host plan reserves nothing for a CUDA runtime");

        PlacementSpec p = cpu.placement();
        JobSpec gpu = cpu.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 2, p.rolloutDevices(), p.expertParallel(),
                p.tensorParallel()));
        JobPlan dev = RlPlan.plan(gpu);
        assertEquals(List.of("cuda:0", "cuda:1"), List.copyOf(dev.bytes().keySet()));
        Map<MemoryCategory, Long> g0 = dev.bytes().get("cuda:0");
        assertTrue(g0.getOrDefault(MemoryCategory.RUNTIME_RESERVE, 0L) > 0, "a GPU plan reserves the CUDA runtime's memory: " + g0);
        JobPlan one = RlPlan.plan(cpu.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 1, p.rolloutDevices(),
                p.expertParallel(), p.tensorParallel())));
        assertEquals(List.of("cuda:0"), List.copyOf(one.bytes().keySet()));
        assertEquals(host.bytes().get("cpu:0").get(MemoryCategory.BASE_WEIGHTS), one.bytes().get("cuda:0").get(MemoryCategory.BASE_WEIGHTS),
                "the same base weights on one GPU as on the host");
        assertTrue(g0.get(MemoryCategory.BASE_WEIGHTS) <= one.bytes().get("cuda:0").get(MemoryCategory.BASE_WEIGHTS),
                "two GPUs hold no more base weights each than one");
        String node = Cuda.available() ? "2x" : "2xH200";
        assertTrue(dev.table().contains(node), "the plan names the node it was made for (" + node + "):\n" + dev.table());
    }

    /**
     * The RL runner drives one device a job, data-parallel replicas, or rollout devices and training devices: a model
     * split (expert or tensor parallelism) is refused when the job is to run (plan and load), naming the placement,
     * before anything is loaded; the rollout/training split is planned per role, each rollout GPU for its share of the
     * sequences, and data-parallel replicas each for its share. The job's GPU is the one the daemon gave it.
     */
    @Test
    void aJobOverSeveralDevicesIsRefusedWhenItIsToRunNamingItsPlacement(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();
        PlacementSpec p = q.placement();
        for (PlacementSpec split : List.of(new PlacementSpec(ComputeBackend.CUDA, 2, 0, 1, 2),
                new PlacementSpec(ComputeBackend.CUDA, 2, 0, 2, 1), new PlacementSpec(ComputeBackend.CUDA, 4, 2, 2, 1))) {
            JobSpec s = q.withPlacement(split);
            RlJobRunner runner = new RlJobRunner(new org.orbitrl.scheduler.job.JobContext(s, dir, dir.resolve("samples"),
                    List.of("cuda:0", "cuda:1", "cuda:2", "cuda:3").subList(0, split.devices()), () -> false));
            var e = org.junit.jupiter.api.Assertions.assertThrows(org.orbitrl.scheduler.job.JobException.class, runner::plan);
            assertTrue(e.getMessage().contains("placement {devices: " + split.devices() + ", rollout_devices: " + split.rolloutDevices()
                    + ", expert_parallel: " + split.expertParallel()) && e.getMessage().contains("one device"), e.getMessage());
            var l = org.junit.jupiter.api.Assertions.assertThrows(org.orbitrl.scheduler.job.JobException.class,
                    () -> runner.load(null));
            assertEquals(e.getMessage(), l.getMessage());
        }
        // the one split it runs: a rollout GPU and a training GPU, each planned for its role
        JobSpec split = q.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 2, 1, 1, 1));
        JobPlan roles = new RlJobRunner(new org.orbitrl.scheduler.job.JobContext(split, dir, dir.resolve("samples"),
                List.of("cuda:0", "cuda:1"), () -> false)).plan();
        assertEquals(List.of("cuda:0", "cuda:1"), List.copyOf(roles.bytes().keySet()));
        Map<MemoryCategory, Long> rollout = roles.bytes().get("cuda:0");
        Map<MemoryCategory, Long> train = roles.bytes().get("cuda:1");
        assertEquals(0L, rollout.getOrDefault(MemoryCategory.OPTIMIZER_STATE, 0L), "the rollout GPU holds no optimizer state: " + rollout);
        assertTrue(train.getOrDefault(MemoryCategory.OPTIMIZER_STATE, 0L) > 0, "the training GPU does: " + train);
        assertTrue(rollout.getOrDefault(MemoryCategory.KV_CACHE, 0L) > 0, "the rollout GPU holds the KV cache: " + rollout);
        assertEquals(rollout.get(MemoryCategory.BASE_WEIGHTS), train.get(MemoryCategory.BASE_WEIGHTS), "each holds the whole base");
        // three rollout GPUs: each the base and the KV cache of its share of the prompts (the quickstart: 8 prompts x 8 samples)
        JobPlan three = new RlJobRunner(new org.orbitrl.scheduler.job.JobContext(q.withPlacement(
                new PlacementSpec(ComputeBackend.CUDA, 4, 3, 1, 1)), dir, dir.resolve("samples"),
                List.of("cuda:0", "cuda:1", "cuda:2", "cuda:3"), () -> false)).plan();
        assertEquals(List.of("cuda:0", "cuda:1", "cuda:2", "cuda:3"), List.copyOf(three.bytes().keySet()));
        long sequences = (long) q.batch().promptsPerStep() * q.batch().samplesPerPrompt();
        long kvOne = rollout.get(MemoryCategory.KV_CACHE) / sequences;
        for (int g = 0; g < 3; g++) {
            Map<MemoryCategory, Long> r = three.bytes().get("cuda:" + g);
            long share = (q.batch().promptsPerStep() + 2) / 3 * q.batch().samplesPerPrompt();   // the largest share of whole prompts
            assertEquals(kvOne * share, r.get(MemoryCategory.KV_CACHE), "rollout GPU " + g + ": its share's KV cache");
            assertEquals(0L, r.getOrDefault(MemoryCategory.OPTIMIZER_STATE, 0L), "rollout GPU " + g + " holds no optimizer state");
        }
        assertEquals(train, three.bytes().get("cuda:3"), "the training GPU as with one rollout GPU");
        // an expert-parallel job: every rank rolls out every sequence (the ranks run in lockstep), so each GPU's KV cache
        // is the whole step's
        JobPlan ep = RlPlan.plan(q.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 2, 0, 2, 1)));
        for (String g : List.of("cuda:0", "cuda:1")) {
            assertEquals(kvOne * sequences, ep.bytes().get(g).get(MemoryCategory.KV_CACHE), g + ": every sequence's KV cache");
        }
        // two data-parallel replicas: each GPU the base, half the sequences' KV cache, and a trainer's whole state
        JobPlan dp = new RlJobRunner(new org.orbitrl.scheduler.job.JobContext(q.withPlacement(
                new PlacementSpec(ComputeBackend.CUDA, 2, 0, 1, 1)), dir, dir.resolve("samples"),
                List.of("cuda:0", "cuda:1"), () -> false)).plan();
        for (String g : List.of("cuda:0", "cuda:1")) {
            Map<MemoryCategory, Long> r = dp.bytes().get(g);
            assertEquals(kvOne * (sequences / 2), r.get(MemoryCategory.KV_CACHE), g + ": half the sequences' KV cache");
            assertEquals(train.get(MemoryCategory.OPTIMIZER_STATE), r.get(MemoryCategory.OPTIMIZER_STATE), g + ": a trainer's state");
            assertEquals(train.get(MemoryCategory.BASE_WEIGHTS), r.get(MemoryCategory.BASE_WEIGHTS), g + ": the whole base");
        }
        RlJobRunner one = new RlJobRunner(new org.orbitrl.scheduler.job.JobContext(q, dir, dir.resolve("samples"),
                List.of("cpu:0"), () -> false));
        assertEquals(List.of("cpu:0"), List.copyOf(one.plan().bytes().keySet()), "the one-device job is planned");
        assertEquals("cuda:1", JobReplicas.gpuOf(List.of("cuda:1")), "the daemon's GPU for the job");
        assertEquals("cuda", JobReplicas.gpuOf(List.of("cpu:0")), "no GPU named: the default one");
    }

    /**
     * Planning a job file ({@link JobPlanning#request}, what {@code orbit plan --job} plans) refuses exactly what the
     * job's runner refuses before loading, with the runner's message naming the key: a tensor split, an expert split
     * beside rollout devices or data-parallel replicas, several hosts, async mode or a model without an expert-parallel
     * form under an expert split. Every placement a runner takes is planned with its own layout, never another.
     */
    @Test
    void planningAJobFileRefusesWhatItsRunnerRefuses(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();
        java.nio.file.Path gptOss = java.nio.file.Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"),
                "hf", "gpt_oss");
        JobSpec ep = q.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 2, 0, 2, 1));
        List<JobSpec> refused = List.of(
                q.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 2, 0, 1, 2)),
                q.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 4, 0, 1, 2)),
                q.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 4, 2, 2, 1)),
                q.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 4, 0, 2, 1)),
                q.withPlacement(new PlacementSpec(ComputeBackend.CUDA, 2, 0, 1, 1, List.of("a", "b"), "")),
                ep.withAsync(new org.orbitrl.scheduler.job.AsyncSpec(true, 2, q.async().partialRollouts(), 8,
                        q.async().priority())),
                ep.withModel(new org.orbitrl.scheduler.job.ModelSpec(gptOss, q.model().baseFormat())));
        for (JobSpec s : refused) {
            List<String> devices = java.util.stream.IntStream.range(0, s.placement().devices()).mapToObj(i -> "cuda:" + i).toList();
            try (var runner = new RlRunnerProvider().create(new org.orbitrl.scheduler.job.JobContext(s, dir,
                    dir.resolve("samples"), devices, () -> false))) {
                var byRunner = org.junit.jupiter.api.Assertions.assertThrows(org.orbitrl.scheduler.job.JobException.class,
                        runner::plan, s.placement().toString());
                var planned = org.junit.jupiter.api.Assertions.assertThrows(org.orbitrl.scheduler.job.JobException.class,
                        () -> JobPlanning.request(s), s.placement() + " " + s.async() + " " + s.model() + " is planned");
                assertEquals(byRunner.getMessage(), planned.getMessage(), "the runner's message");
                assertTrue(planned.getMessage().contains("placement"), planned.getMessage());
            }
        }
        assertEquals(ParallelLayout.colocated(2, 1), JobPlanning.request(ep).layout(), "the expert split");
        assertTrue(JobPlanning.request(ep).rolloutReplicated(), "its ranks roll out every sequence");
        assertEquals(ParallelLayout.colocated(1, 1), JobPlanning.request(q.withPlacement(
                new PlacementSpec(ComputeBackend.CUDA, 4, 0, 1, 1))).layout(), "data-parallel replicas: each GPU the whole model");
        assertEquals(ParallelLayout.split(1, 1, 3, 1), JobPlanning.request(q.withPlacement(
                new PlacementSpec(ComputeBackend.CUDA, 4, 3, 1, 1))).layout(), "rollout devices and a training device");
    }

    @Test
    void theExpertChunkIsTheJobsOrThePlannersDefault() throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();
        MemorySpec m = q.memory();
        assertEquals(PlanRequest.DEFAULT_EXPERT_CHUNK, RlPlan.expertChunk(withChunk(q, new MemorySpec(0, m.recompute(), m.reserve()))));
        assertEquals(3, RlPlan.expertChunk(withChunk(q, new MemorySpec(3, m.recompute(), m.reserve()))));
    }

    /**
     * {@code memory.kept_layers}: a count as given (at most the model's layers), auto the most the plan
     * fits (all the quickstart model's layers in the host's memory; on one GPU of 1 GiB fewer, each
     * step of the planner's edge: one more would not fit), none without recompute.
     */
    @Test
    void keptLayersAreTheJobsOrTheMostThePlanFits() throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();
        MemorySpec m = q.memory();
        int layers = RlPlan.request(q).spec().numLayers();
        assertEquals(0, RlPlan.request(q).keptLayers(), "the default keeps none");
        assertEquals(1, RlPlan.request(withChunk(q, new MemorySpec(0, true, m.reserve(), "1"))).keptLayers());
        assertEquals(layers, RlPlan.request(withChunk(q, new MemorySpec(0, true, m.reserve(), "999"))).keptLayers());
        assertEquals(layers, RlPlan.request(withChunk(q, new MemorySpec(0, true, m.reserve(), "auto"))).keptLayers(),
                "the quickstart model keeps every layer in the host's memory");
        assertEquals(0, RlPlan.request(withChunk(q, new MemorySpec(0, false, m.reserve(), "auto"))).keptLayers(),
                "nothing to keep without recompute");
        String table = RlPlan.plan(withChunk(q, new MemorySpec(0, true, m.reserve(), "1"))).table();
        assertTrue(table.contains("recompute on, the last 1 layers kept"), table);
    }

    /**
     * {@code memory.offload_inputs} reaches the plan (on a GPU node its activations drop by the recomputed layers'
     * inputs but one, and a note gives the host memory they take), and only under recompute.
     */
    @Test
    void offloadedInputsArePlannedUnderRecompute() throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();
        MemorySpec m = q.memory();
        assertFalse(RlPlan.request(q).offloadInputs(), "off by default");
        PlanRequest on = RlPlan.request(withChunk(q, new MemorySpec(0, true, m.reserve(), "0", true)));
        assertTrue(on.offloadInputs());
        NodeSpec gpu = NodeSpec.parse("1xH200");
        PlanRequest base = RlPlan.request(q).withNode(gpu, ParallelLayout.auto(on.spec(), gpu, 0, 0));
        long with = MemoryPlanner.budgetOf(base.withOffloadedInputs(true), GpuRole.TRAIN).bytes().get(MemoryCategory.ACTIVATIONS);
        long without = MemoryPlanner.budgetOf(base, GpuRole.TRAIN).bytes().get(MemoryCategory.ACTIVATIONS);
        long tokens = (long) base.batch().microBatch() * base.batch().seqLen();
        long input = tokens * on.spec().hiddenSize() * 4L;   // one layer's f32 input
        assertEquals((on.spec().numLayers() - 1) * input, without - with, "the recomputed layers' inputs but one");
        assertTrue(MemoryPlanner.plan(base.withOffloadedInputs(true)).notes().stream()
                .anyMatch(n -> n.contains("inputs wait in host memory")), "the note on host memory");
        PlanRequest taped = base.withRecompute(false);
        assertEquals(MemoryPlanner.budgetOf(taped, GpuRole.TRAIN).bytes().get(MemoryCategory.ACTIVATIONS),
                MemoryPlanner.budgetOf(taped.withOffloadedInputs(true), GpuRole.TRAIN).bytes().get(MemoryCategory.ACTIVATIONS),
                "nothing waits on the host without recompute");
    }

    /** {@code sampling.decode_graphs}: only off takes the captured steps' arenas out of the plan. */
    @Test
    void decodeGraphsOffPlansNoArenas() throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();
        assertTrue(RlPlan.request(q).decodeGraphs(), "auto by default");
        SamplingSpec s = q.sampling();
        JobSpec off = new JobSpec(q.name(), q.runner(), q.model(), q.adapter(), q.algorithm(), q.kl(), q.tisCap(), q.batch(),
                new SamplingSpec(s.temperature(), s.topP(), s.topK(), s.minP(),
                        SamplingSpec.DecodeGraphs.OFF, s.kvCache()),
                q.optimizer(), q.steps(), q.eval(), q.checkpoint(), q.seed(), q.async(), q.task(), q.placement(), q.memory());
        assertFalse(RlPlan.request(off).decodeGraphs());
    }

    private static JobSpec withChunk(JobSpec q, MemorySpec m) {
        return new JobSpec(q.name(), q.runner(), q.model(), q.adapter(), q.algorithm(), q.kl(), q.tisCap(), q.batch(), q.sampling(),
                q.optimizer(), q.steps(), q.eval(), q.checkpoint(), q.seed(), q.async(), q.task(), q.placement(), m);
    }
}
