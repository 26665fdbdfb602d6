package org.orbitrl.scheduler.job.yaml;

import java.math.BigInteger;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.function.Function;
import java.util.function.Supplier;
import java.util.regex.Pattern;

/**
 * Reads one map of a configuration file strictly. Each getter names a key and its default;
 * a wrong type, a missing unit or an unknown enum value is recorded as a problem at the
 * value's line and column, and the default is returned so that reading goes on and every
 * problem of the file is found in one pass. {@link #build} constructs the section's record,
 * turns the record's rule violations into problems at the keys they name, and reports every
 * key that no getter asked for as unknown (all of them, each with its position and the
 * nearest known key).
 *
 * <p>Enum values are written in lower case with underscores: {@code DR_GRPO} is {@code dr_grpo}.
 */
public final class Section {
    private static final Pattern INTEGER = Pattern.compile("[-+]?[0-9][0-9_]*");
    private static final Pattern DECIMAL = Pattern.compile("[-+]?(?:[0-9][0-9_]*(?:\\.[0-9_]*)?|\\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?");

    private final String source;
    private final String path;
    private final YamlNode.Mapping map;
    private final List<ConfigProblem> problems;
    private final Set<String> known = new HashSet<>();

    private Section(String source, String path, YamlNode.Mapping map, List<ConfigProblem> problems) {
        this.source = source;
        this.path = path;
        this.map = map;
        this.problems = problems;
    }

    /**
     * The top of a document. A {@code null} root (empty document) reads as an empty map; a root
     * that is not a map is a problem.
     */
    public static Section root(String source, YamlNode root, List<ConfigProblem> problems) {
        if (root == null) {
            return new Section(source, "", YamlNode.Mapping.empty(1, 1), problems);
        }
        if (root instanceof YamlNode.Mapping m) {
            return new Section(source, "", m, problems);
        }
        problems.add(new ConfigProblem(source, root.line(), root.column(), "",
                "expected a map of settings (key: value lines), got " + root.describe()));
        return new Section(source, "", YamlNode.Mapping.empty(root.line(), root.column()), problems);
    }

    /** The source name problems carry (the file path). */
    public String source() {
        return source;
    }

    /** The dotted path of this section, empty at the top. */
    public String path() {
        return path;
    }

    /** The full dotted path of a key of this section. */
    public String keyPath(String key) {
        return path.isEmpty() ? key : path + "." + key;
    }

    /** Whether the file sets the key (marks it known). */
    public boolean has(String key) {
        known.add(key);
        return map.entries().containsKey(key);
    }

    /** A nested section; an absent key reads as an empty map (all defaults). */
    public Section section(String key) {
        YamlNode.Entry e = entry(key);
        if (e == null) {
            return new Section(source, keyPath(key), YamlNode.Mapping.empty(map.line(), map.column()), problems);
        }
        if (e.value() instanceof YamlNode.Mapping m) {
            return new Section(source, keyPath(key), m, problems);
        }
        problem(e, "expected a map of settings, got " + e.value().describe());
        return new Section(source, keyPath(key), YamlNode.Mapping.empty(e.line(), e.column()), new ArrayList<>());
    }

    public String string(String key, String def) {
        return scalar(key, def, "a text", Function.identity());
    }

    /**
     * A path, relative ones resolved against {@code baseDir}; {@code null} when the key is absent or blank. Text that
     * no path can hold (a NUL character) is a problem at the key.
     */
    public java.nio.file.Path path(String key, java.nio.file.Path baseDir) {
        String text = string(key, "");
        if (text.isBlank()) {
            return null;
        }
        try {
            return baseDir.resolve(text).normalize();
        } catch (java.nio.file.InvalidPathException e) {
            problemAt(key, "expected a path, got text that cannot be one (" + e.getReason()
                    + (e.getIndex() >= 0 ? " at character " + (e.getIndex() + 1) : "") + ")");
            return null;
        }
    }

    public int integer(String key, int def) {
        return scalar(key, def, "an integer", t -> {
            BigInteger v = parseInteger(t);
            if (v.bitLength() > 31) {
                throw new IllegalArgumentException("expected an integer between " + Integer.MIN_VALUE + " and "
                        + Integer.MAX_VALUE + ", got " + t);
            }
            return v.intValue();
        });
    }

    public long longValue(String key, long def) {
        return scalar(key, def, "an integer", t -> {
            BigInteger v = parseInteger(t);
            if (v.bitLength() > 63) {
                throw new IllegalArgumentException("expected an integer between " + Long.MIN_VALUE + " and "
                        + Long.MAX_VALUE + ", got " + t);
            }
            return v.longValue();
        });
    }

