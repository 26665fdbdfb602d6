package org.orbitrl.model.checkpoint;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/**
 * A memory-mapped {@code .safetensors} file: an 8-byte little-endian header length N, N bytes of
 * JSON header ({@code name -> {dtype, shape, data_offsets}} plus an optional
 * {@code __metadata__} string map), then the data area. The header is validated as strictly as
 * the reference implementation does: the length fits the file, the JSON is an object without
 * duplicate keys, every dtype is one Orbit has, every tensor's byte range lies in the data area
 * and holds exactly numel x element size bytes, and the ranges tile the data area without
 * overlaps, gaps or trailing bytes. {@link #tensor} returns zero-copy views over the mapping.
 */
public final class SafetensorsFile implements AutoCloseable {
    /** The reference implementation refuses headers above 100 MB; so do we. */
    static final long MAX_HEADER_BYTES = 100L << 20;
    private static final ValueLayout.OfLong U64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ObjectMapper JSON = new ObjectMapper().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);

    private final Path path;
    private final Arena arena;
    private final MemorySegment data; // the data area: [file size - 8 - N] bytes
    private final Map<String, TensorInfo> tensors; // by name, sorted
    private final Map<String, String> metadata;

    private SafetensorsFile(Path path, Arena arena, MemorySegment data, Map<String, TensorInfo> tensors,
                            Map<String, String> metadata) {
        this.path = path;
        this.arena = arena;
        this.data = data;
        this.tensors = tensors;
        this.metadata = metadata;
    }

    /** Maps and validates {@code path}. Throws {@link CheckpointException} on any inconsistency. */
    public static SafetensorsFile open(Path path) {
        // A shared arena: the views handed out are read by the backend's worker threads, and the
        // mapping must be released when this file is closed, not whenever the GC gets to it (a
        // checkpoint can be hundreds of GB of address space). Closing invalidates every view.
        Arena arena = Arena.ofShared();
        try {
            MemorySegment file;
            try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
                file = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            } catch (IOException e) {
                throw new CheckpointException(path, null, "cannot open: " + e, e);
            }
            SafetensorsFile f = parse(path, arena, file);
            arena = null; // owned by f now
            return f;
        } finally {
            if (arena != null) {
                arena.close();
            }
        }
    }

    private static SafetensorsFile parse(Path path, Arena arena, MemorySegment file) {
        long size = file.byteSize();
        if (size < 8) {
            throw new CheckpointException(path, null, "file of " + size
                    + " bytes is too short; expected at least the 8-byte header length");
        }
        long n = file.get(U64_LE, 0);
        if (n < 2 || n > MAX_HEADER_BYTES || n > size - 8) {
            throw new CheckpointException(path, null, "header length is " + Long.toUnsignedString(n)
                    + " bytes; expected at least 2, at most " + Math.min(MAX_HEADER_BYTES, size - 8)
                    + " (the file has " + size + " bytes): truncated or not a safetensors file");
        }
        byte[] header = file.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
        JsonNode root;
        try {
            root = JSON.readTree(header);
        } catch (JsonProcessingException e) {
            var at = e.getLocation();
            String where = at == null || at.getByteOffset() < 0 ? ""
                    : " at byte " + (8 + at.getByteOffset()) + " of the file (byte " + at.getByteOffset() + " of the " + n
                    + "-byte header)";
            throw new CheckpointException(path, null, "header is not valid JSON" + where + ": " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new CheckpointException(path, null, "header cannot be read: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new CheckpointException(path, null, "header must be a JSON object, got "
                    + (root == null ? "nothing" : root.getNodeType().name().toLowerCase()));
        }
        MemorySegment data = file.asSlice(8 + n);
        Map<String, String> metadata = new LinkedHashMap<>();
        List<TensorInfo> infos = new ArrayList<>();
        for (var it = root.properties().iterator(); it.hasNext(); ) {
            var e = it.next();
            if (e.getKey().equals("__metadata__")) {
                readMetadata(path, e.getValue(), metadata);
            } else {
                infos.add(readEntry(path, e.getKey(), e.getValue(), data.byteSize()));
            }
        }
        checkTiling(path, infos, data.byteSize());
        Map<String, TensorInfo> byName = new TreeMap<>();
        for (TensorInfo t : infos) {
            byName.put(t.name(), t);
        }
        return new SafetensorsFile(path, arena, data, Collections.unmodifiableMap(byName),
                Collections.unmodifiableMap(metadata));
    }

    private static void readMetadata(Path path, JsonNode m, Map<String, String> out) {
        if (!m.isObject()) {
            throw new CheckpointException(path, null, "__metadata__ must be an object of strings, got "
                    + m.getNodeType().name().toLowerCase());
        }
        for (var it = m.properties().iterator(); it.hasNext(); ) {
            var e = it.next();
            if (!e.getValue().isTextual()) {
                throw new CheckpointException(path, null, "__metadata__." + e.getKey() + " must be a string, got "
                        + e.getValue().getNodeType().name().toLowerCase() + " " + e.getValue());
            }
            out.put(e.getKey(), e.getValue().textValue());
        }
    }

    private static TensorInfo readEntry(Path path, String name, JsonNode e, long dataBytes) {
        if (!e.isObject()) {
            throw new CheckpointException(path, name, "header entry must be an object with dtype, shape and data_offsets");
        }
        JsonNode dt = e.get("dtype");
        if (dt == null || !dt.isTextual()) {
            throw new CheckpointException(path, name, "dtype missing or not a string");
        }
        DType dtype = DType.fromSafetensors(dt.textValue());
        if (dtype == null) {
            throw new CheckpointException(path, name, "unknown dtype '" + dt.textValue() + "'; Orbit reads "
                    + Arrays.stream(DType.values()).map(DType::safetensorsName).toList());
        }
        long[] shape = longs(path, name, e.get("shape"), "shape", -1);
        long[] offsets = longs(path, name, e.get("data_offsets"), "data_offsets", 2);
        long begin = offsets[0];
        long end = offsets[1];
        if (begin > end || end > dataBytes) {
            throw new CheckpointException(path, name, "data_offsets [" + begin + ", " + end
                    + "] lie outside the data area of " + dataBytes + " bytes (truncated file or corrupt header)");
        }
        long numel = 1;
        try {
            for (long d : shape) {
                numel = Math.multiplyExact(numel, d);
            }
            long expected = Math.multiplyExact(numel, dtype.bytes());
            if (end - begin != expected) {
                throw new CheckpointException(path, name, "holds " + (end - begin) + " bytes; expected " + expected
                        + " for " + dtype.safetensorsName() + Arrays.toString(shape));
            }
        } catch (ArithmeticException ex) {
            throw new CheckpointException(path, name, "shape " + Arrays.toString(shape) + " overflows", ex);
        }
        return new TensorInfo(name, dtype, shape, begin, end);
    }

    private static long[] longs(Path path, String name, JsonNode v, String key, int length) {
        if (v == null || !v.isArray() || (length >= 0 && v.size() != length)) {
            throw new CheckpointException(path, name, key + " must be a list of "
                    + (length >= 0 ? length + " " : "") + "non-negative integers, got " + v);
        }
        long[] out = new long[v.size()];
        for (int i = 0; i < out.length; i++) {
            JsonNode x = v.get(i);
            if (!x.isIntegralNumber() || !x.canConvertToLong() || x.longValue() < 0) {
                throw new CheckpointException(path, name, key + " must be a list of non-negative integers, got " + v);
            }
            out[i] = x.longValue();
        }
        return out;
    }

    /** The byte ranges, sorted, must cover [0, dataBytes) exactly once. */
    private static void checkTiling(Path path, List<TensorInfo> infos, long dataBytes) {
        List<TensorInfo> sorted = new ArrayList<>(infos);
        sorted.sort(Comparator.comparingLong(TensorInfo::begin).thenComparingLong(TensorInfo::end));
        long at = 0;
        TensorInfo prev = null;
        for (TensorInfo t : sorted) {
            if (t.begin() < at) {
                throw new CheckpointException(path, t.name(), "bytes [" + t.begin() + ", " + t.end()
                        + ") overlap tensor '" + prev.name() + "' at [" + prev.begin() + ", " + prev.end() + ")");
            }
            if (t.begin() > at) {
                throw new CheckpointException(path, t.name(), "starts at byte " + t.begin() + " of the data area; expected "
                        + at + (prev == null ? " (the data area's start)" : " (the end of tensor '" + prev.name() + "')")
                        + ": a gap of " + (t.begin() - at) + " bytes");
            }
            if (t.end() > at || prev == null) {
                prev = t;
            }
            at = Math.max(at, t.end());
        }
        if (at != dataBytes) {
            throw new CheckpointException(path, prev == null ? null : prev.name(), "tensors end at byte " + at
                    + " of the data area but it has " + dataBytes + " bytes: " + (dataBytes - at) + " trailing bytes");
        }
    }

    // ---------------------------------------------------------------- access

    public Path path() {
        return path;
    }

    /** Header entries by name, sorted by name. */
    public Map<String, TensorInfo> tensors() {
        return tensors;
    }

    /** The {@code __metadata__} map (empty if absent). */
    public Map<String, String> metadata() {
        return metadata;
    }

    public boolean has(String name) {
        return tensors.containsKey(name);
    }

    /** The header entry of {@code name}; throws naming the file when absent. */
    public TensorInfo info(String name) {
        TensorInfo t = tensors.get(name);
        if (t == null) {
            throw new CheckpointException(path, name, "not in this file (it holds " + tensors.size() + " tensors)");
        }
        return t;
    }

    /** A read-only, zero-copy view of tensor {@code name}; valid until this file is closed. */
    public Tensor tensor(String name) {
        TensorInfo t = info(name);
        return Tensor.wrap(data.asSlice(t.begin(), t.byteSize()), t.dtype(), t.shape());
    }

    /** Unmaps the file; every tensor view obtained from it becomes invalid. */
    @Override
    public void close() {
        if (arena.scope().isAlive()) {
            arena.close();
        }
    }

    @Override
    public String toString() {
        return "SafetensorsFile[" + path + ", " + tensors.size() + " tensors]";
    }
}
