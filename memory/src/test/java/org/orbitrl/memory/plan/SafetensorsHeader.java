package org.orbitrl.memory.plan;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/** Tensor names, shapes and byte sizes from a safetensors header (the data is not read). */
final class SafetensorsHeader {
    private SafetensorsHeader() {
    }

    /** Name to {numel, bytes} of every tensor in {@code file}. */
    static Map<String, long[]> read(Path file) throws IOException {
        try (InputStream in = Files.newInputStream(file)) {
            byte[] len = in.readNBytes(8);
            long n = ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getLong();
            JsonNode root = new ObjectMapper().readTree(in.readNBytes((int) n));
            Map<String, long[]> out = new LinkedHashMap<>();
            for (var it = root.properties().iterator(); it.hasNext(); ) {
                var e = it.next();
                if (e.getKey().equals("__metadata__")) {
                    continue;
                }
                long numel = 1;
                for (JsonNode d : e.getValue().get("shape")) {
                    numel *= d.asLong();
                }
                JsonNode off = e.getValue().get("data_offsets");
                out.put(e.getKey(), new long[] {numel, off.get(1).asLong() - off.get(0).asLong()});
            }
            return out;
        }
    }
}
