package org.orbitrl.model.tokenizer.internal;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import org.orbitrl.model.tokenizer.TokenizerFormatException;

/**
 * One JSON value of a tokenizer file together with its dotted path from the file's root, so that
 * every error names the file and the exact key ({@code pre_tokenizer.pretokenizers[0].pattern}).
 * JSON {@code null} counts as absent, as {@code tokenizers} writes {@code "normalizer": null} for
 * "none".
 */
public record JsonNodeReader(String file, String path, JsonNode node) {

    public TokenizerFormatException error(String message) {
        return new TokenizerFormatException(file, path.isEmpty() ? null : path, message);
    }

    public TokenizerFormatException error(String key, String message) {
        return new TokenizerFormatException(file, childPath(key), message);
    }

    private String childPath(String key) {
        return path.isEmpty() ? key : path + "." + key;
    }

    public boolean has(String key) {
        JsonNode v = node.get(key);
        return v != null && !v.isNull();
    }

    /** The child under {@code key}, or null when absent or JSON null. */
    public JsonNodeReader child(String key) {
        JsonNode v = node.get(key);
        return v == null || v.isNull() ? null : new JsonNodeReader(file, childPath(key), v);
    }

    public JsonNodeReader object(String key) {
        JsonNodeReader c = child(key);
        if (c == null) {
            throw error(key, "missing (expected an object)");
        }
        if (!c.node.isObject()) {
            throw c.error("expected an object, found " + describe(c.node));
        }
        return c;
    }

    public List<JsonNodeReader> array(String key) {
        JsonNodeReader c = child(key);
        if (c == null) {
            throw error(key, "missing (expected an array)");
        }
        return c.elements();
    }

    /** The elements of this array. */
    public List<JsonNodeReader> elements() {
        if (!node.isArray()) {
            throw error("expected an array, found " + describe(node));
        }
        List<JsonNodeReader> out = new ArrayList<>(node.size());
        for (int i = 0; i < node.size(); i++) {
            JsonNode e = node.get(i);
            out.add(new JsonNodeReader(file, path + "[" + i + "]", e));
        }
        return out;
    }

    /** The fields of this object, in file order. */
    public List<Map.Entry<String, JsonNodeReader>> fields() {
        if (!node.isObject()) {
            throw error("expected an object, found " + describe(node));
        }
        List<Map.Entry<String, JsonNodeReader>> out = new ArrayList<>(node.size());
        Iterator<Map.Entry<String, JsonNode>> it = node.fields();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> e = it.next();
            out.add(Map.entry(e.getKey(), new JsonNodeReader(file, childPath(e.getKey()), e.getValue())));
        }
        return out;
    }

    public String string(String key) {
        JsonNodeReader c = child(key);
        if (c == null) {
            throw error(key, "missing (expected a string)");
        }
        return c.asString();
    }

    public String string(String key, String fallback) {
        JsonNodeReader c = child(key);
        return c == null ? fallback : c.asString();
    }

    public String asString() {
        if (!node.isTextual()) {
            throw error("expected a string, found " + describe(node));
        }
        return node.asText();
    }

    public boolean bool(String key, boolean fallback) {
        JsonNodeReader c = child(key);
        if (c == null) {
            return fallback;
        }
        if (!c.node.isBoolean()) {
            throw c.error("expected true or false, found " + describe(c.node));
        }
        return c.node.asBoolean();
    }

    public int integer(String key) {
        JsonNodeReader c = child(key);
        if (c == null) {
            throw error(key, "missing (expected a non-negative integer)");
        }
        return c.asInt();
    }

    public int asInt() {
        if (!node.isIntegralNumber() || !node.canConvertToInt() || node.asInt() < 0) {
            throw error("expected a non-negative integer, found " + describe(node));
        }
        return node.asInt();
    }

    public Double number(String key) {
        JsonNodeReader c = child(key);
        if (c == null) {
            return null;
        }
        if (!c.node.isNumber()) {
            throw c.error("expected a number, found " + describe(c.node));
        }
        return c.node.asDouble();
    }

    /** The {@code type} field that names a component's kind. */
    public String type() {
        return string("type");
    }

    static String describe(JsonNode v) {
        if (v.isTextual()) {
            String s = v.asText();
            return "the string \"" + (s.length() > 40 ? s.substring(0, 40) + "..." : s) + "\"";
        }
        if (v.isObject()) {
            return "an object";
        }
        if (v.isArray()) {
            return "an array of " + v.size();
        }
        return v.getNodeType().toString().toLowerCase() + " " + v;
    }
}
