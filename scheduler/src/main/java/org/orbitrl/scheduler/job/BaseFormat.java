package org.orbitrl.scheduler.job;

/** How the frozen base's routed experts are held in memory. */
public enum BaseFormat {
    /** As the checkpoint stores them (its {@code quantization_config}, else its dtype). */
    AUTO,
    /** Unquantized bf16. */
    BF16,
    /** FP8 e4m3 with block scales. */
    FP8,
    /** INT4 symmetric group-32 (compressed-tensors pack-quantized), quantized on load if stored wider. */
    INT4,
    /** MXFP4 (e2m1 with e8m0 block-32 scales), as gpt-oss ships. */
    MXFP4,
    /** NVFP4 (e2m1 with fp8 block-16 scales and a tensor scale). */
    NVFP4
}
