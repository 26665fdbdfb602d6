package org.orbitrl.scheduler.job.checkpoint;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.OutputStream;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CheckpointStoreTest {
    @TempDir
    Path dir;

    static byte[] random(long seed, int n) {
        byte[] b = new byte[n];
        new SplittableRandom(seed).nextBytes(b);
        return b;
    }

    static CheckpointStore.Content content(long step) {
        return w -> {
            w.section("meta", ("step " + step).getBytes(StandardCharsets.UTF_8));
            OutputStream big = w.section("adapter");
            byte[] data = random(step, 3 << 20);
            for (int off = 0; off < data.length; off += 65_536) {
                big.write(data, off, Math.min(65_536, data.length - off));
            }
            w.section("empty", new byte[0]);
        };
    }

    @Test
    void sectionsReadBackAndOnlyTheNewestAreKept() throws Exception {
        CheckpointStore store = new CheckpointStore(dir, 3);
        for (long step = 10; step <= 50; step += 10) {
            store.write(step, content(step));
        }
        assertEquals(List.of(dir.resolve("ckpt-000000000050.orbit"), dir.resolve("ckpt-000000000040.orbit"),
                dir.resolve("ckpt-000000000030.orbit")), store.list());
        CheckpointStore.Found found = store.latest();
        assertTrue(found.warnings().isEmpty(), found.warnings().toString());
        Checkpoint cp = found.checkpoint();
        assertEquals(50, cp.step());
        assertEquals(List.of("meta", "adapter", "empty"), List.copyOf(cp.sections()));
        assertEquals("step 50", new String(cp.bytes("meta"), StandardCharsets.UTF_8));
        assertArrayEquals(random(50, 3 << 20), cp.bytes("adapter"));
        assertEquals(0, cp.bytes("empty").length);
    }

    @Test
    void aTruncatedNewestCheckpointFallsBackToThePreviousWithAWarning() throws Exception {
        CheckpointStore store = new CheckpointStore(dir, 5);
        store.write(1, content(1));
        store.write(2, content(2));
        Path newest = dir.resolve("ckpt-000000000002.orbit");
        try (RandomAccessFile f = new RandomAccessFile(newest.toFile(), "rw")) {
            f.setLength(f.length() - 100); // a torn write of the tail
        }
        CheckpointStore.Found found = store.latest();
        assertEquals(1, found.checkpoint().step());
        assertEquals(1, found.warnings().size());
        assertTrue(found.warnings().getFirst().contains("ckpt-000000000002.orbit is corrupt: truncated or unfinished"),
                found.warnings().toString());
        assertFalse(Files.exists(newest));
        assertTrue(Files.exists(dir.resolve("ckpt-000000000002.orbit.corrupt")), "kept aside for inspection");
    }

    @Test
    void aFlippedBitInASectionOrTheIndexIsDetected() throws Exception {
        CheckpointStore store = new CheckpointStore(dir, 5);
        store.write(1, content(1));
        store.write(2, content(2));
        store.write(3, content(3));
        // One bit inside the adapter section of step 3 (1 MiB in), one in the index of step 2.
        flip(dir.resolve("ckpt-000000000003.orbit"), 20 + 7 + (1 << 20));
        Path two = dir.resolve("ckpt-000000000002.orbit");
        flip(two, Files.size(two) - 32 - 10);
        CheckpointStore.Found found = store.latest();
        assertEquals(1, found.checkpoint().step(), found.warnings().toString());
        assertEquals(2, found.warnings().size());
        assertTrue(found.warnings().get(0).contains("section 'adapter' checksum mismatch"), found.warnings().toString());
        assertTrue(found.warnings().get(1).contains("index checksum mismatch"), found.warnings().toString());
        assertArrayEquals(random(1, 3 << 20), found.checkpoint().bytes("adapter"));
    }

    @Test
    void aFailedWriteLeavesNoFileAndThePreviousCheckpointIntact() throws Exception {
        CheckpointStore store = new CheckpointStore(dir, 5);
        store.write(1, content(1));
        IOException e = assertThrows(IOException.class, () -> store.write(2, w -> {
            w.section("adapter", random(9, 1000));
            throw new IOException("No space left on device");
        }));
        assertEquals("cannot write checkpoint " + dir.resolve("ckpt-000000000002.orbit") + ": No space left on device",
                e.getMessage());
        try (var files = Files.list(dir)) {
            assertEquals(List.of(dir.resolve("ckpt-000000000001.orbit")), files.toList());
        }
        assertEquals(1, store.latest().checkpoint().step());
    }

    @Test
    void temporaryFilesOfACrashedWriteAreRemovedAndEmptyFoldersHaveNothing() throws IOException {
        Files.write(dir.resolve(".ckpt-7-123-456.tmp"), random(1, 100));
        CheckpointStore store = new CheckpointStore(dir, 2);
        try (var files = Files.list(dir)) {
            assertEquals(0, files.count());
        }
        CheckpointStore.Found found = store.latest();
        assertNull(found.checkpoint());
        assertTrue(found.warnings().isEmpty());
        Files.write(dir.resolve("ckpt-000000000009.orbit"), random(2, 10));
        found = store.latest();
        assertNull(found.checkpoint());
        assertEquals(2, found.warnings().size(), found.warnings().toString());
        assertTrue(found.warnings().getFirst().contains("truncated: 10 bytes"), found.warnings().toString());
        assertFalse(found.warnings().getFirst().contains("previous checkpoint"), "there is none: " + found.warnings());
        assertEquals("no checkpoint in " + dir + " passes its checks (1 set aside): the job starts from step 0, with a new"
                + " adapter", found.warnings().get(1));
    }

    static void flip(Path file, long offset) throws IOException {
        try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "rw")) {
            f.seek(offset);
            int b = f.read();
            f.seek(offset);
            f.write(b ^ 0x10);
        }
    }
}
