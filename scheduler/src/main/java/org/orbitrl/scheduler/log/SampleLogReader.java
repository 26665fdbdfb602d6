package org.orbitrl.scheduler.log;

import net.openhft.chronicle.bytes.Bytes;
import net.openhft.chronicle.queue.ExcerptTailer;
import net.openhft.chronicle.queue.TailerDirection;
import net.openhft.chronicle.wire.DocumentContext;

/**
 * Reads a sample log in index order from an explicit position. Never blocks: {@link #next()}
 * returns {@code null} when no further entry has been written yet. Used by one thread at a time.
 */
public final class SampleLogReader implements AutoCloseable {
    private final ExcerptTailer tailer;
    private long lastRead = SampleLog.NO_INDEX;

    SampleLogReader(ExcerptTailer tailer) {
        this.tailer = tailer;
    }

    /** Positions before the first entry. */
    public SampleLogReader toStart() {
        tailer.direction(TailerDirection.FORWARD).toStart();
        lastRead = SampleLog.NO_INDEX;
        return this;
    }

    /**
     * Positions just after the entry at {@code index}, so {@link #next()} returns the entry that
     * follows it: how a trainer resumes from the index stored in its checkpoint.
     * {@link SampleLog#NO_INDEX} positions before the first entry.
     *
     * @throws SampleLogException if the log holds no entry at {@code index}
     */
    public SampleLogReader startAfter(long index) {
        if (index == SampleLog.NO_INDEX) {
            return toStart();
        }
        tailer.direction(TailerDirection.FORWARD);
        if (!tailer.moveToIndex(index)) {
            throw new SampleLogException("the sample log has no entry at index " + SampleCodec.hex(index)
                    + " (a checkpoint's consumed index must be in the log; was the log deleted or truncated?)");
        }
        try (DocumentContext dc = tailer.readingDocument()) {
            if (!dc.isPresent() || dc.index() != index) {
                throw new SampleLogException("the sample log has no entry at index " + SampleCodec.hex(index));
            }
        }
        lastRead = index;
        return this;
    }

    /** The next entry, or {@code null} if none has been written yet. */
    public LogEntry next() {
        try (DocumentContext dc = tailer.readingDocument()) {
            if (!dc.isPresent()) {
                return null;
            }
            if (dc.isMetaData()) {
                return next();
            }
            Bytes<?> bytes = dc.wire().bytes();
            byte[] b = new byte[(int) bytes.readRemaining()];
            bytes.read(b);
            LogEntry entry = SampleCodec.decode(dc.index(), b);
            lastRead = dc.index();
            return entry;
        }
    }

    /** The index of the last entry returned (or skipped to), {@link SampleLog#NO_INDEX} if none. */
    public long lastReadIndex() {
        return lastRead;
    }

    /**
     * The last group in the log, or {@code null} if it holds none: where a rollout producer resumes.
     * Leaves this reader before the first entry.
     */
    public LogEntry.Group lastGroup() {
        try {
            tailer.direction(TailerDirection.BACKWARD).toEnd();
            while (true) {
                try (DocumentContext dc = tailer.readingDocument()) {
                    if (!dc.isPresent()) {
                        return null;
                    }
                    if (dc.isMetaData()) {
                        continue;
                    }
                    Bytes<?> bytes = dc.wire().bytes();
                    if (bytes.readRemaining() > 0 && bytes.peekUnsignedByte() == SampleCodec.KIND_GROUP) {
                        byte[] b = new byte[(int) bytes.readRemaining()];
                        bytes.read(b);
                        return (LogEntry.Group) SampleCodec.decode(dc.index(), b);
                    }
                }
            }
        } finally {
            toStart();
        }
    }

    /** Allows another thread to use this reader next (the previous one must be done with it). */
    public void handOver() {
        tailer.singleThreadedCheckReset();
    }

    @Override
    public void close() {
        tailer.singleThreadedCheckReset();
        tailer.close();
    }
}
