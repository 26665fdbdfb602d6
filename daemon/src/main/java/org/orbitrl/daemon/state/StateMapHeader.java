package org.orbitrl.daemon.state;

import static net.openhft.chronicle.hash.impl.SizePrefixedBlob.NOT_COMPLETE;
import static net.openhft.chronicle.hash.impl.SizePrefixedBlob.READY;
import static net.openhft.chronicle.hash.impl.SizePrefixedBlob.SELF_BOOTSTRAPPING_HEADER_OFFSET;
import static net.openhft.chronicle.hash.impl.SizePrefixedBlob.SIZE_MASK;
import static net.openhft.chronicle.hash.impl.SizePrefixedBlob.SIZE_WORD_OFFSET;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * The readiness word of a persisted Chronicle Map's self-bootstrapping header.
 *
 * <p>Chronicle Map marks the header NOT_COMPLETE while a process creates or recovers the file
 * and READY when it is done (layout: an 8-byte checksum, then a little-endian 32-bit size word
 * whose top bit is NOT_COMPLETE, then the header). A process killed in between leaves the word
 * NOT_COMPLETE for good; the next opener, recovery included, then waits a fixed minute for a
 * creator that no longer exists before it goes on. A caller that knows it is the only process
 * using the file (the daemon holds its data directory's lock) can mark the word READY instead and
 * let recovery start at once. The recovery that follows repairs the rest: {@link StateStore}
 * recovers with its own configuration, so a header whose checksum does not match is rewritten
 * from it, and segment locks and counters left by the dead process are reset.
 */
final class StateMapHeader {
    private StateMapHeader() {
    }

    /** What a file's size word says. */
    enum Readiness {
        /** Shorter than the size word: nothing of a map was written. */
        EMPTY,
        /** Marked READY. */
        READY,
        /** Left NOT_COMPLETE with a plausible header size. */
        INCOMPLETE,
        /** A size word that no Chronicle Map writes (left to recovery to report). */
        UNKNOWN
    }

    /** Reads the readiness of the map file {@code file}. */
    static Readiness readiness(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            return readiness(ch);
        }
    }

    private static Readiness readiness(FileChannel ch) throws IOException {
        if (ch.size() < SELF_BOOTSTRAPPING_HEADER_OFFSET) {
            return Readiness.EMPTY;
        }
        int word = readWord(ch);
        if (word > 0) {
            return Readiness.READY; // Chronicle's SizePrefixedBlob.isReady
        }
        int size = word & SIZE_MASK;
        boolean incomplete = (word & ~SIZE_MASK) == NOT_COMPLETE && size > 0
                && ch.size() >= SELF_BOOTSTRAPPING_HEADER_OFFSET + (long) size;
        return incomplete ? Readiness.INCOMPLETE : Readiness.UNKNOWN;
    }

    /**
     * Marks a header that a killed process left NOT_COMPLETE as READY, so that recovery starts at
     * once. The caller must be the only process using the file.
     *
     * @return whether the word was changed
     */
    static boolean markReadyIfIncomplete(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            if (readiness(ch) != Readiness.INCOMPLETE) {
                return false;
            }
            int size = readWord(ch) & SIZE_MASK;
            writeWord(ch, READY | size);
            ch.force(false);
            return true;
        }
    }

    /** The raw size word (tests recreate what a killed creator or recovery leaves). */
    static int readWord(FileChannel ch) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN);
        while (b.hasRemaining()) {
            if (ch.read(b, SIZE_WORD_OFFSET + b.position()) < 0) {
                throw new EOFException("the state map file ends inside its header's size word");
            }
        }
        return b.getInt(0);
    }

    static void writeWord(FileChannel ch, int word) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putInt(0, word);
        while (b.hasRemaining()) {
            ch.write(b, SIZE_WORD_OFFSET + b.position());
        }
    }
}
