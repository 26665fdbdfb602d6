package org.orbitrl.tools;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import java.lang.reflect.Array;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import javax.management.openmbean.CompositeData;
import javax.management.openmbean.TabularData;

/** Turns JMX open-type values into plain maps and lists, and those into JSON or aligned text. */
final class OrbitCtlFormat {
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private OrbitCtlFormat() {
    }

    /** An open-type value as plain Java: CompositeData → map, MXBean-mapped TabularData → map, arrays → lists. */
    static Object plain(Object v) {
        if (v instanceof CompositeData c) { // a record
            Map<String, Object> out = new LinkedHashMap<>();
            for (String k : c.getCompositeType().keySet()) {
                out.put(k, plain(c.get(k)));
            }
            return out;
        }
        if (v instanceof TabularData t) {
            Map<String, Object> out = new LinkedHashMap<>();
            List<String> index = t.getTabularType().getIndexNames();
            for (Object row : t.values()) {
                CompositeData c = (CompositeData) row;
                if (index.size() == 1 && c.getCompositeType().keySet().size() == 2 && c.containsKey("value")) {
                    out.put(String.valueOf(c.get(index.getFirst())), plain(c.get("value")));
                } else {
                    out.put(String.valueOf(c.get(index.getFirst())), plain(c));
                }
            }
            return out;
        }
        if (v != null && v.getClass().isArray()) {
            List<Object> out = new ArrayList<>();
            for (int i = 0; i < Array.getLength(v); i++) {
                out.add(plain(Array.get(v, i)));
            }
            return out;
        }
        if (v instanceof Map<?, ?> m) {
            Map<String, Object> out = new LinkedHashMap<>();
            m.forEach((k, x) -> out.put(String.valueOf(k), plain(x)));
            return out;
        }
        if (v instanceof List<?> l) {
            return l.stream().map(OrbitCtlFormat::plain).toList();
        }
        if (v instanceof Double d && !Double.isFinite(d)) {
            return null; // JSON has no NaN: unknown
        }
        return v;
    }

    static String json(Object v) {
        try {
            return JSON.writeValueAsString(plain(v));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot write JSON: " + e.getMessage(), e);
        }
    }

    /** A value for a person: numbers rounded, unknowns as '-', lists comma-separated. */
    static String text(Object v) {
        Object p = plain(v);
        if (p == null) {
            return "-";
        }
        if (p instanceof Double d) {
            return Math.abs(d) >= 1e-3 && Math.abs(d) < 1e6 || d == 0 ? String.format(Locale.ROOT, "%.4g", d)
                    : String.format(Locale.ROOT, "%.3e", d);
        }
        if (p instanceof List<?> l) {
            return String.join(", ", l.stream().map(OrbitCtlFormat::text).toList());
        }
        if (p instanceof Map<?, ?> m) {
            StringBuilder sb = new StringBuilder();
            m.forEach((k, x) -> sb.append(sb.isEmpty() ? "" : ", ").append(k).append('=').append(text(x)));
            return sb.toString();
        }
        return String.valueOf(p);
    }

    /** Rows as a table with a header, columns padded to their widest cell. */
    static String table(List<String> header, List<List<String>> rows) {
        int[] w = new int[header.size()];
        for (int i = 0; i < w.length; i++) {
            w[i] = header.get(i).length();
            for (List<String> r : rows) {
                w[i] = Math.max(w[i], r.get(i).length());
            }
        }
        StringBuilder sb = new StringBuilder();
        List<List<String>> all = new ArrayList<>();
        all.add(header);
        all.addAll(rows);
        for (List<String> r : all) {
            for (int i = 0; i < w.length; i++) {
                String cell = r.get(i);
                sb.append(i == w.length - 1 ? cell : String.format("%-" + w[i] + "s  ", cell));
            }
            sb.append('\n');
        }
        return sb.toString();
    }

    /** Bytes as a person reads them ({@code 1.5 GiB}). */
    static String bytes(long b) {
        if (b < 1024) {
            return b + " B";
        }
        String[] units = {"KiB", "MiB", "GiB", "TiB", "PiB"};
        double v = b;
        int u = -1;
        while (v >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
    }
}