    public double number(String key, double def) {
        return scalar(key, def, "a number", Section::parseNumber);
    }

    public boolean bool(String key, boolean def) {
        return scalar(key, def, "true or false", t -> switch (t) {
            case "true" -> Boolean.TRUE;
            case "false" -> Boolean.FALSE;
            default -> throw new IllegalArgumentException("expected true or false, got '" + t + "'");
        });
    }

    public Duration duration(String key, Duration def) {
        return scalar(key, def, "a duration", Units::parseDuration);
    }

    public ByteSize bytes(String key, ByteSize def) {
        return scalar(key, def, "a size", ByteSize::parse);
    }

    /** One of an enum's values, written in lower case ({@code warmup_cosine}). */
    public <E extends Enum<E>> E choice(String key, E def) {
        Class<E> type = def.getDeclaringClass();
        return scalar(key, def, "one of " + choices(type), t -> {
            for (E e : type.getEnumConstants()) {
                if (yamlName(e).equals(t)) {
                    return e;
                }
            }
            throw new IllegalArgumentException("expected one of " + choices(type) + ", got '" + t + "'");
        });
    }

    public List<String> strings(String key, List<String> def) {
        return list(key, def, "a text", Function.identity());
    }

    public List<Integer> integers(String key, List<Integer> def) {
        return list(key, def, "an integer", t -> {
            BigInteger v = parseInteger(t);
            if (v.bitLength() > 31) {
                throw new IllegalArgumentException("expected an integer that fits 32 bits, got " + t);
            }
            return v.intValue();
        });
    }

    /**
     * Builds this section's record. Unknown keys are reported first; a {@link SpecException}
     * from the constructor becomes one problem per violation, at the line of the key it names.
     * Returns {@code null} when the record could not be built (the problems say why).
     */
    public <T> T build(Supplier<T> constructor) {
        rejectUnknownKeys();
        try {
            return constructor.get();
        } catch (SpecException e) {
            for (SpecException.Violation v : e.violations()) {
                String key = keyPath(v.key());
                // A value already refused as read stands in for nothing: the record's rule on it would repeat it.
                if (problems.stream().noneMatch(p -> p.key().equals(key))) {
                    problemAt(v.key(), v.message());
                }
            }
            return null;
        }
    }

    /** Reports every key that no getter asked for, each with the nearest known key. */
    public void rejectUnknownKeys() {
        for (YamlNode.Entry e : map.entries().values()) {
            if (!known.contains(e.key())) {
                String near = nearest(e.key(), known);
                problems.add(new ConfigProblem(source, e.line(), e.column(), keyPath(e.key()),
                        "unknown key" + (near == null ? "" : " (did you mean '" + near + "'?)")
                                + "; known keys here: " + String.join(", ", known.stream().sorted().toList())));
            }
        }
    }

    /** Whether a problem was already recorded at this section's {@code relativeKey} (its value refused as read, say). */
    public boolean refused(String relativeKey) {
        String key = keyPath(relativeKey);
        return problems.stream().anyMatch(p -> p.key().equals(key));
    }

    /** Records a problem about a key of this section, at the key's line (or the section's, if absent). */
    public void problemAt(String relativeKey, String message) {
        int[] pos = position(relativeKey);
        problems.add(new ConfigProblem(source, pos[0], pos[1], keyPath(relativeKey), message));
    }

    /** The file name of an enum constant: lower case, underscores kept. */
    public static String yamlName(Enum<?> e) {
        return e.name().toLowerCase(Locale.ROOT);
    }

    private static String choices(Class<? extends Enum<?>> type) {
        return String.join(", ", Arrays.stream(type.getEnumConstants()).map(Section::yamlName).toList());
    }

    private YamlNode.Entry entry(String key) {
        known.add(key);
        return map.entries().get(key);
    }

    private <T> T scalar(String key, T def, String expected, Function<String, T> parse) {
        YamlNode.Entry e = entry(key);
        if (e == null) {
            return def;
        }
        if (!(e.value() instanceof YamlNode.Scalar s)) {
            problem(e, "expected " + expected + ", got " + e.value().describe());
            return def;
        }
        if (s.isNull()) {
            problem(e, "has no value; give " + expected + ", or remove the key to use the default ("
                    + describeDefault(def) + ")");
            return def;
        }
        try {
            return parse.apply(s.text().strip());
        } catch (IllegalArgumentException | ArithmeticException ex) {
            problems.add(new ConfigProblem(source, s.line(), s.column(), keyPath(key), ex.getMessage()));
            return def;
        }
    }

