package org.orbitrl.memory.plan;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.comm.LocalRanks;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.parallel.RankGroups;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The planner's per-GPU layout and the runtime's agree: for the fixture models on 2 and 4 logical
 * ranks with expert and tensor parallelism, every rank's share of the base weights (what the
 * loaded shard actually holds, byte for byte) equals the planner's base-weight bytes per GPU for
 * the same colocated layout, and the KV bytes per token of a rank's cache equal the planner's
 * per-GPU figure (KV heads split by tp). Exact equality: both count the same tensors.
 */
class ParallelPlanAgreementTest {

    @ParameterizedTest(name = "{0} on {1} GPUs: ep {2}, tp {3}")
    @CsvSource({
            "qwen3, 2, 1, 2",
            "qwen3_moe, 2, 2, 1",
            "qwen3_moe, 2, 2, 2",
            "qwen3_moe, 4, 4, 1",
            "qwen3_moe, 4, 4, 2",
            "qwen3_moe, 4, 2, 2",
    })
    void shardBytesEqualThePlan(String arch, int gpus, int ep, int tp) {
        Path dir = TestModels.fixtures().resolve(arch);
        ModelSpec spec = TestModels.spec("fixtures/" + arch);
        NodeSpec node = new NodeSpec("test", gpus, 1L << 40);
        ParallelLayout plannerLayout = ParallelLayout.colocated(ep, tp);
        plannerLayout.validate(spec, node);
        MemoryPlan plan = MemoryPlanner.plan(PlanRequest.defaults(spec, dir.resolve("config.json"), node)
                .withLayout(plannerLayout).withKvDtype(DType.F32));
        long plannedBase = plan.budget(GpuRole.COLOCATED).get(MemoryCategory.BASE_WEIGHTS);
        long plannedKvPerToken = 0;
        for (int l = 0; l < spec.numLayers(); l++) {
            plannedKvPerToken += KvCacheLayout.bytesPerToken(spec, l, DType.F32);
        }
        plannedKvPerToken /= KvCacheLayout.tensorParallelSplit(spec, tp);
        var runtime = new org.orbitrl.model.parallel.ParallelLayout(gpus, tp, ep);
        List<long[]> held = LocalRanks.run(gpus, c -> {
            RankGroups groups = RankGroups.split(runtime, c);
            try (LoadedModel m = LoadedModel.load(dir, new ScalarBackend(), org.orbitrl.model.BaseFormat.BF16,
                    groups)) {
                Qwen3Model q = (Qwen3Model) m.model();
                CausalLM.CacheGeometry g = q.cacheGeometry();
                long kv = (long) g.layers() * g.kvHeads() * (g.headDim() + g.vHeadDim()) * DType.F32.bytes();
                return new long[]{q.heldBaseBytes(), kv};
            }
        });
        for (int r = 0; r < gpus; r++) {
            assertEquals(plannedBase, held.get(r)[0], arch + " rank " + r + " base weight bytes vs the plan");
            assertEquals(plannedKvPerToken, held.get(r)[1], arch + " rank " + r + " KV bytes per token vs the plan");
        }
        System.out.printf("%s on %d GPUs, ep %d, tp %d: %d base bytes and %d KV bytes/token per GPU, planner and runtime%n",
                arch, gpus, ep, tp, plannedBase, plannedKvPerToken);
    }

    /**
     * DeepSeek-V3 / Kimi-K2 with their routed experts split (the one split the latent-attention models take): each rank's
     * base bytes (the whole attention, shared experts, dense layers, embedding and head, and its block of the routed
     * experts) equal the planner's per GPU.
     */
    @ParameterizedTest(name = "deepseek_v3 on {0} GPUs: ep {0}")
    @CsvSource({"2", "4"})
    void latentAttentionShardBytesEqualThePlan(int gpus) {
        Path dir = TestModels.fixtures().resolve("deepseek_v3");
        ModelSpec spec = TestModels.spec("fixtures/deepseek_v3");
        NodeSpec node = new NodeSpec("test", gpus, 1L << 40);
        ParallelLayout plannerLayout = ParallelLayout.colocated(gpus, 1);
        plannerLayout.validate(spec, node);
        MemoryPlan plan = MemoryPlanner.plan(PlanRequest.defaults(spec, dir.resolve("config.json"), node)
                .withLayout(plannerLayout).withKvDtype(DType.F32));
        long plannedBase = plan.budget(GpuRole.COLOCATED).get(MemoryCategory.BASE_WEIGHTS);
        var runtime = new org.orbitrl.model.parallel.ParallelLayout(gpus, 1, gpus);
        List<Long> held = LocalRanks.run(gpus, c -> {
            try (LoadedModel m = LoadedModel.load(dir, new ScalarBackend(), org.orbitrl.model.BaseFormat.BF16,
                    RankGroups.split(runtime, c))) {
                return ((org.orbitrl.model.arch.DeepseekV3Model) m.model()).heldBaseBytes();
            }
        });
        long whole;
        try (LoadedModel m = LoadedModel.load(dir, new ScalarBackend(), org.orbitrl.model.BaseFormat.BF16)) {
            whole = ((org.orbitrl.model.arch.DeepseekV3Model) m.model()).heldBaseBytes();
        }
        for (int r = 0; r < gpus; r++) {
            assertEquals(plannedBase, (long) held.get(r), "deepseek_v3 rank " + r + " of " + gpus + " base weight bytes vs the plan");
        }
        assertTrue(plannedBase < whole, "a rank holds less than the whole model: " + plannedBase + " of " + whole);
        System.out.printf("deepseek_v3 on %d GPUs, ep %d: %d base bytes per GPU (whole model %d), planner and runtime%n", gpus,
                gpus, plannedBase, whole);
    }
}
