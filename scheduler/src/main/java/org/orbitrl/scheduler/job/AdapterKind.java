package org.orbitrl.scheduler.job;

/** The trainable adapter on the frozen base. */
public enum AdapterKind {
    /** Low-rank update {@code y = xWᵀ + (α/r)·(x Aᵀ) Bᵀ}, PEFT conventions. */
    LORA,
    /** Orthogonal fine-tuning: block-diagonal Cayley rotation of the weights, PEFT conventions. */
    OFT
}