    private <T> List<T> list(String key, List<T> def, String expected, Function<String, T> parse) {
        YamlNode.Entry e = entry(key);
        if (e == null) {
            return def;
        }
        if (!(e.value() instanceof YamlNode.Sequence seq)) {
            problem(e, "expected a list of " + expected.replaceFirst("^an? ", "") + "s ([a, b]), got "
                    + e.value().describe());
            return def;
        }
        List<T> out = new ArrayList<>(seq.items().size());
        boolean ok = true;
        for (int i = 0; i < seq.items().size(); i++) {
            YamlNode item = seq.items().get(i);
            String where = keyPath(key) + "[" + i + "]";
            if (!(item instanceof YamlNode.Scalar s) || s.isNull()) {
                problems.add(new ConfigProblem(source, item.line(), item.column(), where,
                        "expected " + expected + ", got " + item.describe()));
                ok = false;
                continue;
            }
            try {
                out.add(parse.apply(s.text().strip()));
            } catch (IllegalArgumentException | ArithmeticException ex) {
                problems.add(new ConfigProblem(source, s.line(), s.column(), where, ex.getMessage()));
                ok = false;
            }
        }
        return ok ? List.copyOf(out) : def;
    }

    private void problem(YamlNode.Entry e, String message) {
        problems.add(new ConfigProblem(source, e.line(), e.column(), keyPath(e.key()), message));
    }

    /** Line and column of a (possibly dotted, possibly indexed: {@code a.b[2]}) key relative to this section. */
    private int[] position(String relativeKey) {
        YamlNode node = map;
        int[] best = {map.line(), map.column()};
        for (String part : relativeKey.split("\\.")) {
            int bracket = part.indexOf('[');
            String name = bracket < 0 ? part : part.substring(0, bracket);
            if (!(node instanceof YamlNode.Mapping m) || !m.entries().containsKey(name)) {
                return best;
            }
            YamlNode.Entry e = m.entries().get(name);
            best = new int[] {e.line(), e.column()};
            node = e.value();
            if (bracket >= 0 && node instanceof YamlNode.Sequence seq) {
                int i = Integer.parseInt(part.substring(bracket + 1, part.indexOf(']')));
                if (i >= seq.items().size()) {
                    return best;
                }
                node = seq.items().get(i);
                best = new int[] {node.line(), node.column()};
            }
        }
        // The whole path resolved: point at the value the rule is about, when it is a plain value.
        return node instanceof YamlNode.Scalar v ? new int[] {v.line(), v.column()} : best;
    }

    private static String describeDefault(Object def) {
        if (def instanceof Enum<?> e) {
            return yamlName(e);
        }
        if (def instanceof Duration d) {
            return Units.formatDuration(d);
        }
        if (def instanceof String s && s.isEmpty()) {
            return "empty";
        }
        return String.valueOf(def);
    }

    private static BigInteger parseInteger(String t) {
        if (!INTEGER.matcher(t).matches()) {
            throw new IllegalArgumentException("expected an integer, got '" + t + "'");
        }
        return new BigInteger(t.replace("_", "").replace("+", ""));
    }

    private static double parseNumber(String t) {
        if (!DECIMAL.matcher(t).matches()) {
            throw new IllegalArgumentException("expected a number, got '" + t + "'");
        }
        double v = Double.parseDouble(t.replace("_", ""));
        if (!Double.isFinite(v)) {
            throw new IllegalArgumentException("expected a finite number, got '" + t + "'");
        }
        return v;
    }

    /** The known key closest to an unknown one by edit distance, if it is close enough to be a typo. */
    static String nearest(String key, Set<String> known) {
        String best = null;
        int bestDistance = Integer.MAX_VALUE;
        for (String k : known) {
            int d = editDistance(key, k);
            if (d < bestDistance) {
                bestDistance = d;
                best = k;
            }
        }
        return best != null && bestDistance <= Math.max(2, key.length() / 3) ? best : null;
    }

    private static int editDistance(String a, String b) {
        if (a.length() > 64 || b.length() > 64) {
            return Integer.MAX_VALUE;
        }
        int[] prev = new int[b.length() + 1];
        int[] cur = new int[b.length() + 1];
        for (int j = 0; j <= b.length(); j++) {
            prev[j] = j;
        }
        for (int i = 1; i <= a.length(); i++) {
            cur[0] = i;
            for (int j = 1; j <= b.length(); j++) {
                int sub = prev[j - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1);
                cur[j] = Math.min(sub, Math.min(prev[j] + 1, cur[j - 1] + 1));
            }
            int[] t = prev;
            prev = cur;
            cur = t;
        }
        return prev[b.length()];
    }
}
