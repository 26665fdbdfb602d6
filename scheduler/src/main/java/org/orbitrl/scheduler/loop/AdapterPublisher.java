package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.log.AdapterVersionEvent;
import org.orbitrl.scheduler.log.SampleLogWriter;

import java.util.function.IntFunction;

/**
 * Publication of a trained adapter version: its weights copied into every rollout engine's idle
 * slot (only the adapter moves; an engine switches between decode steps), then an
 * {@link AdapterVersionEvent} appended to the sample log with the bytes copied.
 */
final class AdapterPublisher {

    /** What one publication moved and how long the copy took. */
    record Published(long version, long bytes, double seconds) {
        static Published none(long version) {
            return new Published(version, 0, 0);
        }
    }

    private final RolloutReplicas engines;
    private final IntFunction<Adapter> sourceOf;
    private final Adapter trainerAdapter;
    private final SampleLogWriter writer;
    private final TensorAllocator memory;

    /**
     * @param sourceOf       the adapter engine r copies (the trainer on its device, or the first)
     * @param trainerAdapter the first trainer's adapter, whose checksum the log records
     * @param memory         the allocator of its tensors (host or device), to read them for the checksum
     */
    AdapterPublisher(RolloutReplicas engines, IntFunction<Adapter> sourceOf, Adapter trainerAdapter, SampleLogWriter writer,
                     TensorAllocator memory) {
        this.memory = memory;
        this.engines = engines;
        this.sourceOf = sourceOf;
        this.trainerAdapter = trainerAdapter;
        this.writer = writer;
    }

    /** Publishes the trainer's adapter as {@code version}, trained at {@code step}. */
    Published publish(long version, long step) throws JobException {
        long p0 = System.nanoTime();
        long bytes;
        try {
            bytes = engines.publish(sourceOf, version);
        } catch (InterruptedException ie) {
            Thread.currentThread().interrupt();
            throw new JobException("interrupted while publishing adapter version " + version);
        }
        double seconds = (System.nanoTime() - p0) / 1e9;
        writer.append(AdapterVersionEvent.of(version, step, RlCheckpoint.checksum(trainerAdapter, memory), "", bytes,
                System.currentTimeMillis() * 1_000_000L));
        return new Published(version, bytes, seconds);
    }
}
