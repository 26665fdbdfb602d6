package org.orbitrl.scheduler.job.yaml;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Collects every violation of a record's rules and throws them together; used in compact
 * constructors:
 *
 * <pre>{@code
 * Checks c = new Checks();
 * c.range("temperature", temperature, 0, 100);
 * c.atLeast("top_k", topK, 0);
 * c.done();
 * }</pre>
 *
 * Keys are the names the file uses (snake_case), relative to the record.
 */
public final class Checks {
    private final List<SpecException.Violation> violations = new ArrayList<>();

    /** Adds a violation when {@code ok} is false. */
    public Checks require(boolean ok, String key, String message) {
        if (!ok) {
            violations.add(new SpecException.Violation(key, message));
        }
        return this;
    }

    public Checks range(String key, double value, double min, double max) {
        return require(Double.isFinite(value) && value >= min && value <= max, key,
                "must be between " + fmt(min) + " and " + fmt(max) + ", got " + fmt(value));
    }

    public Checks range(String key, long value, long min, long max) {
        return require(value >= min && value <= max, key, "must be between " + min + " and " + max + ", got " + value);
    }

    public Checks atLeast(String key, long value, long min) {
        return require(value >= min, key, "must be at least " + min + ", got " + value);
    }

    public Checks positive(String key, double value) {
        return require(Double.isFinite(value) && value > 0, key, "must be greater than 0, got " + fmt(value));
    }

    public Checks notBlank(String key, String value) {
        return require(value != null && !value.isBlank(), key, "must not be empty");
    }

    /**
     * Whether none of these keys has a violation yet. A rule across keys runs only on values that passed their own
     * rules, so that one bad value is one problem: {@code if (c.valid("a", "b")) c.require(a <= b, ...)}.
     */
    public boolean valid(String... keys) {
        for (String key : keys) {
            if (violations.stream().anyMatch(v -> v.key().equals(key))) {
                return false;
            }
        }
        return true;
    }

    /** Throws a {@link SpecException} with every violation found, if any. */
    public void done() {
        if (!violations.isEmpty()) {
            throw new SpecException(violations);
        }
    }

    /** A number as a person would write it: no trailing {@code .0}, no exponent for everyday sizes. */
    public static String fmt(double v) {
        if (v == Math.rint(v) && Math.abs(v) < 1e15) {
            return Long.toString((long) v);
        }
        String s = Double.toString(v);
        return s.toLowerCase(Locale.ROOT);
    }
}
