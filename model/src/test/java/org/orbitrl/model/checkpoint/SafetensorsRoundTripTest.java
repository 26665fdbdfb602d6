package org.orbitrl.model.checkpoint;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/** Writer then reader: every dtype and shape comes back bit for bit. */
class SafetensorsRoundTripTest {
    @TempDir
    Path tmp;

    private static final long[][] SHAPES = {{3, 5}, {7}, {2, 3, 4}, {}, {0, 4}, {1, 1, 33}};

    /**
     * A written file has the permissions of any file the process creates (the umask's), not a temporary file's
     * owner-only 0600: a checkpoint or scored output is read by the users the folder is shared with.
     */
    @Test
    void aWrittenFileHasTheProcesssDefaultPermissions() throws IOException {
        org.junit.jupiter.api.Assumptions.assumeTrue(tmp.getFileSystem().supportedFileAttributeViews().contains("posix"),
                "POSIX permissions");
        Path plain = Files.createFile(tmp.resolve("plain"));
        var expected = Files.getPosixFilePermissions(plain);
        org.junit.jupiter.api.Assumptions.assumeTrue(expected.size() > 2, "the umask leaves more than owner read-write: "
                + expected);
        Path file = tmp.resolve("perm.safetensors");
        new SafetensorsWriter().add("t", Fixtures.random(new Random(3), DType.F32, new long[]{4})).write(file);
        assertEquals(expected, Files.getPosixFilePermissions(file));
    }

