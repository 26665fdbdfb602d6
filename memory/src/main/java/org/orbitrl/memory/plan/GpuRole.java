package org.orbitrl.memory.plan;

/** What a GPU does in a job, which decides which categories it holds. */
public enum GpuRole {
    /** Rollout and training on the same GPUs, sharing one copy of the base (the default). */
    COLOCATED("rollout+train"),
    /** Generation only: base, both adapter slots, KV cache, sampling. */
    ROLLOUT("rollout"),
    /** Training only: base, adapter with gradients and optimizer state, activations. */
    TRAIN("train");

    private final String label;

    GpuRole(String label) {
        this.label = label;
    }

    public String label() {
        return label;
    }

    /** True if this GPU generates samples. */
    public boolean rollsOut() {
        return this != TRAIN;
    }

    /** True if this GPU runs forward/backward for training. */
    public boolean trains() {
        return this != ROLLOUT;
    }
}
