package org.orbitrl.model.parallel;

/**
 * How tensor parallelism splits one linear layer, by its Hugging Face module name.
 * COLUMN layers (q/k/v projections, dense gate/up) keep a block of output rows: their LoRA B is
 * split the same way and LoRA A is replicated (its gradient is a partial sum over the tensor-parallel
 * ranks). ROW layers (o projection, dense down) keep a block of input columns: LoRA A is split,
 * LoRA B replicated (partial gradient). Everything else is replicated whole.
 */
public enum LayerSplit {
    COLUMN, ROW, NONE;

    /** The split of module {@code model.layers.N.<...>} (routed experts are never tensor-split). */
    public static LayerSplit of(String module) {
        if (module.equals("lm_head") || module.equals("model.embed_tokens")) {
            return COLUMN;   // split by vocabulary rows
        }
        if (!module.startsWith("model.layers.") || module.contains(".experts")) {
            return NONE;
        }
        if (module.endsWith(".self_attn.q_proj") || module.endsWith(".self_attn.k_proj")
                || module.endsWith(".self_attn.v_proj") || module.endsWith(".mlp.gate_proj")
                || module.endsWith(".mlp.up_proj")) {
            return COLUMN;
        }
        if (module.endsWith(".self_attn.o_proj") || module.endsWith(".mlp.down_proj")) {
            return ROW;
        }
        return NONE;
    }

    /** True for a routed-expert module or its fused adapter parameters ({@code model.layers.N.mlp.experts...}). */
    public static boolean isExperts(String module) {
        return module.contains(".mlp.experts");
    }

    /** True for the router of a MoE layer ({@code model.layers.N.mlp.gate}). */
    public static boolean isRouter(String module) {
        return module.startsWith("model.layers.") && module.endsWith(".mlp.gate");
    }
}
