package org.orbitrl.memory.plan;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;

/**
 * What a model's authors say its parameter counts are, rounded as they round them, for printing
 * beside the exact counts. Keyed by the folder name of the model's config ({@code kimi-k2.6});
 * the sources are listed in {@code ../shared/models/SOURCES.md}.
 *
 * @param total     stated total, e.g. {@code 1T}
 * @param activated stated activated count, e.g. {@code 32B}, or {@code -}
 * @param source    where it is stated
 */
public record StatedParams(String total, String activated, String source) {

    private static final Map<String, StatedParams> TABLE = load();

    /** The statement for the model whose config is at {@code configPath} (a file or its folder), if known. */
    public static Optional<StatedParams> forConfig(Path configPath) {
        if (configPath == null) {
            return Optional.empty();
        }
        Path p = configPath.toAbsolutePath().normalize();
        Path dir = p.getFileName() != null && p.getFileName().toString().endsWith(".json") ? p.getParent() : p;
        return dir == null || dir.getFileName() == null ? Optional.empty()
                : Optional.ofNullable(TABLE.get(dir.getFileName().toString()));
    }

    /** Every statement, by folder name. */
    public static Map<String, StatedParams> all() {
        return TABLE;
    }

    private static Map<String, StatedParams> load() {
        Map<String, StatedParams> m = new LinkedHashMap<>();
        try (InputStream in = StatedParams.class.getResourceAsStream("stated-params.tsv")) {
            if (in == null) {
                throw new IllegalStateException("resource stated-params.tsv is missing from the memory module");
            }
            BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
            String line;
            while ((line = r.readLine()) != null) {
                if (line.isBlank() || line.startsWith("#")) {
                    continue;
                }
                String[] f = line.split("\t");
                if (f.length != 4) {
                    throw new IllegalStateException("stated-params.tsv: expected 4 tab-separated fields in: " + line);
                }
                m.put(f[0], new StatedParams(f[1], f[2], f[3]));
            }
        } catch (IOException e) {
            throw new UncheckedIOException("reading stated-params.tsv", e);
        }
        return java.util.Collections.unmodifiableMap(m);
    }
}
