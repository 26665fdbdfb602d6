package org.orbitrl.scheduler.log;

import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * The byte layout of sample-log entries. Little-endian throughout; a string is an {@code i32}
 * byte length and UTF-8 bytes; an array is an {@code i32} count and its elements.
 *
 * <pre>
 * entry     := u8 kind, u16 schema, body
 * kind 1    := group:   i32 count, sample[count]
 * kind 2    := adapter: i64 version, i64 step, str checksum, str file, i64 bytes, i64 publishedEpochNanos
 *
 * sample (schema 1) :=
 *   str job, str promptId, i64 groupId, i32 sampleIndex, i32 groupSize,
 *   i32 P, i32 promptTokens[P],
 *   i32 R, i32 responseTokens[R], f32 rolloutLogprobs[R], u8 lossMask[(R+7)/8] (bit i of byte i/8, LSB first),
 *   i32 S, { i32 start, i64 version }[S],
 *   f64 reward, i32 B, { str name, f64 value }[B] (sorted by name),
 *   u8 finishReason, f32 temperature,
 *   i64 startedEpochNanos, i64 finishedEpochNanos, i64 rewardNanos
 * </pre>
 *
 * A reader of this code reads every schema up to {@link SampleRecord#CURRENT_SCHEMA}; the
 * writer writes the current one. Released layouts never change: a new field is a new schema
 * version, and the golden file of each released version stays in the tests.
 */
public final class SampleCodec {
    /** Entry kind: a rollout group. */
    public static final int KIND_GROUP = 1;
    /** Entry kind: an adapter version event. */
    public static final int KIND_ADAPTER_VERSION = 2;
    /** Upper bound on any count in an entry; a larger one means the bytes are not an entry. */
    private static final int MAX_COUNT = 1 << 26;

    private SampleCodec() {
    }

    /** The bytes of a group entry. */
    public static byte[] encode(SampleGroup group) {
        int size = 1 + 2 + 4;
        for (SampleRecord s : group.samples()) {
            size += sizeOf(s);
        }
        Out out = new Out(size);
        out.u8(KIND_GROUP).u16(SampleRecord.CURRENT_SCHEMA).i32(group.size());
        for (SampleRecord s : group.samples()) {
            writeSample(out, s);
        }
        return out.bytes();
    }

    /** The bytes of an adapter-version entry. */
    public static byte[] encode(AdapterVersionEvent e) {
        Out out = new Out(96 + e.checksum().length() + e.file().length());
        out.u8(KIND_ADAPTER_VERSION).u16(SampleRecord.CURRENT_SCHEMA)
                .i64(e.version()).i64(e.step()).str(e.checksum()).str(e.file()).i64(e.bytes()).i64(e.publishedEpochNanos());
        return out.bytes();
    }

    /**
     * Decodes one entry.
     *
     * @param index the entry's queue index, carried into the result and into error messages
     * @throws SampleLogException if the bytes are not an entry of a schema this code knows
     */
    public static LogEntry decode(long index, byte[] bytes) {
        ByteBuffer in = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        try {
            int kind = Byte.toUnsignedInt(in.get());
            int schema = Short.toUnsignedInt(in.getShort());
            if (schema < 1 || schema > SampleRecord.CURRENT_SCHEMA) {
                throw new SampleLogException("sample log entry " + hex(index) + " has schema version " + schema
                        + "; this code reads versions 1.." + SampleRecord.CURRENT_SCHEMA
                        + (schema > SampleRecord.CURRENT_SCHEMA ? " (the log was written by a newer Orbit)" : ""));
            }
            LogEntry entry = switch (kind) {
                case KIND_GROUP -> {
                    int n = count(in, "samples");
                    List<SampleRecord> samples = new ArrayList<>(n);
                    for (int i = 0; i < n; i++) {
                        samples.add(readSample(in, schema));
                    }
                    yield new LogEntry.Group(index, new SampleGroup(samples));
                }
                case KIND_ADAPTER_VERSION -> new LogEntry.AdapterVersion(index, new AdapterVersionEvent(schema,
                        in.getLong(), in.getLong(), str(in), str(in), in.getLong(), in.getLong()));
                default -> throw new SampleLogException("sample log entry " + hex(index) + " has unknown kind " + kind);
            };
            if (in.hasRemaining()) {
                throw new SampleLogException("sample log entry " + hex(index) + " has " + in.remaining()
                        + " bytes after its end");
            }
            return entry;
        } catch (BufferUnderflowException e) {
            throw new SampleLogException("sample log entry " + hex(index) + " is truncated (" + bytes.length + " bytes)", e);
        } catch (IllegalArgumentException e) {
            throw new SampleLogException("sample log entry " + hex(index) + " is not valid: " + e.getMessage(), e);
        }
    }

    /** A queue index as Chronicle prints it. */
    public static String hex(long index) {
        return "0x" + Long.toHexString(index);
    }

    /** Exact encoded size of one sample (schema 1). */
    private static int sizeOf(SampleRecord s) {
        int r = s.responseLength();
        int size = 4 + utf8Length(s.job()) + 4 + utf8Length(s.promptId()) + 8 + 4 + 4;
        size += 4 + 4 * s.promptArray().length;
        size += 4 + 4 * r + 4 * r + (r + 7) / 8;
        size += 4 + s.versions().size() * (4 + 8);
        size += 8 + 4;
        for (String name : s.rewardBreakdown().keySet()) {
            size += 4 + utf8Length(name) + 8;
        }
        return size + 1 + 4 + 8 + 8 + 8;
    }

    private static int utf8Length(String s) {
        int n = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < 0x80) {
                n += 1;
            } else if (c < 0x800) {
                n += 2;
            } else if (Character.isHighSurrogate(c)) {
                n += 4;
                i++;
            } else {
                n += 3;
            }
        }
        return n;
    }

    private static void writeSample(Out out, SampleRecord s) {
        out.str(s.job()).str(s.promptId()).i64(s.groupId()).i32(s.sampleIndex()).i32(s.groupSize());
        int[] prompt = s.promptArray();
        out.i32(prompt.length).ints(prompt);
        int r = s.responseLength();
        out.i32(r).ints(s.responseArray()).floats(s.logprobArray());
        for (int b = 0; b < (r + 7) / 8; b++) {
            int bits = 0;
            for (int j = 0; j < 8 && b * 8 + j < r; j++) {
                if (s.inLoss(b * 8 + j)) {
                    bits |= 1 << j;
                }
            }
            out.u8(bits);
        }
        out.i32(s.versions().size());
        for (VersionSpan v : s.versions()) {
            out.i32(v.start()).i64(v.version());
        }
        out.f64(s.reward()).i32(s.rewardBreakdown().size());
        s.rewardBreakdown().forEach((name, value) -> out.str(name).f64(value));
        out.u8(s.finishReason().code()).f32(s.temperature());
        out.i64(s.timings().startedEpochNanos()).i64(s.timings().finishedEpochNanos()).i64(s.timings().rewardNanos());
    }

    private static SampleRecord readSample(ByteBuffer in, int schema) {
        String job = str(in);
        String promptId = str(in);
        long groupId = in.getLong();
        int index = in.getInt();
        int size = in.getInt();
        int[] prompt = new int[count(in, "prompt tokens")];
        ints(in, prompt);
        int r = count(in, "response tokens");
        int[] response = new int[r];
        ints(in, response);
        float[] logprobs = new float[r];
        if (in.remaining() < 4L * r) {
            throw new BufferUnderflowException();
        }
        in.asFloatBuffer().get(logprobs);
        in.position(in.position() + 4 * r);
        boolean[] mask = new boolean[r];
        for (int b = 0; b < (r + 7) / 8; b++) {
            int bits = Byte.toUnsignedInt(in.get());
            for (int j = 0; j < 8 && b * 8 + j < r; j++) {
                mask[b * 8 + j] = (bits & (1 << j)) != 0;
            }
        }
        VersionSpan[] spans = new VersionSpan[count(in, "version spans")];
        for (int i = 0; i < spans.length; i++) {
            spans[i] = new VersionSpan(in.getInt(), in.getLong());
        }
        double reward = in.getDouble();
        int nb = count(in, "reward components");
        SortedMap<String, Double> breakdown = new TreeMap<>();
        for (int i = 0; i < nb; i++) {
            breakdown.put(str(in), in.getDouble());
        }
        FinishReason finish = FinishReason.ofCode(Byte.toUnsignedInt(in.get()));
        float temperature = in.getFloat();
        SampleTimings timings = new SampleTimings(in.getLong(), in.getLong(), in.getLong());
        return new SampleRecord(schema, job, promptId, groupId, index, size, prompt, response, logprobs, mask,
                Arrays.asList(spans), reward, breakdown, finish, temperature, timings);
    }

    /** Bulk little-endian ints. */
    private static void ints(ByteBuffer in, int[] into) {
        if (in.remaining() < 4L * into.length) {
            throw new BufferUnderflowException();
        }
        in.asIntBuffer().get(into);
        in.position(in.position() + 4 * into.length);
    }

    private static int count(ByteBuffer in, String what) {
        int n = in.getInt();
        if (n < 0 || n > MAX_COUNT || n > in.remaining()) {
            throw new IllegalArgumentException("count of " + what + " is " + n + " with " + in.remaining()
                    + " bytes left");
        }
        return n;
    }

    private static String str(ByteBuffer in) {
        int n = count(in, "string bytes");
        byte[] b = new byte[n];
        in.get(b);
        return new String(b, StandardCharsets.UTF_8);
    }

    /** A growable little-endian byte sink. */
    private static final class Out {
        private ByteBuffer buf;

        Out(int capacity) {
            buf = ByteBuffer.allocate(capacity).order(ByteOrder.LITTLE_ENDIAN);
        }

        private void room(int n) {
            if (buf.remaining() < n) {
                ByteBuffer bigger = ByteBuffer.allocate(Math.max(buf.capacity() * 2, buf.position() + n))
                        .order(ByteOrder.LITTLE_ENDIAN);
                buf.flip();
                bigger.put(buf);
                buf = bigger;
            }
        }

        Out u8(int v) { room(1); buf.put((byte) v); return this; }
        Out u16(int v) { room(2); buf.putShort((short) v); return this; }
        Out i32(int v) { room(4); buf.putInt(v); return this; }
        Out i64(long v) { room(8); buf.putLong(v); return this; }
        Out f32(float v) { room(4); buf.putFloat(v); return this; }
        Out f64(double v) { room(8); buf.putDouble(v); return this; }

        Out ints(int[] v) {
            room(4 * v.length);
            buf.asIntBuffer().put(v);
            buf.position(buf.position() + 4 * v.length);
            return this;
        }

        Out floats(float[] v) {
            room(4 * v.length);
            buf.asFloatBuffer().put(v);
            buf.position(buf.position() + 4 * v.length);
            return this;
        }

        Out str(String s) {
            byte[] b = s.getBytes(StandardCharsets.UTF_8);
            i32(b.length);
            room(b.length);
            buf.put(b);
            return this;
        }

        byte[] bytes() {
            return buf.position() == buf.capacity() ? buf.array() : Arrays.copyOf(buf.array(), buf.position());
        }
    }
}
