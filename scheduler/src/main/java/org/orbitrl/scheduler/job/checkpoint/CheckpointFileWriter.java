package org.orbitrl.scheduler.job.checkpoint;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.zip.CRC32C;

/** Writes one checkpoint file section by section; {@link #finish} writes the index and footer and forces it to disk. */
final class CheckpointFileWriter implements CheckpointWriter, AutoCloseable {
    private final FileChannel ch;
    private final long step;
    private final List<Checkpoint.Section> done = new ArrayList<>();
    private final Set<String> names = new HashSet<>();
    private SectionStream current;

    CheckpointFileWriter(Path tmp, long step) throws IOException {
        this.ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
        this.step = step;
        ByteBuffer h = ByteBuffer.allocate(CheckpointFormat.HEADER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        h.put(CheckpointFormat.HEADER_MAGIC).putInt(CheckpointFormat.FORMAT).putLong(step);
        writeFully(h.flip());
    }

    @Override
    public OutputStream section(String name) throws IOException {
        byte[] nameBytes = name.getBytes(StandardCharsets.UTF_8);
        if (nameBytes.length == 0 || nameBytes.length > CheckpointFormat.MAX_NAME_BYTES) {
            throw new IllegalArgumentException("a section name is 1.." + CheckpointFormat.MAX_NAME_BYTES
                    + " UTF-8 bytes, got '" + name + "'");
        }
        if (!names.add(name)) {
            throw new IllegalArgumentException("section '" + name + "' written twice");
        }
        if (names.size() > CheckpointFormat.MAX_SECTIONS) {
            throw new IllegalArgumentException("more than " + CheckpointFormat.MAX_SECTIONS + " sections");
        }
        endSection();
        current = new SectionStream(name, ch.position());
        return current;
    }

    /** Writes the index and footer and forces the file's content to disk. */
    void finish() throws IOException {
        endSection();
        int indexBytes = 4;
        for (Checkpoint.Section s : done) {
            indexBytes += 2 + s.name().getBytes(StandardCharsets.UTF_8).length + 8 + 8 + 4;
        }
        ByteBuffer index = ByteBuffer.allocate(indexBytes).order(ByteOrder.LITTLE_ENDIAN);
        index.putInt(done.size());
        for (Checkpoint.Section s : done) {
            byte[] n = s.name().getBytes(StandardCharsets.UTF_8);
            index.putShort((short) n.length).put(n).putLong(s.offset()).putLong(s.length()).putInt(s.crc());
        }
        index.flip();
        CRC32C crc = new CRC32C();
        crc.update(index.duplicate());
        long indexOffset = ch.position();
        writeFully(index);
        ByteBuffer footer = ByteBuffer.allocate(CheckpointFormat.FOOTER_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        footer.putLong(indexOffset).putInt(indexBytes).putInt((int) crc.getValue()).putLong(step)
                .put(CheckpointFormat.FOOTER_MAGIC);
        writeFully(footer.flip());
        ch.force(true); // fsync: the content is on disk before the rename makes it visible
    }

    @Override
    public void close() throws IOException {
        ch.close();
    }

    private void endSection() {
        if (current != null) {
            done.add(new Checkpoint.Section(current.name, current.offset, current.length, (int) current.crc.getValue()));
            current.closed = true;
            current = null;
        }
    }

    private void writeFully(ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /** The stream of the section being written; counts and checksums what passes. */
    private final class SectionStream extends OutputStream {
        private final String name;
        private final long offset;
        private final CRC32C crc = new CRC32C();
        private long length;
        private boolean closed;

        SectionStream(String name, long offset) {
            this.name = name;
            this.offset = offset;
        }

        @Override
        public void write(int b) throws IOException {
            write(new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            if (closed) {
                throw new IOException("section '" + name + "' is finished; a later section has started");
            }
            crc.update(b, off, len);
            writeFully(ByteBuffer.wrap(b, off, len));
            length += len;
        }

        @Override
        public void close() {
            // the section ends when the next one starts or the checkpoint finishes
        }
    }
}
