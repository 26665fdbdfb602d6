package org.orbitrl.model.spec;

/** The feed-forward block of one decoder layer. */
public enum MlpKind {
    /** A dense SwiGLU MLP of {@code intermediate_size}. */
    DENSE,
    /** A routed mixture of experts (plus shared experts where the model has them). */
    MOE,
    /**
     * DeepSeek V4's hash-routed MoE ({@code hash_moe}): experts chosen by a frozen
     * {@code tid2eid[token_id]} table instead of the router's top-k.
     */
    HASH_MOE;

    public boolean isMoe() {
        return this != DENSE;
    }
}
