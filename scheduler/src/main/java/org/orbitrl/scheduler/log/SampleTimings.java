package org.orbitrl.scheduler.log;

/**
 * When a sample was generated and how long its reward took.
 *
 * @param startedEpochNanos  wall-clock time generation started (ns since the epoch)
 * @param finishedEpochNanos wall-clock time the last token was generated
 * @param rewardNanos        time the verifier took
 */
public record SampleTimings(long startedEpochNanos, long finishedEpochNanos, long rewardNanos) {
    public SampleTimings {
        if (finishedEpochNanos < startedEpochNanos || rewardNanos < 0) {
            throw new IllegalArgumentException("timings out of order: started " + startedEpochNanos + ", finished "
                    + finishedEpochNanos + ", reward " + rewardNanos + " ns");
        }
    }

    /** Generation time in nanoseconds. */
    public long generationNanos() {
        return finishedEpochNanos - startedEpochNanos;
    }
}
