package org.orbitrl.scheduler.job;

import org.orbitrl.scheduler.job.yaml.ByteSize;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * Memory choices the planner checks before anything loads.
 *
 * @param expertChunk experts dequantized at a time in the chunked MoE path (0 = the planner's
 *                    default, {@code PlanRequest.DEFAULT_EXPERT_CHUNK})
 * @param recompute   recompute activations in backward instead of keeping them
 * @param reserve     per device, kept free for the runtime (CUDA context, library workspaces)
 * @param keptLayers  with recompute, the last decoder layers that keep their activations instead (one
 *                    layer forward a step less each): a number of layers, or {@code auto}, as many as
 *                    the memory plan fits (see {@link #keptLayerCount})
 * @param offloadInputs with recompute, the recomputed layers' inputs wait in host memory between the forward and
 *                    their layer's backward, one on the device at a time (a copy of each to the host and back)
 */
public record MemorySpec(int expertChunk, boolean recompute, ByteSize reserve, String keptLayers, boolean offloadInputs) {
    /** {@link #keptLayerCount} of {@code kept_layers: auto}: the most layers the memory plan fits. */
    public static final int AUTO = -1;

    public MemorySpec {
        new Checks()
                .range("expert_chunk", expertChunk, 0, 1 << 16)
                .require(reserve != null, "reserve", "is required")
                .require(keptLayers != null && count(keptLayers) != Integer.MIN_VALUE, "kept_layers",
                        "expected a number of layers (0 or more) or auto, got '" + keptLayers + "'")
                .done();
    }

    /** Every layer recomputed (no kept layers), the inputs on the device. */
    public MemorySpec(int expertChunk, boolean recompute, ByteSize reserve) {
        this(expertChunk, recompute, reserve, "0");
    }

    /** The inputs of the recomputed layers on the device. */
    public MemorySpec(int expertChunk, boolean recompute, ByteSize reserve, String keptLayers) {
        this(expertChunk, recompute, reserve, keptLayers, false);
    }

    /** The kept layers as a count, or {@link #AUTO}. */
    public int keptLayerCount() {
        return count(keptLayers);
    }

    private static int count(String kept) {
        if (kept.equals("auto")) {
            return AUTO;
        }
        try {
            int n = Integer.parseInt(kept);
            return n >= 0 ? n : Integer.MIN_VALUE;
        } catch (NumberFormatException e) {
            return Integer.MIN_VALUE;
        }
    }

    static MemorySpec read(Section s) {
        int chunk = s.integer("expert_chunk", 0);
        boolean recompute = s.bool("recompute", true);
        ByteSize reserve = s.bytes("reserve", ByteSize.ofGiB(2));
        String kept = s.string("kept_layers", "0");
        boolean offload = s.bool("offload_inputs", false);
        return s.build(() -> new MemorySpec(chunk, recompute, reserve, kept, offload));
    }
}
