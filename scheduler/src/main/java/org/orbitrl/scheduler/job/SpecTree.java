package org.orbitrl.scheduler.job;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.RecordComponent;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.orbitrl.scheduler.job.yaml.ByteSize;
import org.orbitrl.scheduler.job.yaml.Section;
import org.orbitrl.scheduler.job.yaml.Units;

/**
 * Walks a configuration record the way its file is written: component {@code promptsPerStep}
 * is key {@code prompts_per_step}, nested records are sections, enums are lower case, durations
 * and sizes carry units. One walk serves the canonical YAML writer and the field-by-field diff,
 * so both always agree with each other; tests hold the reader to the same key set.
 */
final class SpecTree {
    /** A leaf value as the file writes it, and whether its field is {@link Tunable}. */
    record Leaf(Object value, boolean tunable) {
    }

    private SpecTree() {
    }

    /** The nested key/value tree of a record, in component order, without keys that do not apply. */
    static Map<String, Object> tree(Record r, String... skip) {
        Map<String, Object> out = new LinkedHashMap<>();
        for (RecordComponent c : r.getClass().getRecordComponents()) {
            String key = snake(c.getName());
            if (List.of(skip).contains(c.getName()) || unused(r, key)) {
                continue;
            }
            Object v = get(r, c);
            out.put(key, isSection(v) ? tree((Record) v) : leafValue(v));
        }
        return out;
    }

    /**
     * Every leaf of a record by dotted key path, in component order.
     *
     * @param all include keys that do not apply to a section's choice (for key-coverage checks)
     */
    static Map<String, Leaf> leaves(Record r, boolean all, String... skip) {
        Map<String, Leaf> out = new LinkedHashMap<>();
        collect(r, "", out, all, List.of(skip));
        return out;
    }

    private static void collect(Record r, String prefix, Map<String, Leaf> out, boolean all, List<String> skip) {
        for (RecordComponent c : r.getClass().getRecordComponents()) {
            String name = snake(c.getName());
            if ((prefix.isEmpty() && skip.contains(c.getName())) || (!all && unused(r, name))) {
                continue;
            }
            String key = prefix + name;
            Object v = get(r, c);
            if (isSection(v)) {
                collect((Record) v, key + ".", out, all, skip);
            } else {
                out.put(key, new Leaf(leafValue(v), c.isAnnotationPresent(Tunable.class)));
            }
        }
    }

    /** Sections are the job package's own records; other records (a size) are values. */
    private static boolean isSection(Object v) {
        return v instanceof Record && v.getClass().getPackage() == SpecTree.class.getPackage();
    }

    private static boolean unused(Record r, String key) {
        return r instanceof Scoped s && s.unusedKeys().containsKey(key);
    }

    private static Object leafValue(Object v) {
        return switch (v) {
            case null -> "";
            case Enum<?> e -> Section.yamlName(e);
            case Duration d -> Units.formatDuration(d);
            case ByteSize b -> b.toString();
            case Path p -> p.toString();
            case List<?> l -> new ArrayList<>(l.stream().map(SpecTree::leafValue).toList());
            default -> v;
        };
    }

    private static Object get(Record r, RecordComponent c) {
        try {
            return c.getAccessor().invoke(r);
        } catch (IllegalAccessException | InvocationTargetException e) {
            throw new IllegalStateException("cannot read " + r.getClass().getSimpleName() + "." + c.getName(), e);
        }
    }

    /** {@code promptsPerStep} → {@code prompts_per_step}; digits stay attached ({@code beta1}). */
    static String snake(String camel) {
        StringBuilder sb = new StringBuilder(camel.length() + 4);
        for (int i = 0; i < camel.length(); i++) {
            char ch = camel.charAt(i);
            if (Character.isUpperCase(ch)) {
                sb.append('_').append(Character.toLowerCase(ch));
            } else {
                sb.append(ch);
            }
        }
        return sb.toString();
    }
}
