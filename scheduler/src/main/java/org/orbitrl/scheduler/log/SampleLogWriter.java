package org.orbitrl.scheduler.log;

import net.openhft.chronicle.queue.ExcerptAppender;
import net.openhft.chronicle.wire.DocumentContext;

/**
 * Appends entries to a sample log and returns their indices. Each entry is one queue document,
 * written whole or not at all. Used by one thread at a time.
 */
public final class SampleLogWriter implements AutoCloseable {
    private final ExcerptAppender appender;

    SampleLogWriter(ExcerptAppender appender) {
        this.appender = appender;
    }

    /** Appends a complete group; returns its index. */
    public long append(SampleGroup group) {
        return write(SampleCodec.encode(group));
    }

    /** Appends an adapter-version event; returns its index. */
    public long append(AdapterVersionEvent event) {
        return write(SampleCodec.encode(event));
    }

    private long write(byte[] entry) {
        try (DocumentContext dc = appender.writingDocument()) {
            dc.wire().bytes().write(entry);
        } catch (RuntimeException e) {
            throw new SampleLogException("cannot append to the sample log: " + e.getMessage(), e);
        }
        return appender.lastIndexAppended();
    }

    /** Allows another thread to use this writer next (the previous one must be done with it). */
    public void handOver() {
        appender.singleThreadedCheckReset();
    }

    @Override
    public void close() {
        appender.singleThreadedCheckReset();
        appender.close();
    }
}
