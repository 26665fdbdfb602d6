package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.log.AdapterVersionEvent;
import org.orbitrl.scheduler.log.SampleLogWriter;

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
    private final Adapter trainerAdapter;
    private final SampleLogWriter writer;
    private final TensorAllocator memory;

    /** @param memory the allocator of the adapters' tensors (host or device), to read them for the checksum */
    AdapterPublisher(RolloutReplicas engines, Adapter trainerAdapter, SampleLogWriter writer, TensorAllocator memory) {
        this.memory = memory;
        this.engines = engines;
        this.trainerAdapter = trainerAdapter;
        this.writer = writer;
    }

    /** Publishes the trainer's adapter as {@code version}, trained at {@code step}. */
    Published publish(long version, long step) throws JobException {
        long p0 = System.nanoTime();
        long bytes;
        try {
            bytes = engines.publish(trainerAdapter, version);
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
