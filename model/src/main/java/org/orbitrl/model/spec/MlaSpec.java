package org.orbitrl.model.spec;

/**
 * DeepSeek-V3 multi-head latent attention. Queries go through a rank-{@code qLoraRank}
 * bottleneck (or a plain projection when it is 0); keys and values are compressed into a
 * {@code kvLoraRank} latent plus one shared rope key of {@code qkRopeHeadDim}, which is all the KV
 * cache stores.
 *
 * @param qLoraRank     {@code q_lora_rank}; 0 when the config has null (plain {@code q_proj})
 * @param kvLoraRank    {@code kv_lora_rank}
 * @param qkNopeHeadDim {@code qk_nope_head_dim}: per-head query/key part without rope
 * @param qkRopeHeadDim {@code qk_rope_head_dim}: per-head query/key part with rope
 * @param vHeadDim      {@code v_head_dim}
 * @param ropeInterleave {@code rope_interleave}: rope on interleaved pairs (DeepSeek's layout, default true)
 */
public record MlaSpec(int qLoraRank, int kvLoraRank, int qkNopeHeadDim, int qkRopeHeadDim, int vHeadDim,
                      boolean ropeInterleave) {

    public MlaSpec {
        if (qLoraRank < 0) {
            throw new IllegalArgumentException("q_lora_rank must not be negative, got " + qLoraRank);
        }
        if (kvLoraRank <= 0 || qkNopeHeadDim <= 0 || qkRopeHeadDim <= 0 || vHeadDim <= 0) {
            throw new IllegalArgumentException("MLA dims must be positive: kv_lora_rank " + kvLoraRank
                    + ", qk_nope_head_dim " + qkNopeHeadDim + ", qk_rope_head_dim " + qkRopeHeadDim + ", v_head_dim " + vHeadDim);
        }
        if (qkRopeHeadDim % 2 != 0) {
            throw new IllegalArgumentException("qk_rope_head_dim must be even, got " + qkRopeHeadDim);
        }
    }

    /** Query/key head dim: nope + rope. */
    public int qkHeadDim() {
        return qkNopeHeadDim + qkRopeHeadDim;
    }

    /** Elements the KV cache holds per token and layer: the latent plus the rope key. */
    public int cacheElementsPerToken() {
        return kvLoraRank + qkRopeHeadDim;
    }
}
