package org.orbitrl.scheduler.job.checkpoint;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.zip.CRC32C;

/**
 * A checkpoint file whose footer and index have been checked, and (when opened through
 * {@link #open(Path, boolean)} with {@code verifyAll}) every section's checksum too. Sections
 * are read on demand; a reader verifies the section's checksum when it reaches the end.
 */
public final class Checkpoint {
    /** Where a section lies in the file and its checksum. */
    record Section(String name, long offset, long length, int crc) {
    }

    private final Path file;
    private final long step;
    private final long size;
    private final Map<String, Section> sections;

    private Checkpoint(Path file, long step, long size, Map<String, Section> sections) {
        this.file = file;
        this.step = step;
        this.size = size;
        this.sections = sections;
    }

    /**
     * Opens and checks a checkpoint file.
     *
     * @param verifyAll also read every section and check its CRC-32C (a full integrity check)
     * @throws CheckpointCorruptException if any check fails
     */
    public static Checkpoint open(Path file, boolean verifyAll) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < CheckpointFormat.HEADER_BYTES + CheckpointFormat.FOOTER_BYTES + 4) {
                throw new CheckpointCorruptException(file, "truncated: " + size + " bytes");
            }
            ByteBuffer header = read(ch, 0, CheckpointFormat.HEADER_BYTES);
            byte[] magic = new byte[8];
            header.get(magic);
            if (!Arrays.equals(magic, CheckpointFormat.HEADER_MAGIC)) {
                throw new CheckpointCorruptException(file, "not a checkpoint (no ORBITCK1 header)");
            }
            int format = header.getInt();
            if (format != CheckpointFormat.FORMAT) {
                throw new CheckpointCorruptException(file, "format " + format + "; this code reads format "
                        + CheckpointFormat.FORMAT);
            }
            long step = header.getLong();
            ByteBuffer footer = read(ch, size - CheckpointFormat.FOOTER_BYTES, CheckpointFormat.FOOTER_BYTES);
            long indexOffset = footer.getLong();
            int indexLength = footer.getInt();
            int indexCrc = footer.getInt();
            long footerStep = footer.getLong();
            footer.get(magic);
            if (!Arrays.equals(magic, CheckpointFormat.FOOTER_MAGIC)) {
                throw new CheckpointCorruptException(file, "truncated or unfinished (no ORBITEND footer)");
            }
            if (footerStep != step || indexOffset < CheckpointFormat.HEADER_BYTES || indexLength < 4
                    || indexOffset + indexLength + CheckpointFormat.FOOTER_BYTES != size) {
                throw new CheckpointCorruptException(file, "footer does not match the file (index at " + indexOffset
                        + ", " + indexLength + " bytes, file " + size + " bytes, steps " + step + "/" + footerStep + ")");
            }
            ByteBuffer index = read(ch, indexOffset, indexLength);
            CRC32C crc = new CRC32C();
            crc.update(index.duplicate());
            if ((int) crc.getValue() != indexCrc) {
                throw new CheckpointCorruptException(file, "index checksum mismatch");
            }
            int count = index.getInt();
            if (count < 0 || count > CheckpointFormat.MAX_SECTIONS) {
                throw new CheckpointCorruptException(file, "index claims " + count + " sections");
            }
            Map<String, Section> sections = new LinkedHashMap<>();
            for (int i = 0; i < count; i++) {
                byte[] name = new byte[Short.toUnsignedInt(index.getShort())];
                index.get(name);
                Section s = new Section(new String(name, StandardCharsets.UTF_8), index.getLong(), index.getLong(),
                        index.getInt());
                if (s.offset < CheckpointFormat.HEADER_BYTES || s.length < 0 || s.offset + s.length > indexOffset) {
                    throw new CheckpointCorruptException(file, "section '" + s.name + "' lies outside the data");
                }
                sections.put(s.name, s);
            }
            Checkpoint cp = new Checkpoint(file, step, size, Collections.unmodifiableMap(sections));
            if (verifyAll) {
                for (Section s : sections.values()) {
                    try (InputStream in = cp.section(s.name)) {
                        in.transferTo(OutputStreamNull.INSTANCE);
                    }
                }
            }
            return cp;
        } catch (java.nio.BufferUnderflowException e) {
            throw new CheckpointCorruptException(file, "index is shorter than it claims");
        }
    }

    /** The checkpoint's file. */
    public Path file() {
        return file;
    }

    /** The step the checkpoint was taken after. */
    public long step() {
        return step;
    }

    /** File size in bytes. */
    public long sizeBytes() {
        return size;
    }

    /** Section names in the order they were written. */
    public Set<String> sections() {
        return sections.keySet();
    }

    public boolean has(String name) {
        return sections.containsKey(name);
    }

    /**
     * A stream over a section's bytes; reading to its end checks the section's CRC-32C and throws
     * {@link CheckpointCorruptException} on a mismatch.
     */
    public InputStream section(String name) throws IOException {
        Section s = sections.get(name);
        if (s == null) {
            throw new IOException("checkpoint " + file + " has no section '" + name + "' (it has " + sections.keySet() + ")");
        }
        FileChannel ch = FileChannel.open(file, StandardOpenOption.READ);
        ch.position(s.offset);
        return new CheckedInput(Channels.newInputStream(ch), s, file);
    }

    /** A whole section. */
    public byte[] bytes(String name) throws IOException {
        try (InputStream in = section(name)) {
            return in.readAllBytes();
        }
    }

    @Override
    public String toString() {
        return "checkpoint step " + step + " (" + file + ", " + size + " bytes, sections " + sections.keySet() + ")";
    }

    private static ByteBuffer read(FileChannel ch, long at, int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n).order(ByteOrder.LITTLE_ENDIAN);
        while (b.hasRemaining()) {
            if (ch.read(b, at + b.position()) < 0) {
                throw new IOException("unexpected end of file at " + (at + b.position()));
            }
        }
        return b.flip();
    }

    /** Reads exactly one section, verifying its checksum at the end. */
    private static final class CheckedInput extends InputStream {
        private final InputStream in;
        private final Section section;
        private final Path file;
        private final CRC32C crc = new CRC32C();
        private long left;

        CheckedInput(InputStream in, Section section, Path file) {
            this.in = in;
            this.section = section;
            this.file = file;
            this.left = section.length;
        }

        @Override
        public int read() throws IOException {
            byte[] one = new byte[1];
            int n = read(one, 0, 1);
            return n < 0 ? -1 : one[0] & 0xff;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            if (left == 0) {
                return -1;
            }
            int n = in.read(b, off, (int) Math.min(len, left));
            if (n < 0) {
                throw new CheckpointCorruptException(file, "section '" + section.name + "' ends early");
            }
            crc.update(b, off, n);
            left -= n;
            if (left == 0 && (int) crc.getValue() != section.crc) {
                throw new CheckpointCorruptException(file, "section '" + section.name + "' checksum mismatch");
            }
            return n;
        }

        @Override
        public void close() throws IOException {
            in.close();
        }
    }

    /** Discards bytes (a full-check read). */
    private static final class OutputStreamNull extends java.io.OutputStream {
        static final OutputStreamNull INSTANCE = new OutputStreamNull();

        @Override
        public void write(int b) {
            // discarded: only the checksum matters
        }

        @Override
        public void write(byte[] b, int off, int len) {
            // discarded: only the checksum matters
        }
    }
}
