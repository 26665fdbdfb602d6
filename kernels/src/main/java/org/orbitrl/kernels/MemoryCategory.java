package org.orbitrl.kernels;

/**
 * What an allocation is for. The memory planner budgets by these categories and the arena
 * accounts live and peak bytes by them, so a plan and a measurement can be compared line by line.
 */
public enum MemoryCategory {
    /** Frozen base weights (quantized or not). Never has a gradient. */
    BASE_WEIGHTS,
    /** The reused buffer that C routed experts are dequantized into. */
    DEQUANT_BUFFERS,
    /** Trainable adapter tensors (LoRA A/B, OFT blocks), both rollout slots. */
    ADAPTER_PARAMS,
    /** Gradients of adapter tensors. The only gradients Orbit ever allocates. */
    ADAPTER_GRADS,
    /** Optimizer state (AdamW moments, f32) for adapter tensors. */
    OPTIMIZER_STATE,
    /** Activations kept for backward, and forward scratch. */
    ACTIVATIONS,
    /** Key/value cache of the rollout engines. */
    KV_CACHE,
    /** Logits, log-softmax and sampling workspace. */
    LOGITS,
    /** NCCL and host staging buffers. */
    COMM_BUFFERS,
    /** Headroom for the runtime (CUDA context, cuBLAS workspace, fragmentation). */
    RUNTIME_RESERVE,
    /** Anything else; tests use it. */
    OTHER
}
