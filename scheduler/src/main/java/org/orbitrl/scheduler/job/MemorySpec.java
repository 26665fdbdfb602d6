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
 */
public record MemorySpec(int expertChunk, boolean recompute, ByteSize reserve) {
    public MemorySpec {
        new Checks()
                .range("expert_chunk", expertChunk, 0, 1 << 16)
                .require(reserve != null, "reserve", "is required")
                .done();
    }

    static MemorySpec read(Section s) {
        int chunk = s.integer("expert_chunk", 0);
        boolean recompute = s.bool("recompute", true);
        ByteSize reserve = s.bytes("reserve", ByteSize.ofGiB(2));
        return s.build(() -> new MemorySpec(chunk, recompute, reserve));
    }
}
