package org.orbitrl.scheduler.rl;

/**
 * The outcome of a train/rollout mismatch correction, ready for {@link PolicyBatch#withCorrection}.
 *
 * @param weights [sequences, tokens] detached importance weights for the policy loss, or
 *                {@code null} for all ones
 * @param mask    [sequences, tokens] the loss mask to train with (tokens masked by MIS removed);
 *                compute the {@link Normaliser} from the corrected masks
 * @param stats   the train/rollout gap and what was corrected
 */
public record MismatchCorrection(float[] weights, float[] mask, MismatchStats stats) {
}
