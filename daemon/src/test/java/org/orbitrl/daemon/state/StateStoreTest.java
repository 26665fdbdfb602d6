package org.orbitrl.daemon.state;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class StateStoreTest {
    @TempDir
    Path tmp;

    static JobRecord record(String name, long step) {
        return new JobRecord(JobRecord.VERSION, name, step + 1, "/etc/orbit/jobs.d/" + name + ".yaml", "ab", "RUNNING", "",
                false, step, 100, step, 0x4a00000000L + step, step * 16, step - step % 10, "ckpt", "2026-01-01T00:00:00Z",
                Map.of("reward_mean", 0.25), Map.of("1", 0.5), step, step - step % 5, Map.of("loss", 1.5), "runner: rl\n",
                "2026-01-01T00:00:01Z");
    }

    @Test
    void recordsSurviveACleanCloseAndMarkIt() throws Exception {
        try (StateStore s = StateStore.open(tmp, 64)) {
            assertTrue(s.persistent());
            for (int i = 0; i < 40; i++) {
                s.put(record("job-" + i, i));
            }
            s.put(record("job-7", 77));
            s.remove("job-3");
            assertFalse(Files.exists(tmp.resolve("clean-shutdown")), "no clean marker while open");
        }
        assertTrue(Files.exists(tmp.resolve("clean-shutdown")));
        try (StateStore s = StateStore.open(tmp, 64)) {
            assertEquals(39, s.all().size());
            assertEquals(record("job-7", 77), s.get("job-7").orElseThrow());
            assertTrue(s.get("job-3").isEmpty());
            assertEquals(0x4a00000000L + 12, s.get("job-12").orElseThrow().consumedIndex());
        }
    }

    /**
     * Chronicle Map waits a minute for the creator of a header marked incomplete; a daemon
     * restarted after a kill must not sit out that wait. The bound tells that wait apart (it is not
     * a speed: an open takes well under a second, printed by each call); the headers' readiness
     * after each open is asserted on its own.
     */
    static final Duration OPEN_BOUND = Duration.ofSeconds(45);

    /** Opens the store, failing if it takes longer than {@link #OPEN_BOUND}. */
    StateStore openWithin(Path dir) throws Exception {
        long t0 = System.nanoTime();
        StateStore s = StateStore.open(dir, 64);
        Duration took = Duration.ofNanos(System.nanoTime() - t0);
        System.out.println("state map opened in " + took.toMillis() + " ms");
        if (took.compareTo(OPEN_BOUND) > 0) {
            s.close();
            throw new AssertionError("opening the state map took " + took + ", more than " + OPEN_BOUND);
        }
        return s;
    }

    /** Runs {@link StateMapChild} in {@code mode}, waits until it is in place, and kills it (SIGKILL). */
    String killChildInPlace(String mode) throws Exception {
        Path out = tmp.resolve("child-" + mode + ".log");
        Process p = new ProcessBuilder(StateMapChild.command(mode, tmp)).redirectErrorStream(true)
                .redirectOutput(out.toFile()).start();
        try {
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (System.nanoTime() < deadline && p.isAlive()
                    && !Files.readString(out).contains(StateMapChild.IN_PLACE)) {
                Thread.sleep(20);
            }
            String log = Files.readString(out);
            assertTrue(log.contains(StateMapChild.IN_PLACE), "the " + mode + " child did not get in place:\n" + log);
            return log.lines().filter(l -> l.startsWith(StateMapChild.IN_PLACE)).findFirst().orElseThrow();
        } finally {
            p.destroyForcibly();
            p.waitFor();
        }
    }

    static int sizeWord(Path file) throws Exception {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            return StateMapHeader.readWord(ch);
        }
    }

    @Test
    void aDaemonKilledHoldingASegmentLockAndThenKilledInsideRecoveryOpensAtOnceWithItsRecords() throws Exception {
        try (StateStore s = StateStore.open(tmp, 64)) {
            for (int i = 0; i < 20; i++) {
                s.put(record("job-" + i, 100 + i));
            }
        }
        Files.delete(tmp.resolve("clean-shutdown")); // as StateStore.open does while the map is in use
        Path file = tmp.resolve(StateStore.FILE);
        // 1. A writer killed while it holds a segment's lock.
        killChildInPlace("hold-lock");
        assertEquals(StateMapHeader.Readiness.READY, StateMapHeader.readiness(file));
        // 2. The restarted daemon killed inside Chronicle's recovery of that map: its header is left incomplete.
        String where = killChildInPlace("recover");
        assertTrue(where.contains("lock of segment"), "the recovery stopped at the held lock: " + where);
        assertEquals(StateMapHeader.Readiness.INCOMPLETE, StateMapHeader.readiness(file),
                "size word 0x" + Integer.toHexString(sizeWord(file)) + " after a kill inside recovery");
        // 3. The next start opens it at once, with every record, and the lock the dead writer held is free.
        try (StateStore s = openWithin(tmp)) {
            assertEquals(20, s.all().size());
            for (int i = 0; i < 20; i++) {
                assertEquals(record("job-" + i, 100 + i), s.get("job-" + i).orElseThrow(), "job-" + i);
            }
            CompletableFuture<Void> put = CompletableFuture.runAsync(() -> s.put(record("job-1", 777)));
            put.get(10, TimeUnit.SECONDS);
            assertEquals(777, s.get("job-1").orElseThrow().step());
        }
        assertEquals(StateMapHeader.Readiness.READY, StateMapHeader.readiness(file));
        try (StateStore s = openWithin(tmp)) {
            assertEquals(record("job-1", 777), s.get("job-1").orElseThrow());
            assertEquals(20, s.all().size());
        }
    }

    @Test
    void aCreationCutShortLeavesNoMapBehindAndTheNextOpenCreatesOne() throws Exception {
        // What a kill during the first start leaves: the temporary map, or (older layouts) an empty map file.
        Files.writeString(tmp.resolve(StateStore.FILE + ".new"), "partial");
        Files.createFile(tmp.resolve(StateStore.FILE));
        try (StateStore s = openWithin(tmp)) {
            assertTrue(s.all().isEmpty());
            s.put(record("job-a", 3));
        }
        assertFalse(Files.exists(tmp.resolve(StateStore.FILE + ".new")));
        try (StateStore s = openWithin(tmp)) {
            assertEquals(record("job-a", 3), s.get("job-a").orElseThrow());
        }
    }

    @Test
    void aHeaderLeftIncompleteAndDamagedIsRewrittenFromTheMapsConfigurationKeepingTheRecords() throws Exception {
        try (StateStore s = StateStore.open(tmp, 64)) {
            s.put(record("job-1", 1));
            s.put(record("job-2", 2));
        }
        Files.delete(tmp.resolve("clean-shutdown"));
        Path file = tmp.resolve(StateStore.FILE);
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            int word = StateMapHeader.readWord(ch);
            StateMapHeader.writeWord(ch, word | 0x8000_0000); // NOT_COMPLETE, as Chronicle writes it first
            ch.write(java.nio.ByteBuffer.wrap(new byte[] {'#'}), 12 + (word & 0x3fff_ffff) / 2); // a header byte changed
        }
        assertEquals(StateMapHeader.Readiness.INCOMPLETE, StateMapHeader.readiness(file));
        try (StateStore s = openWithin(tmp)) {
            assertEquals(record("job-1", 1), s.get("job-1").orElseThrow());
            assertEquals(record("job-2", 2), s.get("job-2").orElseThrow());
        }
        assertEquals(StateMapHeader.Readiness.READY, StateMapHeader.readiness(file));
    }
}
