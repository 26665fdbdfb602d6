package org.orbitrl.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.LongStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.testing.SampleLogChild;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogReader;
import org.orbitrl.scheduler.log.SampleLogWriter;

/**
 * A job's sample log after the daemon was killed in the middle of appending to it (an entry half
 * written, the queue's write lock held by the dead process): the restarted daemon appends again (the
 * log waits 2 s, its timeoutMS, for the dead writer; the time it took is printed, and the test's
 * timeout guards against a wait that never ends), and every entry written whole before the kill is
 * read back, in order, once.
 */
class SampleLogAfterKillTest {
    @TempDir
    Path tmp;

    @Test
    @Timeout(180)
    void aWriterKilledInsideAnEntryLeavesTheLogWholeAndWritable() throws Exception {
        Path dir = tmp.resolve("samples");
        int whole = 5;
        Path out = tmp.resolve("child.log");
        Process p = new ProcessBuilder(SampleLogChild.command(dir, whole)).redirectErrorStream(true)
                .redirectOutput(out.toFile()).start();
        try {
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (System.nanoTime() < deadline && p.isAlive() && !Files.readString(out).contains(SampleLogChild.IN_PLACE)) {
                Thread.sleep(20);
            }
            assertTrue(Files.readString(out).contains(SampleLogChild.IN_PLACE), "the child did not get in place:\n"
                    + Files.readString(out));
        } finally {
            p.destroyForcibly(); // SIGKILL
            p.waitFor();
        }
        long t0 = System.nanoTime();
        long appendedAt;
        try (SampleLog log = SampleLog.open(dir); SampleLogWriter writer = log.writer()) {
            appendedAt = writer.append(SampleLogChild.event(whole + 1));
        }
        Duration took = Duration.ofNanos(System.nanoTime() - t0);
        System.out.println("sample log reopened and appended to in " + took.toMillis() + " ms after a writer was killed"
                + " inside an entry");
        List<Long> versions = new ArrayList<>();
        List<Long> indices = new ArrayList<>();
        try (SampleLog log = SampleLog.open(dir); SampleLogReader reader = log.reader()) {
            for (LogEntry e = reader.next(); e != null; e = reader.next()) {
                LogEntry.AdapterVersion v = (LogEntry.AdapterVersion) e;
                assertEquals(SampleLogChild.event(v.event().version()), v.event(), "entry at index " + e.index());
                versions.add(v.event().version());
                indices.add(e.index());
            }
            assertEquals(appendedAt, log.lastIndex());
        }
        assertEquals(LongStream.rangeClosed(1, whole + 1).boxed().toList(), versions,
                "versions read back, indices " + indices);
        for (int i = 1; i < indices.size(); i++) {
            assertTrue(indices.get(i) > indices.get(i - 1), "indices in order: " + indices);
        }
        assertEquals(appendedAt, indices.getLast());
    }
}
