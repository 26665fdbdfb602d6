package org.orbitrl.kernels.quant;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** The quant formats Orbit knows, by {@link QuantFormat#name()}. */
public final class QuantFormats {
    private QuantFormats() {
    }

    private static final Map<String, QuantFormat> BY_NAME = new LinkedHashMap<>();

    static {
        for (QuantFormat f : List.of(Int4G32.INSTANCE, Int4G32Asym.INSTANCE, Mxfp4.INSTANCE, Nvfp4.INSTANCE,
                Fp8Block128.INSTANCE, Fp8Block128Ue8m0.INSTANCE)) {
            if (BY_NAME.put(f.name(), f) != null) {
                throw new IllegalStateException("two quant formats named " + f.name());
            }
        }
    }

    /** The format called {@code name}; throws listing the known names if there is none. */
    public static QuantFormat byName(String name) {
        QuantFormat f = BY_NAME.get(name);
        if (f == null) {
            throw new IllegalArgumentException("unknown quant format '" + name + "'; known formats: "
                    + String.join(", ", BY_NAME.keySet()));
        }
        return f;
    }

    /** All formats, in a stable order. */
    public static List<QuantFormat> all() {
        return List.copyOf(BY_NAME.values());
    }

    /** The names of all formats, in the order of {@link #all()}. */
    public static List<String> names() {
        return List.copyOf(BY_NAME.keySet());
    }
}
