package org.orbitrl.memory.arena;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.BaseFormat;
import org.orbitrl.memory.plan.BatchShape;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlan;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.spec.ConfigLoader;

/** An arena built from a plan enforces its per-category budget and reports predicted against measured. */
class PlanComparisonTest {

    private static MemoryPlan tinyPlan() {
        Path cfg = Path.of(System.getProperty("orbit.fixtures"), "hf", "qwen3_moe", "config.json");
        return MemoryPlanner.plan(PlanRequest.defaults(ConfigLoader.load(cfg), cfg, NodeSpec.parse("2x2GiB"))
                .withBase(BaseFormat.parse("int4")).withAdapter(AdapterSpec.parse("lora:4"))
                .withBatch(new BatchShape(2, 2, 8, 8, 1)).withLayout(ParallelLayout.colocated(2, 1)).withReserve(0));
    }

    @Test
    void comparesPlanWithMeasuredPeak() {
        MemoryPlan plan = tinyPlan();
        long kvPlanned = plan.budget(GpuRole.COLOCATED).get(MemoryCategory.KV_CACHE);
        long basePlanned = plan.budget(GpuRole.COLOCATED).get(MemoryCategory.BASE_WEIGHTS);
        try (HostMemory mem = new HostMemory(plan.gpuCapacity());
             DeviceArena arena = DeviceArena.forPlan(mem, plan, GpuRole.COLOCATED)) {
            arena.allocate(MemoryCategory.BASE_WEIGHTS, DType.U8, basePlanned / 2);
            try (JobScope job = arena.openJob("grpo-1")) {
                job.allocate(MemoryCategory.KV_CACHE, DType.U8, kvPlanned / 4);
                try (JobScope step = job.openScope()) {
                    step.allocate(MemoryCategory.KV_CACHE, DType.U8, kvPlanned / 4);
                }
                // one byte past the KV budget is refused, naming the category and the plan's number
                AllocationRefusedException e = assertThrows(AllocationRefusedException.class,
                        () -> job.allocate(MemoryCategory.KV_CACHE, DType.U8, kvPlanned));
                assertEquals(MemoryCategory.KV_CACHE, e.category());
                assertEquals(kvPlanned, e.budget());
                PlanComparison c = arena.compare(plan);
                System.out.println(c.render());
                assertEquals(kvPlanned, c.row(MemoryCategory.KV_CACHE).predicted());
                assertEquals(align(kvPlanned / 4) * 2, c.row(MemoryCategory.KV_CACHE).peak(), "peak: both quarters at once");
                assertEquals(align(kvPlanned / 4), c.row(MemoryCategory.KV_CACHE).live(), "live: the step's quarter freed");
                assertEquals(align(basePlanned / 2), c.row(MemoryCategory.BASE_WEIGHTS).peak());
                assertEquals(basePlanned, c.row(MemoryCategory.BASE_WEIGHTS).predicted());
                assertTrue(c.row(MemoryCategory.KV_CACHE).ratio() > 0.49 && c.row(MemoryCategory.KV_CACHE).ratio() < 0.6);
                assertTrue(c.render().contains("KV cache"), c.render());
            }
            assertEquals(0, arena.live(MemoryCategory.KV_CACHE), "the job's teardown freed its cache");
            assertEquals(align(basePlanned / 2), arena.liveTotal(), "the base outlives the job");
        }
    }

    private static long align(long bytes) {
        return (bytes + 255) / 256 * 256;
    }
}
