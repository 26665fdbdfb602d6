package org.orbitrl.model.nn;

import java.util.List;
import java.util.Map;

/**
 * What a model offers an adapter: its linear layers by Hugging Face module name, and its routed
 * expert sets (PEFT adapts the fused 3-D expert parameters {@code gate_up_proj} [E, 2I, H] and
 * {@code down_proj} [E, H, I] of module {@code model.layers.N.mlp.experts}).
 */
public interface AdapterTargets {

    /** Every adaptable linear, keyed by module name ({@code model.layers.0.self_attn.q_proj}). */
    Map<String, Linear> linearModules();

    /** Every routed expert set. */
    List<ExpertSet> expertSets();

    /**
     * One layer's routed experts: per expert the gate, up and down linears; or, for experts whose
     * gate and up stay fused (gpt-oss), per expert one {@code gate_up} linear [2I, H] in {@code gate},
     * whose rows are PEFT's {@code gate_up_proj} output features in order, and an empty {@code up}.
     *
     * @param module the experts module name, {@code model.layers.N.mlp.experts}
     */
    record ExpertSet(String module, List<Linear> gate, List<Linear> up, List<Linear> down) {
        /** Experts with a fused gate_up linear per expert (see the record's comment). */
        public static ExpertSet interleavedGateUp(String module, List<Linear> gateUp, List<Linear> down) {
            return new ExpertSet(module, gateUp, List.of(), down);
        }

        public int experts() {
            return gate.size();
        }

        /** True when {@code gate} holds fused gate_up linears and {@code up} is empty. */
        public boolean fusedGateUp() {
            return up.isEmpty() && !gate.isEmpty();
        }
    }
}
