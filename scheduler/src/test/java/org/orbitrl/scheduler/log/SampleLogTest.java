package org.orbitrl.scheduler.log;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SampleLogTest {
    @TempDir
    Path dir;

    @Test
    void entriesReadBackInOrderWithTheirIndicesAndResumeAfterAnIndex() {
        SplittableRandom rnd = new SplittableRandom(11);
        List<Object> written = new ArrayList<>();
        List<Long> indices = new ArrayList<>();
        try (SampleLog log = SampleLog.open(dir.resolve("samples")); SampleLogWriter w = log.writer()) {
            assertEquals(SampleLog.NO_INDEX, log.lastIndex());
            for (int g = 0; g < 25; g++) {
                SampleGroup group = SampleGroups.random(rnd, g, 4, g / 5);
                indices.add(w.append(group));
                written.add(group);
                if (g % 5 == 4) {
                    AdapterVersionEvent e = AdapterVersionEvent.of(g / 5 + 1, g / 5 + 1, "sha256:00", "", 10, 5);
                    indices.add(w.append(e));
                    written.add(e);
                }
            }
            assertEquals(indices.getLast(), log.lastIndex());
        }
        for (int i = 1; i < indices.size(); i++) {
            assertTrue(indices.get(i) > indices.get(i - 1), "indices increase: " + indices);
        }
        // Reopened: everything is there, in order, with the indices the writer returned.
        try (SampleLog log = SampleLog.open(dir.resolve("samples")); SampleLogReader r = log.reader()) {
            for (int i = 0; i < written.size(); i++) {
                LogEntry e = r.next();
                assertEquals((long) indices.get(i), e.index());
                Object payload = e instanceof LogEntry.Group g ? g.group() : ((LogEntry.AdapterVersion) e).event();
                assertEquals(written.get(i), payload, "entry " + i);
            }
            assertNull(r.next());
            // Resume after the 10th entry: the 11th comes next.
            r.startAfter(indices.get(9));
            assertEquals(indices.get(9), r.lastReadIndex());
            assertEquals((long) indices.get(10), r.next().index());
            r.startAfter(SampleLog.NO_INDEX);
            assertEquals((long) indices.getFirst(), r.next().index());
            SampleLogException e = assertThrows(SampleLogException.class, () -> r.startAfter(indices.getLast() + 1000));
            assertTrue(e.getMessage().contains("has no entry at index"), e.getMessage());
            LogEntry.Group last = r.lastGroup();
            assertEquals(24, last.group().groupId());
            assertEquals((long) indices.get(indices.size() - 2), last.index(), "the last group precedes the last event");
        }
    }

    @Test
    void aReaderSeesEntriesAppendedAfterItReachedTheEnd() {
        SplittableRandom rnd = new SplittableRandom(3);
        try (SampleLog log = SampleLog.open(dir); SampleLogWriter w = log.writer(); SampleLogReader r = log.reader()) {
            assertNull(r.next());
            assertNull(r.lastGroup());
            long a = w.append(SampleGroups.random(rnd, 0, 2, 0));
            assertEquals(a, r.next().index());
            assertNull(r.next());
            long b = w.append(SampleGroups.random(rnd, 1, 2, 0));
            LogEntry e = r.next();
            assertEquals(b, e.index());
            assertEquals(1, assertInstanceOf(LogEntry.Group.class, e).group().groupId());
        }
    }

    @Test
    void groupsAndRecordsRefuseInconsistentContent() {
        SplittableRandom rnd = new SplittableRandom(5);
        SampleGroup g = SampleGroups.random(rnd, 1, 3, 0);
        List<SampleRecord> ragged = List.of(g.samples().get(0), g.samples().get(2));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new SampleGroup(ragged));
        assertEquals("group 1 is ragged: position 0 holds sample 0/3 in a group of 2", e.getMessage());
        SampleRecord.Builder b = SampleRecord.builder().job("j").promptId("p").group(0, 0, 1)
                .finishReason(FinishReason.STOP).timings(new SampleTimings(0, 0, 0));
        e = assertThrows(IllegalArgumentException.class,
                () -> b.response(new int[] {1, 2}, new float[] {-1f}, new boolean[] {true, true}).version(0).build());
        assertTrue(e.getMessage().startsWith("per-token arrays disagree"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> b.response(new int[] {1, 2}, new float[] {-1f, -1f},
                new boolean[] {true, true}).versions(List.of(new VersionSpan(1, 0))).build());
        assertTrue(e.getMessage().startsWith("version spans must start at token 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> b.response(new int[] {1, 2}, new float[] {-1f, -1f},
                new boolean[] {true, true}).versions(List.of(new VersionSpan(0, 4), new VersionSpan(1, 3))).build());
        assertTrue(e.getMessage().contains("increasing versions"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> b.response(new int[] {1}, new float[] {0.5f},
                new boolean[] {true}).version(0).build());
        assertTrue(e.getMessage().startsWith("a log-prob must be <= 0"), e.getMessage());
    }
}
