package org.orbitrl.model.spec.internal;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.orbitrl.model.spec.ConfigException;

/**
 * Typed access to one JSON object of a config file. Every error names the file and the key's
 * dotted path ({@code text_config.hidden_size}) and says what was expected and what was found.
 * JSON {@code null} counts as absent, as Hugging Face writes {@code "rope_scaling": null} for
 * "not set".
 */
public final class JsonFields {
    private final Path file;
    private final String prefix;
    private final ObjectNode node;

    public JsonFields(Path file, String prefix, ObjectNode node) {
        this.file = file;
        this.prefix = prefix;
        this.node = node;
    }

    public Path file() {
        return file;
    }

    /** The dotted path of {@code key} inside this object. */
    public String path(String key) {
        return prefix.isEmpty() ? key : prefix + "." + key;
    }

    public ConfigException error(String key, String message) {
        return new ConfigException(file, key == null ? null : path(key), message);
    }

    public boolean has(String key) {
        JsonNode v = node.get(key);
        return v != null && !v.isNull();
    }

    /** True when the key is present with the value {@code null}. */
    public boolean hasExplicitNull(String key) {
        JsonNode v = node.get(key);
        return v != null && v.isNull();
    }

    private JsonNode get(String key) {
        JsonNode v = node.get(key);
        return v == null || v.isNull() ? null : v;
    }

    private JsonNode require(String key, String expected) {
        JsonNode v = get(key);
        if (v == null) {
            throw error(key, "missing; expected " + expected);
        }
        return v;
    }

    private static String describe(JsonNode v) {
        String text = v.toString();
        if (text.length() > 60) {
            text = text.substring(0, 57) + "...";
        }
        return v.getNodeType().name().toLowerCase() + " " + text;
    }

    private int asInt(String key, JsonNode v) {
        if (!v.isIntegralNumber() && !(v.isNumber() && v.asDouble() == Math.rint(v.asDouble()))) {
            throw error(key, "expected an integer, got " + describe(v));
        }
        if (!v.canConvertToInt() && !(v.isFloatingPointNumber() && Math.abs(v.asDouble()) <= Integer.MAX_VALUE)) {
            throw error(key, "expected an integer that fits 32 bits, got " + describe(v));
        }
        return v.isIntegralNumber() ? v.intValue() : (int) v.asDouble();
    }

    public int reqInt(String key) {
        return asInt(key, require(key, "an integer"));
    }

    public int optInt(String key, int dflt) {
        JsonNode v = get(key);
        return v == null ? dflt : asInt(key, v);
    }

    /** A required positive integer. */
    public int reqPositiveInt(String key) {
        int v = reqInt(key);
        if (v <= 0) {
            throw error(key, "expected a positive integer, got " + v);
        }
        return v;
    }

    /** An integer, or null when absent. */
    public Integer optInteger(String key) {
        JsonNode v = get(key);
        return v == null ? null : asInt(key, v);
    }

    private double asDouble(String key, JsonNode v) {
        if (!v.isNumber()) {
            throw error(key, "expected a number, got " + describe(v));
        }
        return v.doubleValue();
    }

    public double reqDouble(String key) {
        return asDouble(key, require(key, "a number"));
    }

    public double optDouble(String key, double dflt) {
        JsonNode v = get(key);
        return v == null ? dflt : asDouble(key, v);
    }

    public boolean optBool(String key, boolean dflt) {
        JsonNode v = get(key);
        if (v == null) {
            return dflt;
        }
        if (!v.isBoolean()) {
            throw error(key, "expected true or false, got " + describe(v));
        }
        return v.booleanValue();
    }

    public String reqString(String key) {
        JsonNode v = require(key, "a string");
        if (!v.isTextual()) {
            throw error(key, "expected a string, got " + describe(v));
        }
        return v.textValue();
    }

    public String optString(String key, String dflt) {
        return has(key) ? reqString(key) : dflt;
    }

    /** A list of integers; a single integer is accepted as a one-element list (as for {@code eos_token_id}). */
    public List<Integer> optIntListOrScalar(String key) {
        JsonNode v = get(key);
        if (v == null) {
            return List.of();
        }
        if (!v.isArray()) {
            return List.of(asInt(key, v));
        }
        return intList(key, v);
    }

    public List<Integer> optIntList(String key) {
        JsonNode v = get(key);
        if (v == null) {
            return null;
        }
        if (!v.isArray()) {
            throw error(key, "expected a list of integers, got " + describe(v));
        }
        return intList(key, v);
    }

    private List<Integer> intList(String key, JsonNode v) {
        List<Integer> out = new ArrayList<>(v.size());
        for (int i = 0; i < v.size(); i++) {
            out.add(asInt(key + "[" + i + "]", v.get(i)));
        }
        return List.copyOf(out);
    }

    /** A list of strings, or null when absent. */
    public List<String> optStringList(String key) {
        JsonNode v = get(key);
        if (v == null) {
            return null;
        }
        if (!v.isArray()) {
            throw error(key, "expected a list of strings, got " + describe(v));
        }
        List<String> out = new ArrayList<>(v.size());
        for (int i = 0; i < v.size(); i++) {
            JsonNode e = v.get(i);
            if (!e.isTextual()) {
                throw error(key + "[" + i + "]", "expected a string, got " + describe(e));
            }
            out.add(e.textValue());
        }
        return List.copyOf(out);
    }

    /** A nested object, or null when absent. */
    public JsonFields optObject(String key) {
        JsonNode v = get(key);
        if (v == null) {
            return null;
        }
        if (!v.isObject()) {
            throw error(key, "expected an object, got " + describe(v));
        }
        return new JsonFields(file, path(key), (ObjectNode) v);
    }

    /** The entries of a nested object whose values are objects, in file order; empty when absent. */
    public Map<String, JsonFields> optObjectMap(String key) {
        JsonFields obj = optObject(key);
        Map<String, JsonFields> out = new LinkedHashMap<>();
        if (obj != null) {
            for (var it = obj.node.properties().iterator(); it.hasNext(); ) {
                var e = it.next();
                out.put(e.getKey(), obj.optObject(e.getKey()));
            }
        }
        return out;
    }

    /** The entries of a nested object whose values are integers, in file order; null when absent. */
    public Map<String, Integer> optIntMap(String key) {
        JsonFields obj = optObject(key);
        if (obj == null) {
            return null;
        }
        Map<String, Integer> out = new LinkedHashMap<>();
        for (var it = obj.node.properties().iterator(); it.hasNext(); ) {
            var e = it.next();
            out.put(e.getKey(), obj.reqInt(e.getKey()));
        }
        return out;
    }
}
