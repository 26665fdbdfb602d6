package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A minimal safetensors reader for tests: u64 LE header length, JSON header, raw little-endian
 * data. Reads the whole file into memory; handles only the flat header safetensors writes
 * ({@code "name": {"dtype": ..., "shape": [...], "data_offsets": [a, b]}}).
 */
final class TestSafetensors {
    private TestSafetensors() {
    }

    private static final Pattern ENTRY = Pattern.compile(
            "\"([^\"]+)\"\\s*:\\s*\\{\\s*\"dtype\"\\s*:\\s*\"([A-Z0-9_]+)\"\\s*,\\s*\"shape\"\\s*:\\s*\\[([0-9,\\s]*)]\\s*,"
                    + "\\s*\"data_offsets\"\\s*:\\s*\\[\\s*(\\d+)\\s*,\\s*(\\d+)\\s*]\\s*}");

    static Map<String, Tensor> read(Path file) throws IOException {
        byte[] bytes = Files.readAllBytes(file);
        long headerLen = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        String header = new String(bytes, 8, Math.toIntExact(headerLen), StandardCharsets.UTF_8);
        MemorySegment data = Arena.ofAuto().allocate(bytes.length - 8 - headerLen, 64);
        MemorySegment.copy(MemorySegment.ofArray(bytes), 8 + headerLen, data, 0, data.byteSize());
        Map<String, Tensor> out = new LinkedHashMap<>();
        Matcher m = ENTRY.matcher(header);
        while (m.find()) {
            DType dt = DType.fromSafetensors(m.group(2));
            if (dt == null) {
                throw new IOException(file + ": tensor " + m.group(1) + " has dtype " + m.group(2) + " this reader does not know");
            }
            List<Long> dims = new ArrayList<>();
            for (String d : m.group(3).split(",")) {
                if (!d.isBlank()) {
                    dims.add(Long.parseLong(d.trim()));
                }
            }
            long[] shape = dims.stream().mapToLong(Long::longValue).toArray();
            long start = Long.parseLong(m.group(4));
            long end = Long.parseLong(m.group(5));
            out.put(m.group(1), Tensor.wrap(data.asSlice(start, end - start), dt, shape));
        }
        if (out.isEmpty()) {
            throw new IOException(file + ": no tensors in header " + header);
        }
        return out;
    }

    /** The tensor called {@code name}; throws naming the file's tensors if absent. */
    static Tensor get(Map<String, Tensor> tensors, String name) {
        Tensor t = tensors.get(name);
        if (t == null) {
            throw new IllegalArgumentException("no tensor " + name + "; have " + tensors.keySet());
        }
        return t;
    }
}
