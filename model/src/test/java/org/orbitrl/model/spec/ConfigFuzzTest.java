package org.orbitrl.model.spec;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Damaged {@code config.json} files: seeded edits of every released config in {@code ../shared/models} (a value
 * replaced by another type, a number out of range, a key removed, in the top level or a nested object) either load or
 * are refused with a {@link ConfigException} that names the file. No other exception escapes.
 */
class ConfigFuzzTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String[] VALUES = {
        "0", "-1", "1", "3", "7", "2147483648", "-2147483649", "1e308", "0.5", "-0.0", "\"x\"", "\"\"", "null", "true",
        "[]", "[1, 2]", "{}", "\"silu\"", "\"bf16\"", "9999999",
    };

    @TempDir
    Path tmp;

    @Test
    void everyEditEitherLoadsOrNamesTheFile() throws IOException {
        List<Path> configs;
        try (Stream<Path> s = Files.list(ConfigPaths.models())) {
            configs = s.filter(Files::isDirectory).map(d -> d.resolve("config.json")).sorted().toList();
        }
        Random rnd = new Random(20261204);
        int loaded = 0;
        int refused = 0;
        for (Path config : configs) {
            ObjectNode original = (ObjectNode) JSON.readTree(config.toFile());
            for (int trial = 0; trial < 250; trial++) {
                ObjectNode edited = original.deepCopy();
                for (int e = 1 + rnd.nextInt(2); e > 0; e--) {
                    edit(edited, rnd);
                }
                Path dir = Files.createDirectories(tmp.resolve(config.getParent().getFileName() + "-" + trial));
                Path f = dir.resolve("config.json");
                JSON.writeValue(f.toFile(), edited);
                try {
                    ConfigLoader.load(dir);
                    loaded++;
                } catch (ConfigException e) {
                    assertTrue(e.getMessage().contains(f.toString()), "names the file: " + e.getMessage());
                    refused++;
                } catch (RuntimeException e) {
                    fail(config + ", edit " + trial + " threw " + e + " instead of a ConfigException:\n" + edited, e);
                }
            }
        }
        assertTrue(loaded >= 100 && refused >= 500, "loaded " + loaded + ", refused " + refused);
    }

    /** Replaces or removes one value of {@code node} or of an object inside it. */
    private static void edit(ObjectNode node, Random rnd) throws IOException {
        ObjectNode target = node;
        List<String> nested = new ArrayList<>();
        node.fields().forEachRemaining(e -> {
            if (e.getValue().isObject()) {
                nested.add(e.getKey());
            }
        });
        if (!nested.isEmpty() && rnd.nextInt(4) == 0) {
            target = (ObjectNode) node.get(nested.get(rnd.nextInt(nested.size())));
        }
        List<String> keys = new ArrayList<>();
        target.fieldNames().forEachRemaining(keys::add);
        if (keys.isEmpty()) {
            return;
        }
        String key = keys.get(rnd.nextInt(keys.size()));
        if (rnd.nextInt(5) == 0) {
            target.remove(key);
        } else {
            JsonNode v = JSON.readTree(VALUES[rnd.nextInt(VALUES.length)]);
            target.set(key, v);
        }
    }
}
