package org.orbitrl.scheduler.job;

/**
 * Where a runner stands between steps: what its next checkpoint will hold.
 *
 * @param step           optimizer steps completed
 * @param adapterVersion the adapter version current rollouts use
 * @param consumedIndex  the sample-log index of the last entry the trainer consumed
 *                       ({@link org.orbitrl.scheduler.log.SampleLog#NO_INDEX} before the first)
 * @param samplesTrained samples the trainer has folded into its state
 */
public record RunnerState(long step, long adapterVersion, long consumedIndex, long samplesTrained) {
    public RunnerState {
        if (step < 0 || adapterVersion < 0 || samplesTrained < 0) {
            throw new IllegalArgumentException("runner state must not be negative: step " + step + ", version "
                    + adapterVersion + ", samples " + samplesTrained);
        }
    }

    /** This state with another consumed index (a rank reading its own copy of the log). */
    public RunnerState withConsumedIndex(long index) {
        return new RunnerState(step, adapterVersion, index, samplesTrained);
    }
}
