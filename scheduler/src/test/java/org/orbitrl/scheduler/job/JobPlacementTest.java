package org.orbitrl.scheduler.job;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.scheduler.job.yaml.ConfigException;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The {@code placement:} block of a job file: roles and ranks per device, the memory plan per
 * device (the planner's own budget for that device's role), refusals before loading, and the
 * multi-node keys.
 */
class JobPlacementTest {
    static final Path MOE = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf", "qwen3_moe");
    static final List<String> FOUR = List.of("cuda:0", "cuda:1", "cuda:2", "cuda:3");

    static PlanRequest request(ModelSpec spec) {
        return PlanRequest.defaults(spec, MOE.resolve("config.json"), new NodeSpec("x", 1, 1L << 36));
    }

    @Test
    void splitPlacementFromTheJobFileGivesEachDeviceItsRoleRanksAndBudget() throws Exception {
        JobSpec job = JobFilesTest.parse("""
                model: {path: m}
                placement: {backend: cuda, devices: 4, rollout_devices: 2, expert_parallel: 2, tensor_parallel: 1}
                """);
        JobPlacement p = JobPlacement.of(job.placement(), FOUR);
        assertEquals(List.of(GpuRole.ROLLOUT, GpuRole.ROLLOUT, GpuRole.TRAIN, GpuRole.TRAIN),
                p.assignments().stream().map(JobPlacement.Assignment::role).toList());
        assertEquals(List.of(0, 1, 0, 1), p.assignments().stream().map(JobPlacement.Assignment::epRank).toList());
        assertEquals(new org.orbitrl.model.parallel.ParallelLayout(2, 1, 2), p.modelLayout());
        ModelSpec spec = ConfigLoader.load(MOE);
        long perDevice = 64L << 30;
        JobPlan plan = p.plan(request(spec), perDevice);
        var reference = MemoryPlanner.plan(request(spec).withNode(new NodeSpec("x", 4, perDevice), p.plannerLayout()));
        for (JobPlacement.Assignment a : p.assignments()) {
            Map<MemoryCategory, Long> got = plan.bytes().get(a.device());
            assertEquals(reference.budget(a.role()).bytes(), got, a.device() + " budget is the planner's for " + a.role());
            assertEquals(a.role() == GpuRole.TRAIN, got.get(MemoryCategory.ADAPTER_GRADS) > 0, a.device() + " gradients");
            assertEquals(a.role() == GpuRole.ROLLOUT, got.get(MemoryCategory.KV_CACHE) > 0, a.device() + " KV cache");
        }
        assertTrue(plan.table().contains("KV"), plan.table());
    }

    @Test
    void colocatedReplicasAreDataParallel() throws Exception {
        PlacementSpec s = new PlacementSpec(ComputeBackend.CUDA, 8, 0, 4, 2);
        JobPlacement p = JobPlacement.of(s, List.of("0", "1", "2", "3", "4", "5", "6", "7"));
        assertEquals(List.of(0, 0, 0, 0, 1, 1, 1, 1), p.assignments().stream().map(JobPlacement.Assignment::dpRank).toList());
        assertEquals(List.of(0, 1, 0, 1, 0, 1, 0, 1), p.assignments().stream().map(JobPlacement.Assignment::tpRank).toList());
        assertEquals(List.of(0, 1, 2, 3, 0, 1, 2, 3), p.assignments().stream().map(JobPlacement.Assignment::epRank).toList());
    }

    @Test
    void layoutsTheModelCannotTakeAreRefusedBeforeLoading() {
        ModelSpec spec = ConfigLoader.load(MOE);
        var experts = assertThrows(PlanRefusedException.class, () -> JobPlacement.of(
                new PlacementSpec(ComputeBackend.CUDA, 3, 0, 3, 1), List.of("a", "b", "c")).plan(request(spec), 1L << 36));
        assertTrue(experts.getMessage().contains("experts"), experts.getMessage());
        var heads = assertThrows(PlanRefusedException.class, () -> JobPlacement.of(
                new PlacementSpec(ComputeBackend.CUDA, 4, 0, 1, 4), FOUR).plan(request(spec), 1L << 36));
        assertTrue(heads.getMessage().contains("num_key_value_heads"), heads.getMessage());
        var tooSmall = assertThrows(PlanRefusedException.class, () -> JobPlacement.of(
                new PlacementSpec(ComputeBackend.CUDA, 2, 0, 2, 1), List.of("a", "b"))
                .plan(request(spec).withBatch(new org.orbitrl.memory.plan.BatchShape(512, 16, 4096, 16384, 8)), 1L << 30));
        assertTrue(tooSmall.getMessage().contains("overflow"), tooSmall.getMessage());
        assertThrows(IllegalArgumentException.class, () -> JobPlacement.of(new PlacementSpec(ComputeBackend.CUDA, 2, 0, 2, 1),
                List.of("only-one")));
    }

    @Test
    void multiNodeHostsAndRendezvous() throws Exception {
        JobSpec job = JobFilesTest.parse("""
                model: {path: m}
                placement: {backend: cuda, devices: 8, expert_parallel: 8, hosts: [node-a, node-b], rendezvous: "node-a:29555"}
                """);
        PlacementSpec s = job.placement();
        assertEquals(2, s.nodes());
        assertEquals("node-a", s.rendezvousAddress().getHostString());
        assertEquals(29555, s.rendezvousAddress().getPort());
        JobPlacement p = JobPlacement.of(s, List.of("0", "1", "2", "3", "4", "5", "6", "7"));
        assertEquals(1, p.nodeRank(Set.of("node-b", "node-b.local")));
        assertThrows(IllegalArgumentException.class, () -> p.nodeRank(Set.of("node-c")));
        PlacementSpec defaults = JobFilesTest.parse("model: {path: m}\nplacement: {hosts: [h0, h1]}\n").placement();
        assertEquals(PlacementSpec.DEFAULT_RENDEZVOUS_PORT, defaults.rendezvousAddress().getPort());
        assertEquals("h0", defaults.rendezvousAddress().getHostString());
        var bad = assertThrows(ConfigException.class, () -> JobFilesTest.parse(
                "model: {path: m}\nplacement: {hosts: [a, b], rendezvous: \"a:99999\"}\n"));
        assertTrue(bad.getMessage().contains("rendezvous"), bad.getMessage());
        var dup = assertThrows(ConfigException.class, () -> JobFilesTest.parse(
                "model: {path: m}\nplacement: {hosts: [a, a]}\n"));
        assertTrue(dup.getMessage().contains("hosts"), dup.getMessage());
    }
}
