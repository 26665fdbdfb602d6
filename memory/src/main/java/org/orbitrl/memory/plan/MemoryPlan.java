package org.orbitrl.memory.plan;

import java.util.Comparator;
import java.util.List;
import java.util.Map;
import org.orbitrl.kernels.MemoryCategory;

/**
 * A planned job: per-GPU bytes by category for each role, whether it fits, and how far it could
 * be pushed.
 *
 * @param request            what was planned
 * @param counts             the model's parameter counts
 * @param adapterParams      trainable parameters in the whole model (the adapter, or all for full training)
 * @param budgets            one per role (one when colocated)
 * @param expertChunk        experts per dequantization chunk actually used (0 for a dense model, and in exact mode)
 * @param expertChunkBytes   bytes one more expert in the chunk costs (bf16, double-buffered)
 * @param maxSafeExpertChunk the largest chunk that still fits, capped at the experts a GPU holds per layer
 *                           (0 if the job does not fit even with one)
 * @param maxPrompts         the most prompts per step that fit with everything else as asked (0 if none)
 * @param maxMicroBatch      the largest training micro-batch that fits (0 if none)
 * @param notes              assumptions worth reading next to the numbers
 */
public record MemoryPlan(PlanRequest request, ParamCounts counts, long adapterParams, List<GpuBudget> budgets,
                         int expertChunk, long expertChunkBytes, int maxSafeExpertChunk, int maxPrompts,
                         int maxMicroBatch, List<String> notes) {

    public MemoryPlan {
        budgets = List.copyOf(budgets);
        notes = List.copyOf(notes);
    }

    /** True when every GPU's plan fits its memory. */
    public boolean fits() {
        return budgets.stream().allMatch(GpuBudget::fits);
    }

    /** The budget with the least headroom (the one that decides whether the job fits). */
    public GpuBudget tightest() {
        return budgets.stream().min(Comparator.comparingLong(GpuBudget::headroom)).orElseThrow();
    }

    /** The budget of {@code role}; throws if the layout has no such role. */
    public GpuBudget budget(GpuRole role) {
        return budgets.stream().filter(b -> b.role() == role).findFirst()
                .orElseThrow(() -> new IllegalArgumentException("this plan has no " + role.label() + " GPUs"));
    }

    /** Per-category bytes of the tightest GPU. */
    public Map<MemoryCategory, Long> perGpuBytes() {
        return tightest().bytes();
    }

    /** Memory of one GPU. */
    public long gpuCapacity() {
        return request.node().bytesPerGpu();
    }
}
