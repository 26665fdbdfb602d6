package org.orbitrl.model.spec.internal;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.orbitrl.model.spec.QuantizationConfig;

/** Reads {@code quantization_config} for the quant methods Orbit supports. */
public final class QuantizationParser {
    private QuantizationParser() {
    }

    /** The typed config, or null when {@code q} is null. */
    public static QuantizationConfig parse(JsonFields q) {
        if (q == null) {
            return null;
        }
        String method = q.reqString("quant_method");
        try {
            return switch (method) {
                case "compressed-tensors" -> compressedTensors(q);
                case "fp8" -> new QuantizationConfig.Fp8(q.optString("fmt", "e4m3"), requireList(q, "weight_block_size"),
                        q.optString("activation_scheme", "dynamic"), q.optString("scale_fmt", null));
                case "mxfp4" -> new QuantizationConfig.Mxfp4(orEmpty(q.optStringList("modules_to_not_convert")));
                default -> throw q.error("quant_method", "unsupported quant_method '" + method
                        + "'; Orbit reads compressed-tensors, fp8 and mxfp4");
            };
        } catch (IllegalArgumentException e) {
            throw q.error(null, e.getMessage());
        }
    }

    private static List<Integer> requireList(JsonFields q, String key) {
        List<Integer> v = q.optIntList(key);
        if (v == null) {
            throw q.error(key, "missing; expected a list of integers");
        }
        return v;
    }

    private static List<String> orEmpty(List<String> l) {
        return l == null ? List.of() : l;
    }

    private static QuantizationConfig compressedTensors(JsonFields q) {
        String format = q.reqString("format");
        Map<String, JsonFields> groups = q.optObjectMap("config_groups");
        if (groups.isEmpty()) {
            throw q.error("config_groups", "missing or empty; expected at least one quantization group");
        }
        Map<String, QuantizationConfig.Group> out = new LinkedHashMap<>();
        for (var e : groups.entrySet()) {
            JsonFields g = e.getValue();
            if (g == null) {
                throw q.error("config_groups." + e.getKey(), "expected an object, got null");
            }
            List<String> targets = g.optStringList("targets");
            if (targets == null) {
                throw g.error("targets", "missing; expected a list of module class names or re: patterns");
            }
            JsonFields w = g.optObject("weights");
            if (w == null) {
                throw g.error("weights", "missing; expected the weight quantization arguments");
            }
            JsonFields in = g.optObject("input_activations");
            out.put(e.getKey(), new QuantizationConfig.Group(targets, quantArgs(w), in == null ? null : quantArgs(in)));
        }
        return new QuantizationConfig.CompressedTensors(format, out, orEmpty(q.optStringList("ignore")),
                q.optString("quantization_status", null));
    }

    private static QuantizationConfig.QuantArgs quantArgs(JsonFields a) {
        try {
            return new QuantizationConfig.QuantArgs(a.reqInt("num_bits"), a.optString("type", "int"),
                    a.optString("strategy", "tensor"), a.optInt("group_size", 0), a.optBool("symmetric", true),
                    a.optBool("dynamic", false));
        } catch (IllegalArgumentException e) {
            throw a.error(null, e.getMessage());
        }
    }
}
