package org.orbitrl.scheduler.log;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HexFormat;
import org.junit.jupiter.api.Test;

/** The sample-log schema against its golden files: what released code wrote must stay readable. */
class SampleSchemaGoldenTest {

    static byte[] golden(String name) throws IOException {
        try (InputStream in = SampleSchemaGoldenTest.class.getResourceAsStream(name)) {
            if (in == null) {
                throw new IllegalStateException("golden file " + name + " is missing from test resources");
            }
            return in.readAllBytes();
        }
    }

    @Test
    void currentReaderReadsSchema1Golden() throws IOException {
        LogEntry group = SampleCodec.decode(42, golden("group-v1.bin"));
        assertEquals(new LogEntry.Group(42, GoldenSamples.groupV1()), group);
        SampleRecord b = ((LogEntry.Group) group).group().samples().get(1);
        assertEquals(1, b.schemaVersion());
        assertEquals(3, b.versionOf(4));
        assertEquals(4, b.versionOf(5));
        assertTrue(b.mixesVersions());
        assertEquals(new LogEntry.AdapterVersion(43, GoldenSamples.adapterVersionV1()),
                SampleCodec.decode(43, golden("adapter-version-v1.bin")));
    }

    @Test
    void currentWriterReproducesSchema1Golden() throws IOException {
        // Only while schema 1 is the current one: a new schema adds its own golden files.
        assertEquals(1, SampleRecord.CURRENT_SCHEMA);
        byte[] expected = golden("group-v1.bin");
        byte[] actual = SampleCodec.encode(GoldenSamples.groupV1());
        assertArrayEquals(expected, actual, () -> firstDifference(expected, actual));
        assertArrayEquals(golden("adapter-version-v1.bin"), SampleCodec.encode(GoldenSamples.adapterVersionV1()));
    }

    @Test
    void goldenBytesFollowTheDocumentedLayout() throws IOException {
        // Decoded by hand from the layout in SampleCodec's Javadoc, not by the codec.
        ByteBuffer in = ByteBuffer.wrap(golden("group-v1.bin")).order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(1, in.get());              // kind: group
        assertEquals(1, in.getShort());         // schema 1
        assertEquals(2, in.getInt());           // samples
        int jobLen = in.getInt();
        byte[] job = new byte[jobLen];
        in.get(job);
        assertEquals("quickstart-α", new String(job, java.nio.charset.StandardCharsets.UTF_8));
        in.position(in.position() + 4 + "addition/train/00042".length());
        assertEquals(7L, in.getLong());          // group id
        assertEquals(0, in.getInt());            // sample index
        assertEquals(2, in.getInt());            // group size
        assertEquals(7, in.getInt());            // prompt tokens
        assertEquals(151644, in.getInt());
        in.position(in.position() + 6 * 4);
        assertEquals(2, in.getInt());            // response tokens
        assertEquals(20, in.getInt());
        assertEquals(151645, in.getInt());
        assertEquals(-0.125f, in.getFloat());
        assertEquals(-2.5e-3f, in.getFloat());
        assertEquals(0b11, in.get());            // loss mask bits
        assertEquals(1, in.getInt());            // one version span
        assertEquals(0, in.getInt());
        assertEquals(3L, in.getLong());
        assertEquals(1.1, in.getDouble());       // reward
    }

    @Test
    void readerRefusesWhatItCannotRead() throws IOException {
        byte[] newer = golden("adapter-version-v1.bin");
        newer[1] = 9; // schema 9
        SampleLogException e = assertThrows(SampleLogException.class, () -> SampleCodec.decode(0x10, newer));
        assertEquals("sample log entry 0x10 has schema version 9; this code reads versions 1..1 (the log was written"
                + " by a newer Orbit)", e.getMessage());
        byte[] g = golden("group-v1.bin");
        byte[] truncated = java.util.Arrays.copyOf(g, g.length - 3);
        e = assertThrows(SampleLogException.class, () -> SampleCodec.decode(0x11, truncated));
        assertTrue(e.getMessage().startsWith("sample log entry 0x11 is truncated"), e.getMessage());
        byte[] kind = g.clone();
        kind[0] = 7;
        e = assertThrows(SampleLogException.class, () -> SampleCodec.decode(0x12, kind));
        assertEquals("sample log entry 0x12 has unknown kind 7", e.getMessage());
    }

    static String firstDifference(byte[] a, byte[] b) {
        int n = Math.min(a.length, b.length);
        for (int i = 0; i < n; i++) {
            if (a[i] != b[i]) {
                int from = Math.max(0, i - 8);
                return "first difference at byte " + i + ": golden " + HexFormat.of().formatHex(a, from, Math.min(a.length, i + 8))
                        + " vs written " + HexFormat.of().formatHex(b, from, Math.min(b.length, i + 8));
            }
        }
        return "lengths differ: golden " + a.length + " bytes, written " + b.length;
    }
}
