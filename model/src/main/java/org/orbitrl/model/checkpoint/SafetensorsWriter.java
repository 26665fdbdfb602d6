package org.orbitrl.model.checkpoint;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.orbitrl.kernels.Tensor;

/**
 * Writes named tensors (any dtype; strided views are written as their contiguous copy) and a
 * {@code __metadata__} string map as safetensors. Tensors are laid out as the reference writer
 * does, by element size descending then name, after a header padded with spaces so that the data
 * area starts 8-byte aligned: every tensor then starts aligned to its element size.
 *
 * <p>Each file is written atomically: to a temporary file in the target directory, forced to
 * disk, renamed over the target, and the directory forced, so a crash leaves either the old file
 * or the complete new one. {@link #writeSharded} splits into shards with an index once the total
 * exceeds a size limit, as {@code save_pretrained} does.
 */
public final class SafetensorsWriter {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long CHUNK = 1L << 30; // bytes per channel write

    private final Map<String, Tensor> tensors = new TreeMap<>();
    private final Map<String, String> metadata = new LinkedHashMap<>();

    /** Adds tensor {@code name}; a name may be added once. */
    public SafetensorsWriter add(String name, Tensor t) {
        if (name == null || name.isEmpty() || name.equals("__metadata__")) {
            throw new IllegalArgumentException("invalid tensor name '" + name + "'");
        }
        if (tensors.putIfAbsent(name, t) != null) {
            throw new IllegalArgumentException("tensor '" + name + "' added twice");
        }
        return this;
    }

    /** Adds every entry of {@code named}. */
    public SafetensorsWriter addAll(Map<String, Tensor> named) {
        named.forEach(this::add);
        return this;
    }

    /** Sets a {@code __metadata__} entry. */
    public SafetensorsWriter metadata(String key, String value) {
        metadata.put(key, value);
        return this;
    }

    /** Bytes of tensor data (headers excluded). */
    public long dataBytes() {
        return tensors.values().stream().mapToLong(Tensor::byteSize).sum();
    }

    /** Writes all tensors to {@code file}, atomically. */
    public void write(Path file) {
        writeFile(file, new ArrayList<>(tensors.keySet()));
    }

    /**
     * Writes to {@code dir}: a single {@code model.safetensors} if the data fits
     * {@code maxShardBytes}, else shards {@code model-00001-of-0000N.safetensors} of at most that
     * many bytes each (a larger tensor gets a shard of its own) and
     * {@code model.safetensors.index.json}. Returns the files written.
     */
    public List<Path> writeSharded(Path dir, long maxShardBytes) {
        if (maxShardBytes <= 0) {
            throw new IllegalArgumentException("shard size limit must be positive, got " + maxShardBytes);
        }
        if (dataBytes() <= maxShardBytes) {
            Path f = dir.resolve(Checkpoint.SINGLE_FILE);
            write(f);
            return List.of(f);
        }
        List<List<String>> shards = new ArrayList<>();
        List<String> current = new ArrayList<>();
        long size = 0;
        for (var e : tensors.entrySet()) {
            long b = e.getValue().byteSize();
            if (!current.isEmpty() && size + b > maxShardBytes) {
                shards.add(current);
                current = new ArrayList<>();
                size = 0;
            }
            current.add(e.getKey());
            size += b;
        }
        shards.add(current);
        List<Path> written = new ArrayList<>();
        ObjectNode index = JSON.createObjectNode();
        index.putObject("metadata").put("total_size", dataBytes());
        ObjectNode weightMap = index.putObject("weight_map");
        for (int i = 0; i < shards.size(); i++) {
            String shardName = String.format("model-%05d-of-%05d.safetensors", i + 1, shards.size());
            Path f = dir.resolve(shardName);
            writeFile(f, shards.get(i));
            written.add(f);
            for (String n : shards.get(i)) {
                weightMap.put(n, shardName);
            }
        }
        Path indexFile = dir.resolve(Checkpoint.INDEX_FILE);
        try {
            byte[] json = JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(index);
            atomically(indexFile, ch -> writeFully(ch, ByteBuffer.wrap(json)));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + indexFile + ": " + e.getMessage(), e);
        }
        written.add(indexFile);
        return written;
    }

    private void writeFile(Path file, List<String> names) {
        List<String> order = new ArrayList<>(names);
        order.sort(Comparator.comparingInt((String n) -> -tensors.get(n).dtype().bytes()).thenComparing(n -> n));
        ObjectNode header = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode m = header.putObject("__metadata__");
            metadata.forEach(m::put);
        }
        long offset = 0;
        for (String n : order) {
            Tensor t = tensors.get(n);
            ObjectNode e = header.putObject(n);
            e.put("dtype", t.dtype().safetensorsName());
            ArrayNode shape = e.putArray("shape");
            Arrays.stream(t.shape()).forEach(shape::add);
            e.putArray("data_offsets").add(offset).add(offset + t.byteSize());
            offset += t.byteSize();
        }
        byte[] json;
        try {
            json = JSON.writeValueAsBytes(header);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot encode the header of " + file, e);
        }
        int padded = (json.length + 7) / 8 * 8; // 8 + padded is a multiple of 8
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) {
            head.put((byte) ' ');
        }
        head.flip();
        try {
            atomically(file, ch -> {
                writeFully(ch, head);
                for (String n : order) {
                    Tensor t = tensors.get(n).contiguous();
                    MemorySegment seg = t.segment().asSlice(t.byteOffset(), t.byteSize());
                    for (long at = 0; at < seg.byteSize(); at += CHUNK) {
                        writeFully(ch, seg.asSlice(at, Math.min(CHUNK, seg.byteSize() - at)).asByteBuffer());
                    }
                }
            });
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }

    private interface Body {
        void write(FileChannel ch) throws IOException;
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /** Temp file in the same directory, fsync, rename over the target, fsync the directory. */
    private static void atomically(Path file, Body body) throws IOException {
        Path dir = file.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        // created as any file this process creates (the umask applies; a temp file would stay owner-only, 0600)
        Path tmp = Files.createFile(dir.resolve("." + file.getFileName() + "."
                + Long.toUnsignedString(java.util.concurrent.ThreadLocalRandom.current().nextLong(), 36) + ".tmp"));
        boolean done = false;
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                body.write(ch);
                ch.force(true);
            }
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            done = true;
        } finally {
            if (!done) {
                Files.deleteIfExists(tmp);
            }
        }
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true); // makes the rename itself durable
        }
    }
}
