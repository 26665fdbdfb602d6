package org.orbitrl.scheduler.log;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import net.openhft.chronicle.queue.impl.single.SingleChronicleQueue;
import net.openhft.chronicle.queue.impl.single.SingleChronicleQueueBuilder;
import net.openhft.chronicle.queue.rollcycles.LargeRollCycles;

/**
 * One job's sample log: a Chronicle Queue in its own folder, one file a day
 * ({@link LargeRollCycles#HUGE_DAILY}: large enough for any rollout rate, few files). Owns the
 * queue's memory mappings; writers and readers made from it must be closed before it.
 *
 * <p>Threads: writers and readers are each used by one thread; a rollout thread appending with
 * its writer while a trainer thread tails with its reader is the intended use (the async mode).
 *
 * <p>Durability: entries live in the page cache as soon as they are written, so they survive
 * the process being killed (kill -9); they reach the disk when the kernel writes them back.
 */
public final class SampleLog implements AutoCloseable {
    /** The index "before the first entry": {@link SampleLogReader#startAfter} from here reads everything. */
    public static final long NO_INDEX = -1;

    private final Path dir;
    private final SingleChronicleQueue queue;

    private SampleLog(Path dir, SingleChronicleQueue queue) {
        this.dir = dir;
        this.queue = queue;
    }

    /** Opens (creating if needed) the sample log in {@code dir} for reading and writing. */
    public static SampleLog open(Path dir) {
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create the sample log folder " + dir + ": " + e.getMessage(), e);
        }
        return new SampleLog(dir, builder(dir).build());
    }

    /** Opens an existing sample log without writing to it (for inspection tools). */
    public static SampleLog openReadOnly(Path dir) {
        if (!Files.isDirectory(dir)) {
            throw new SampleLogException("no sample log at " + dir);
        }
        return new SampleLog(dir, builder(dir).readOnly(true).build());
    }

    private static SingleChronicleQueueBuilder builder(Path dir) {
        return SingleChronicleQueueBuilder.binary(dir.toFile())
                .rollCycle(LargeRollCycles.HUGE_DAILY)
                // An appender killed mid-write leaves its entry unfinished; the next appender
                // waits this long for it before recovering the queue.
                .timeoutMS(2_000);
    }

    /** The log's folder. */
    public Path dir() {
        return dir;
    }

    /** A new writer. A writer is used by one thread at a time. */
    public SampleLogWriter writer() {
        return new SampleLogWriter(queue.createAppender());
    }

    /** A new reader positioned before the first entry. A reader is used by one thread at a time. */
    public SampleLogReader reader() {
        return new SampleLogReader(queue.createTailer());
    }

    /** The index of the last entry, or {@link #NO_INDEX} when the log is empty. */
    public long lastIndex() {
        long last = queue.lastIndex();
        return last < 0 ? NO_INDEX : last;
    }

    @Override
    public void close() {
        queue.close();
    }
}
