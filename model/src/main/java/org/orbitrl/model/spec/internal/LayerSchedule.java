package org.orbitrl.model.spec.internal;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.orbitrl.model.spec.AttentionKind;

/** Reads an explicit {@code layer_types} list. */
final class LayerSchedule {
    private LayerSchedule() {
    }

    /**
     * The attention kinds named in {@code layer_types}, or null when the key is absent. Names
     * outside {@code allowed} are errors. The list must cover {@code layers}; longer lists are
     * cut to {@code layers} only when {@code truncate} (DeepSeek V4 lists may include MTP layers).
     */
    static List<AttentionKind> attentionKinds(JsonFields f, int layers, Set<AttentionKind> allowed, boolean truncate) {
        List<String> names = f.optStringList("layer_types");
        if (names == null) {
            return null;
        }
        if (names.size() < layers || (!truncate && names.size() != layers)) {
            throw f.error("layer_types", "has " + names.size() + " entries; expected " + layers
                    + " (num_hidden_layers)");
        }
        List<AttentionKind> out = new ArrayList<>(layers);
        for (int i = 0; i < layers; i++) {
            AttentionKind k = AttentionKind.ofConfigName(names.get(i));
            if (k == null || !allowed.contains(k)) {
                throw f.error("layer_types[" + i + "]", "unknown layer type '" + names.get(i) + "'; expected one of "
                        + allowed.stream().map(AttentionKind::configName).sorted().toList());
            }
            out.add(k);
        }
        return out;
    }
}
