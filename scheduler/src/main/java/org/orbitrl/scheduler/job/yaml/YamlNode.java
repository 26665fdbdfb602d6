package org.orbitrl.scheduler.job.yaml;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A node of a parsed YAML document with the position it was read from (1-based line and
 * column), so that every problem can point at the text the user wrote.
 */
public sealed interface YamlNode {

    /** 1-based line of the node's first character. */
    int line();

    /** 1-based column of the node's first character. */
    int column();

    /** What the node is, for messages: "a map", "a list", "a number", ... */
    String describe();

    /** A scalar: its text as written (without quotes), and whether it was the YAML null. */
    record Scalar(String text, boolean isNull, int line, int column) implements YamlNode {
        @Override
        public String describe() {
            if (isNull) {
                return "no value";
            }
            String shown = text.length() > 40 ? text.substring(0, 40) + "..." : text;
            return "'" + shown + "'";
        }
    }

    /** A sequence of nodes. */
    record Sequence(List<YamlNode> items, int line, int column) implements YamlNode {
        public Sequence {
            items = List.copyOf(items);
        }

        @Override
        public String describe() {
            return "a list";
        }
    }

    /** A mapping, in file order. Keys are plain strings; each key keeps its own position. */
    record Mapping(Map<String, Entry> entries, int line, int column) implements YamlNode {
        public Mapping {
            entries = Collections.unmodifiableMap(new LinkedHashMap<>(entries));
        }

        @Override
        public String describe() {
            return "a map";
        }

        /** An empty mapping standing for an absent section, positioned at its parent. */
        public static Mapping empty(int line, int column) {
            return new Mapping(Map.of(), line, column);
        }
    }

    /** One key of a mapping: where the key was written, and its value. */
    record Entry(String key, int line, int column, YamlNode value) {
    }
}