    @Test
    void everyDtypeAndShapeBitwise() throws IOException {
        Random rnd = new Random(11);
        Map<String, Tensor> written = new LinkedHashMap<>();
        SafetensorsWriter w = new SafetensorsWriter().metadata("format", "pt").metadata("note", "round trip ✓");
        for (DType d : DType.values()) {
            for (int s = 0; s < SHAPES.length; s++) {
                String name = "t." + d.safetensorsName().toLowerCase() + "." + s;
                Tensor t = Fixtures.random(rnd, d, SHAPES[s]);
                written.put(name, t);
                w.add(name, t);
            }
        }
        Path file = tmp.resolve("all.safetensors");
        w.write(file);

        byte[] raw = Files.readAllBytes(file);
        long n = ByteBuffer.wrap(raw, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, (8 + n) % 8, "data area starts 8-byte aligned");
        try (Stream<Path> left = Files.list(tmp)) {
            assertEquals(List.of(file), left.toList(), "no temporary file left behind");
        }

        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            assertEquals(Map.of("format", "pt", "note", "round trip ✓"), f.metadata());
            assertEquals(written.keySet(), f.tensors().keySet());
            for (var e : written.entrySet()) {
                Tensor back = f.tensor(e.getKey());
                TensorInfo info = f.info(e.getKey());
                assertEquals(e.getValue().dtype(), back.dtype(), e.getKey());
                assertArrayEquals(e.getValue().shape(), back.shape(), e.getKey());
                assertArrayEquals(Fixtures.bytes(e.getValue()), Fixtures.bytes(back), e.getKey());
                assertEquals(0, info.begin() % back.dtype().bytes(), e.getKey() + " starts aligned to its element size");
            }
        }
    }

    @Test
    void stridedViewIsWrittenAsItsContiguousCopy() {
        Tensor base = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 2, 3);
        Tensor view = base.transpose(0, 1); // [3, 2] strided
        Path file = tmp.resolve("t.safetensors");
        new SafetensorsWriter().add("t", view).add("row", base.select(0, 1)).write(file);
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            assertArrayEquals(new float[] {1, 4, 2, 5, 3, 6}, f.tensor("t").toFloatArray());
            assertArrayEquals(new long[] {3, 2}, f.tensor("t").shape());
            assertArrayEquals(new float[] {4, 5, 6}, f.tensor("row").toFloatArray());
        }
    }

    @Test
    void rewritingReplacesTheFileAtomically() throws IOException {
        Path file = tmp.resolve("x.safetensors");
        new SafetensorsWriter().add("a", Tensor.of(new float[] {1, 2}, 2)).write(file);
        new SafetensorsWriter().add("b", Tensor.of(new float[] {3, 4, 5}, 3)).write(file);
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            assertEquals(List.of("b"), List.copyOf(f.tensors().keySet()));
            assertArrayEquals(new float[] {3, 4, 5}, f.tensor("b").toFloatArray());
        }
        try (Stream<Path> left = Files.list(tmp)) {
            assertEquals(1, left.count());
        }
    }

    @Test
    void handAssembledFileReadsAsTheSpecSays() throws IOException {
        // built byte by byte from the format description, not by our writer
        String header = "{\"b\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]},"
                + "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        byte[] h = header.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + 16).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).putFloat(1.5f).putFloat(-2.25f).putLong(-7L);
        Path file = tmp.resolve("hand.safetensors");
        Files.write(file, b.array());
        try (SafetensorsFile f = SafetensorsFile.open(file)) {
            assertArrayEquals(new float[] {1.5f, -2.25f}, f.tensor("a").toFloatArray());
            assertEquals(-7L, f.tensor("b").getLong(0));
            assertTrue(f.metadata().isEmpty());
        }
    }

    @Test
    void shardedRoundTrip() throws IOException {
        Random rnd = new Random(5);
        SafetensorsWriter w = new SafetensorsWriter().metadata("format", "pt");
        Map<String, Tensor> written = new LinkedHashMap<>();
        for (int i = 0; i < 10; i++) {
            DType d = DType.values()[i % DType.values().length];
            Tensor t = Fixtures.random(rnd, d, 16, 8 + i);
            written.put("layer." + i + ".w", t);
            w.add("layer." + i + ".w", t);
        }
        Tensor big = Fixtures.random(rnd, DType.F32, 64, 64); // 16 KiB: larger than the limit, a shard of its own
        written.put("big", big);
        w.add("big", big);
        List<Path> files = w.writeSharded(tmp, 2048);
        Path index = tmp.resolve(Checkpoint.INDEX_FILE);
        assertEquals(index, files.getLast());
        assertTrue(files.size() > 3, "several shards: " + files);

        var json = new com.fasterxml.jackson.databind.ObjectMapper().readTree(index.toFile());
        assertEquals(w.dataBytes(), json.get("metadata").get("total_size").asLong());
        try (Checkpoint c = Checkpoint.open(tmp)) {
            assertEquals(files.size() - 1, c.files().size());
            assertEquals(written.keySet(), new java.util.HashSet<>(c.names()));
            for (var e : written.entrySet()) {
                assertEquals(json.get("weight_map").get(e.getKey()).asText(), c.fileOf(e.getKey()).getFileName().toString());
                assertArrayEquals(Fixtures.bytes(e.getValue()), Fixtures.bytes(c.tensor(e.getKey())), e.getKey());
            }
            for (SafetensorsFile f : c.files()) {
                long bytes = f.tensors().values().stream().mapToLong(TensorInfo::byteSize).sum();
                assertTrue(bytes <= 2048 || f.tensors().size() == 1, f + " holds " + bytes + " bytes");
            }
            c.requireExactly(written.keySet());
        }
    }

    @Test
    void smallCheckpointIsOneFile() {
        List<Path> files = new SafetensorsWriter().add("w", Tensor.allocate(Arena.ofAuto(), DType.BF16, 4, 4).fill(0.5f))
                .writeSharded(tmp, 1 << 20);
        assertEquals(List.of(tmp.resolve(Checkpoint.SINGLE_FILE)), files);
        try (Checkpoint c = Checkpoint.open(tmp)) {
            assertEquals(0.5f, c.tensor("w", DType.BF16, 4, 4).getFloat(3, 3));
        }
    }
}
