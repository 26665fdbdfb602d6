package org.orbitrl.model.checkpoint;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Random;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Supplier;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/** Damaged files and mismatched checkpoints fail with messages naming the file and the tensor. */
class CorruptCheckpointTest {
    @TempDir
    Path tmp;

    /** A file of the given header text followed by {@code dataBytes} seeded random bytes. */
    private Path raw(String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        byte[] data = new byte[dataBytes];
        new Random(3).nextBytes(data);
        b.put(data);
        Path f = Files.createTempFile(tmp, "raw", ".safetensors");
        Files.write(f, b.array());
        return f;
    }

    private Path valid() {
        Random rnd = new Random(1);
        Path f = tmp.resolve("valid.safetensors");
        new SafetensorsWriter().add("a.weight", Fixtures.random(rnd, DType.F32, 4, 4))
                .add("b.weight", Fixtures.random(rnd, DType.F32, 2, 8)).write(f);
        return f;
    }

    private static CheckpointException fails(Path file, String tensor, Supplier<?> open, String... fragments) {
        CheckpointException e = assertThrows(CheckpointException.class, () -> {
            Object o = open.get();
            if (o instanceof AutoCloseable c) {
                c.close();
            }
        });
        String m = e.getMessage();
        assertTrue(m.contains(file.toString()), "names the file " + file + ": " + m);
        if (tensor != null) {
            assertTrue(m.contains("'" + tensor + "'"), "names tensor " + tensor + ": " + m);
            assertEquals(tensor, e.tensor());
        }
        for (String f : fragments) {
            assertTrue(m.contains(f), "contains '" + f + "': " + m);
        }
        return e;
    }

    private static CheckpointException failsOpen(Path file, String tensor, String... fragments) {
        return fails(file, tensor, () -> SafetensorsFile.open(file), fragments);
    }

