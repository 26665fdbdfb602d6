package org.orbitrl.model.spec;

/**
 * What one decoder layer's attention looks at, as the config's {@code layer_types} names it.
 */
public enum AttentionKind {
    /** Causal attention over every earlier token ({@code full_attention}). */
    FULL("full_attention"),
    /** Causal attention over the last {@code sliding_window} tokens ({@code sliding_attention}). */
    SLIDING("sliding_attention"),
    /**
     * DeepSeek V4 compressed-sparse attention: the sliding window plus KV compressed every
     * {@code compress_rates.compressed_sparse_attention} tokens, of which the lightning indexer
     * keeps the top {@code index_topk} per query ({@code compressed_sparse_attention}).
     */
    COMPRESSED_SPARSE("compressed_sparse_attention"),
    /**
     * DeepSeek V4 heavily-compressed attention: the sliding window plus KV compressed every
     * {@code compress_rates.heavily_compressed_attention} tokens, all attended
     * ({@code heavily_compressed_attention}).
     */
    HEAVILY_COMPRESSED("heavily_compressed_attention");

    private final String configName;

    AttentionKind(String configName) {
        this.configName = configName;
    }

    /** The name used in {@code layer_types}. */
    public String configName() {
        return configName;
    }

    /** The kind named {@code name} in {@code layer_types}, or null. */
    public static AttentionKind ofConfigName(String name) {
        for (AttentionKind k : values()) {
            if (k.configName.equals(name)) {
                return k;
            }
        }
        return null;
    }

    /** True for the two DeepSeek V4 kinds that keep a compressed KV branch. */
    public boolean isCompressed() {
        return this == COMPRESSED_SPARSE || this == HEAVILY_COMPRESSED;
    }
}
