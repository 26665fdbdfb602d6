package org.orbitrl.scheduler.job.yaml;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.time.Duration;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Units in configuration values: durations ({@code 250ms}, {@code 30s}, {@code 5m}, {@code 2h},
 * {@code 1d}) and byte sizes ({@code 512MiB}, {@code 2GiB}, {@code 10GB}, {@code 64B}). A value
 * without a unit is refused (except {@code 0}) because a bare number is ambiguous.
 */
public final class Units {
    private static final Pattern VALUE = Pattern.compile("\\s*([0-9]+(?:\\.[0-9]+)?)\\s*([A-Za-z]*)\\s*");

    private Units() {
    }

    /** The duration a text names, or an {@link IllegalArgumentException} saying what was expected. */
    public static Duration parseDuration(String text) {
        Matcher m = VALUE.matcher(text);
        if (!m.matches()) {
            throw new IllegalArgumentException("expected a duration such as 250ms, 30s, 5m, 2h or 1d, got '" + text + "'");
        }
        BigDecimal n = new BigDecimal(m.group(1));
        String unit = m.group(2);
        long nanosPerUnit = switch (unit) {
            case "ns" -> 1L;
            case "us" -> 1_000L;
            case "ms" -> 1_000_000L;
            case "s" -> 1_000_000_000L;
            case "m" -> 60_000_000_000L;
            case "h" -> 3_600_000_000_000L;
            case "d" -> 86_400_000_000_000L;
            case "" -> {
                if (n.signum() == 0) {
                    yield 1L;
                }
                throw new IllegalArgumentException("duration '" + text + "' needs a unit: ms, s, m, h or d (for example "
                        + m.group(1) + "s)");
            }
            default -> throw new IllegalArgumentException("unknown duration unit '" + unit + "' in '" + text
                    + "'; expected ns, us, ms, s, m, h or d");
        };
        BigDecimal nanos = n.multiply(BigDecimal.valueOf(nanosPerUnit));
        if (nanos.compareTo(BigDecimal.valueOf(Long.MAX_VALUE)) > 0) {
            throw new IllegalArgumentException("duration '" + text + "' is too long");
        }
        return Duration.ofNanos(nanos.setScale(0, RoundingMode.HALF_UP).longValueExact());
    }

    /** A byte count a text names, or an {@link IllegalArgumentException} saying what was expected. */
    public static long parseBytes(String text) {
        Matcher m = VALUE.matcher(text);
        if (!m.matches()) {
            throw new IllegalArgumentException("expected a size such as 64KiB, 512MiB, 2GiB or 10GB, got '" + text + "'");
        }
        BigDecimal n = new BigDecimal(m.group(1));
        String unit = m.group(2);
        long perUnit = switch (unit) {
            case "B" -> 1L;
            case "KiB" -> 1L << 10;
            case "MiB" -> 1L << 20;
            case "GiB" -> 1L << 30;
            case "TiB" -> 1L << 40;
            case "KB", "kB" -> 1_000L;
            case "MB" -> 1_000_000L;
            case "GB" -> 1_000_000_000L;
            case "TB" -> 1_000_000_000_000L;
            case "" -> {
                if (n.signum() == 0) {
                    yield 1L;
                }
                throw new IllegalArgumentException("size '" + text + "' needs a unit: B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
                        + " (for example " + m.group(1) + "MiB)");
            }
            default -> throw new IllegalArgumentException("unknown size unit '" + unit + "' in '" + text
                    + "'; expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB (case matters: MiB, not mib)");
        };
        BigDecimal bytes = n.multiply(BigDecimal.valueOf(perUnit));
        if (bytes.compareTo(BigDecimal.valueOf(Long.MAX_VALUE)) > 0) {
            throw new IllegalArgumentException("size '" + text + "' is too large");
        }
        if (bytes.stripTrailingZeros().scale() > 0) {
            throw new IllegalArgumentException("size '" + text + "' is not a whole number of bytes");
        }
        return bytes.longValueExact();
    }

    /** The shortest exact text for a duration in the units {@link #parseDuration} reads. */
    public static String formatDuration(Duration d) {
        long nanos = d.toNanos();
        if (nanos == 0) {
            return "0s";
        }
        String[] units = {"d", "h", "m", "s", "ms", "us", "ns"};
        long[] sizes = {86_400_000_000_000L, 3_600_000_000_000L, 60_000_000_000L, 1_000_000_000L, 1_000_000L, 1_000L, 1L};
        for (int i = 0; i < units.length; i++) {
            if (nanos % sizes[i] == 0) {
                return (nanos / sizes[i]) + units[i];
            }
        }
        throw new AssertionError("unreachable");
    }

    /** The shortest exact text for a byte count in binary units ({@code 512MiB}, {@code 1536B}). */
    public static String formatBytes(long bytes) {
        if (bytes == 0) {
            return "0B";
        }
        String[] units = {"TiB", "GiB", "MiB", "KiB"};
        int[] shifts = {40, 30, 20, 10};
        for (int i = 0; i < units.length; i++) {
            long size = 1L << shifts[i];
            if (bytes % size == 0) {
                return (bytes / size) + units[i];
            }
        }
        return bytes + "B";
    }

    /** A human reading of a byte count with one decimal ({@code 1.5 GiB}); for logs, not for files. */
    public static String humanBytes(long bytes) {
        if (bytes < 1024) {
            return bytes + " B";
        }
        String[] units = {"KiB", "MiB", "GiB", "TiB", "PiB"};
        double v = bytes;
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }
}