    @Test
    void truncatedFile() throws IOException {
        Path f = valid();
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
            ch.truncate(ch.size() - 10);
        }
        failsOpen(f, "b.weight", "data_offsets [64, 128]", "outside the data area of 118 bytes");
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
            ch.truncate(5);
        }
        failsOpen(f, null, "5 bytes is too short");
    }

    @Test
    void headerLengthLargerThanFile() throws IOException {
        Path f = valid();
        long size = Files.size(f);
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, 1_000_000), 0);
        }
        failsOpen(f, null, "header length is 1000000 bytes", "the file has " + size + " bytes");
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.WRITE)) {
            ch.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(0, -1), 0);
        }
        failsOpen(f, null, "header length is 18446744073709551615 bytes");
    }

    @Test
    void invalidHeaderJson() throws IOException {
        failsOpen(raw("{\"a\": {\"dtype\": \"F32\", ", 0), null, "not valid JSON");
        // where: the header's 'x' is its byte 6, the file's 14 (after the 8-byte length)
        failsOpen(raw("{\"a\": x}", 0), null, "not valid JSON at byte 14 of the file (byte 6 of the 8-byte header)");
        failsOpen(raw("[1,2,3]", 0), null, "must be a JSON object", "array");
        failsOpen(raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                + "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), null, "not valid JSON", "'a'");
        failsOpen(raw("{\"__metadata__\":{\"n\":3}}", 0), null, "__metadata__.n must be a string");
    }

    @Test
    void offsetsBeyondTheFile() throws IOException {
        Path f = raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[16,48]}}", 24);
        failsOpen(f, "b", "data_offsets [16, 48]", "data area of 24 bytes");
        failsOpen(raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8), "a", "[8, 4]");
    }

    @Test
    void wrongByteCountForShape() throws IOException {
        failsOpen(raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[0,60]}}", 60), "a",
                "holds 60 bytes; expected 64 for F32[4, 4]");
        failsOpen(raw("{\"a\":{\"dtype\":\"BF16\",\"shape\":[4,-4],\"data_offsets\":[0,32]}}", 32), "a",
                "shape must be a list of non-negative integers");
        failsOpen(raw("{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0]}}", 8), "a",
                "data_offsets must be a list of 2");
    }

    @Test
    void overlappingTensors() throws IOException {
        Path f = raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[0,64]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[32,64]}}", 64);
        failsOpen(f, "b", "overlap tensor 'a' at [0, 64)");
    }

    @Test
    void gapsAndTrailingBytes() throws IOException {
        failsOpen(raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[32,48]}}", 48), "b",
                "starts at byte 32", "expected 16", "end of tensor 'a'", "gap of 16 bytes");
        failsOpen(raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 20), "a", "4 trailing bytes");
    }

    @Test
    void unknownDtype() throws IOException {
        failsOpen(raw("{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16), "w",
                "unknown dtype 'F64'", "BF16", "F8_E4M3");
        failsOpen(raw("{\"w\":{\"shape\":[2],\"data_offsets\":[0,16]}}", 16), "w", "dtype missing");
    }

    private Path sharded() {
        Random rnd = new Random(2);
        SafetensorsWriter w = new SafetensorsWriter();
        for (int i = 0; i < 6; i++) {
            w.add("layers." + i + ".weight", Fixtures.random(rnd, DType.BF16, 8, 16));
        }
        w.writeSharded(tmp, 600);
        return tmp.resolve(Checkpoint.INDEX_FILE);
    }

    private static void editIndex(Path index, java.util.function.Consumer<ObjectNode> edit) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode root = (ObjectNode) json.readTree(index.toFile());
        edit.accept((ObjectNode) root.get("weight_map"));
        json.writeValue(index.toFile(), root);
    }

    @Test
    void indexNamesATensorTheShardLacks() throws IOException {
        Path index = sharded();
        editIndex(index, wm -> wm.put("layers.9.weight", "model-00002-of-00003.safetensors"));
        fails(index, "layers.9.weight", () -> Checkpoint.open(tmp), "model-00002-of-00003.safetensors",
                "does not hold it");
    }

    @Test
    void shardTensorMissingFromIndex() throws IOException {
        Path index = sharded();
        editIndex(index, wm -> wm.remove("layers.3.weight"));
        Path shard = tmp.resolve("model-00002-of-00003.safetensors");
        fails(shard, "layers.3.weight", () -> Checkpoint.open(tmp), "is not in model.safetensors.index.json");
    }

    @Test
    void indexNamesAMissingShardFile() throws IOException {
        Path index = sharded();
        editIndex(index, wm -> wm.put("layers.0.weight", "model-00009-of-00009.safetensors"));
        fails(index, "layers.0.weight", () -> Checkpoint.open(tmp), "model-00009-of-00009.safetensors",
                "not a file");
        editIndex(index, wm -> wm.put("layers.0.weight", "../escape.safetensors"));
        fails(index, "layers.0.weight", () -> Checkpoint.open(tmp), "../escape.safetensors");
    }

    @Test
    void wrongShapeOrDtypeOnRequest() {
        Path f = valid();
        try (Checkpoint c = Checkpoint.open(f)) {
            fails(f, "a.weight", () -> c.tensor("a.weight", DType.F32, 4, 5), "expected F32[4, 5], got F32[4, 4]");
            fails(f, "a.weight", () -> c.tensor("a.weight", DType.BF16, 4, 4), "expected BF16[4, 4], got F32[4, 4]");
            fails(f, "a.weight", () -> c.tensor("a.weight", DType.F32, 16), "got F32[4, 4]");
            fails(f, "b.weight", () -> c.tensor("b.weight", 8, 2), "expected [8, 2], got F32[2, 8]");
            org.orbitrl.model.nn.WeightSource ws = c;
            assertEquals(16, ws.tensor("a.weight", 4, 4).numel());
            Tensor ok = c.tensor("b.weight", DType.F32, -1, 8);
            assertEquals(2, ok.dim(0));
            fails(tmp, "c.weight", () -> c.tensor("c.weight"), "not in this checkpoint");
        }
    }

    @Test
    void requireExactlyListsMissingAndUnexpected() {
        Random rnd = new Random(4);
        SafetensorsWriter w = new SafetensorsWriter();
        for (int i = 0; i < 30; i++) {
            w.add(String.format("extra.%02d", i), Fixtures.random(rnd, DType.I8, 3));
        }
        w.add("shared", Fixtures.random(rnd, DType.I8, 3));
        w.writeSharded(tmp, 1 << 20);
        Set<String> expected = new TreeSet<>(Set.of("shared", "want.b", "want.a"));
        try (Checkpoint c = Checkpoint.open(tmp)) {
            CheckpointException e = fails(tmp, null, () -> {
                c.requireExactly(expected);
                return null;
            }, "2 missing, 30 unexpected", "missing: want.a, want.b", "unexpected: extra.00, extra.01",
                    "extra.19, ... and 10 more");
            assertTrue(!e.getMessage().contains("extra.20"), e.getMessage());
            Set<String> all = new TreeSet<>(c.names());
            c.requireExactly(all);
        }
    }

    @Test
    void directoryWithoutWeights() {
        fails(tmp, null, () -> Checkpoint.open(tmp), "neither model.safetensors nor model.safetensors.index.json");
    }

    @Test
    void viewsDieWithTheFile() {
        Path f = valid();
        Tensor t;
        try (SafetensorsFile s = SafetensorsFile.open(f)) {
            t = s.tensor("a.weight");
            t.getFloat(0, 0);
        }
        assertThrows(IllegalStateException.class, () -> t.getFloat(0, 0));
    }
}
