package org.orbitrl.memory.plan;

/**
 * What a weight tensor is for. Parameter counts are reported by family, and the base format
 * ({@link BaseFormat}) chooses a storage format per family, the way released checkpoints do
 * (Kimi-K2.x: INT4 routed experts, BF16 everything else).
 */
public enum ParamFamily {
    /** Token embedding table. */
    EMBEDDING("embeddings"),
    /** Attention projections, their biases and sinks; DeepSeek V4's compressor and indexer. */
    ATTENTION("attention"),
    /** MLP of the dense (non-MoE) layers. */
    DENSE_MLP("dense MLP"),
    /** Routed experts (and their biases, for gpt-oss). */
    ROUTED_EXPERTS("routed experts"),
    /** Shared experts of the MoE layers (DeepSeek-V3/V4, Kimi-K2). */
    SHARED_EXPERTS("shared experts"),
    /** Router weights and biases, and the router buffers (score-correction bias, hash table). */
    ROUTER("router"),
    /** RMSNorm weights (layer, attention-internal and final norms). */
    NORMS("norms"),
    /** DeepSeek V4's hyper-connection mixing parameters. */
    HYPER_CONNECTIONS("hyper-connections"),
    /** Output projection to the vocabulary (absent when tied to the embedding). */
    OUTPUT_HEAD("output head");

    private final String label;

    ParamFamily(String label) {
        this.label = label;
    }

    /** The name tables print. */
    public String label() {
        return label;
    }

    /** The family named {@code s} (enum name or label, case-insensitive, {@code -}/{@code _}/space alike), or null. */
    public static ParamFamily parse(String s) {
        String k = s.trim().toLowerCase(java.util.Locale.ROOT).replace('-', '_').replace(' ', '_');
        for (ParamFamily f : values()) {
            if (f.name().toLowerCase(java.util.Locale.ROOT).equals(k) || f.label.replace(' ', '_').equals(k)) {
                return f;
            }
        }
        return switch (k) {
            case "experts" -> ROUTED_EXPERTS;
            case "shared" -> SHARED_EXPERTS;
            case "dense", "mlp" -> DENSE_MLP;
            case "embed", "embedding" -> EMBEDDING;
            case "head", "lm_head" -> OUTPUT_HEAD;
            case "attn" -> ATTENTION;
            case "norm" -> NORMS;
            case "hc" -> HYPER_CONNECTIONS;
            default -> null;
        };
    }
}
