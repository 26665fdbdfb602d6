package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.BaseFormat;
import org.orbitrl.memory.plan.BatchShape;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Path;
import java.util.Map;

/** The memory planner's prediction for a GPU that runs the bench's training step (and no rollout), requested as {@code orbit plan} builds it. */
final class TrainBenchPlan {
    /** The node the plans are for: one H200 unless {@link #forDevice} saw a smaller card. */
    private static volatile NodeSpec node = NodeSpec.parse("1xH200");

    private TrainBenchPlan() {
    }

    /**
     * Plans for the card {@code b} runs on from now on: one H100 where it holds less than 100 GB (an H100's 80 GB),
     * else one H200; the host backends keep the H200.
     */
    static void forDevice(org.orbitrl.kernels.Backend b) {
        if (b instanceof org.orbitrl.kernels.cuda.CudaBackend gpu) {
            node = NodeSpec.parse(gpu.device().totalMemory() < 100_000_000_000L ? "1xH100" : "1xH200");
        }
    }

    /**
     * One GPU ({@link #forDevice}); INT4 routed experts, the rest bf16; LoRA r=32 (f32) on attention and experts; one
     * micro-batch of {@code batch} sequences of {@code seq} tokens (half prompt, half response); the
     * logits of every token at once, as the bench materializes them. Null if the planner refuses the request.
     */
    static Map<MemoryCategory, Long> predict(ModelSpec spec, Path configPath, int batch, int seq, boolean recompute,
                                             int expertChunk, int keptLayers) {
        return predict(spec, configPath, batch, seq, recompute, expertChunk, keptLayers, false);
    }

    /** As {@link #predict(ModelSpec, Path, int, int, boolean, int, int)}, the recomputed layers' inputs offloaded or not. */
    static Map<MemoryCategory, Long> predict(ModelSpec spec, Path configPath, int batch, int seq, boolean recompute,
                                             int expertChunk, int keptLayers, boolean offload) {
        try {
            PlanRequest req = request(spec, configPath, batch, seq, recompute, expertChunk).withKeptLayers(keptLayers)
                    .withOffloadedInputs(offload);
            return MemoryPlanner.budgetOf(req, GpuRole.TRAIN).bytes();   // the bench only trains: no rollout slots or cache
        } catch (RuntimeException e) {
            System.out.println("planner: " + e.getMessage());
            return null;
        }
    }

    /** The most layers that can keep their activations under recompute on the bench's training GPU (0 if the planner refuses). */
    static int maxKeptLayers(ModelSpec spec, Path configPath, int batch, int seq, int expertChunk) {
        try {
            return MemoryPlanner.maxKeptLayers(request(spec, configPath, batch, seq, true, expertChunk), GpuRole.TRAIN);
        } catch (RuntimeException e) {
            System.out.println("planner: " + e.getMessage());
            return 0;
        }
    }

    private static PlanRequest request(ModelSpec spec, Path configPath, int batch, int seq, boolean recompute, int expertChunk) {
        NodeSpec node = TrainBenchPlan.node;
        return new PlanRequest(spec, configPath, BaseFormat.parse("int4", spec),
                AdapterSpec.parse("lora:32:attention+experts:f32"), new BatchShape(batch, 1, seq / 2, seq - seq / 2, batch),
                node, ParallelLayout.auto(spec, node, 0, 0), recompute, expertChunk, DType.BF16, batch * seq,
                Math.max(1, Math.min(8192, batch * seq)), -1).withExact(Boolean.getBoolean("orbit.cuda.exact"));
    }
}
