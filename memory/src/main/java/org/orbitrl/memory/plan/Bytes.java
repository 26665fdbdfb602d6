package org.orbitrl.memory.plan;

import java.util.Locale;

/** Byte counts for people: binary units (GiB), three significant figures. */
public final class Bytes {
    private Bytes() {
    }

    /** {@code 1.50 GiB}, {@code 312 MiB}, {@code 12.0 KiB}, {@code 17 B}; negative values keep their sign. */
    public static String format(long bytes) {
        long a = Math.abs(bytes);
        String sign = bytes < 0 ? "-" : "";
        String[] units = {"B", "KiB", "MiB", "GiB", "TiB"};
        int u = 0;
        double v = a;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        if (u == 0) {
            return sign + a + " B";
        }
        String num = v >= 100 ? String.format(Locale.ROOT, "%.0f", v)
                : v >= 10 ? String.format(Locale.ROOT, "%.1f", v) : String.format(Locale.ROOT, "%.2f", v);
        return sign + num + " " + units[u];
    }

    /** Parameters for people: {@code 1.03T}, {@code 32.9B}, {@code 4.02B}, {@code 207M}. */
    public static String params(long n) {
        double v = n;
        String[] units = {"", "K", "M", "B", "T"};
        int u = 0;
        while (Math.abs(v) >= 1000 && u < units.length - 1) {
            v /= 1000;
            u++;
        }
        return u == 0 ? Long.toString(n) : (Math.abs(v) >= 100 ? String.format(Locale.ROOT, "%.0f", v)
                : Math.abs(v) >= 10 ? String.format(Locale.ROOT, "%.1f", v) : String.format(Locale.ROOT, "%.2f", v)) + units[u];
    }
}
