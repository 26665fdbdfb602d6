package org.orbitrl.scheduler.rl;

/**
 * Sums the losses and statistics of the micro-batches of one batch. With a {@link Normaliser}
 * computed over the full batch, the accumulated loss equals the full-batch loss (up to the order of
 * floating-point additions). Gradients are not held here: each micro-batch's {@link LossResult#grad}
 * goes to its own backward pass, whose parameter gradients add up.
 */
public final class LossAccumulator {
    private double loss;
    private LossStats stats = LossStats.EMPTY;
    private int microBatches;

    /** Adds one micro-batch's result. */
    public LossAccumulator add(LossResult r) {
        loss += r.loss();
        stats = stats.plus(r.stats());
        microBatches++;
        return this;
    }

    /** The summed loss. */
    public double loss() {
        return loss;
    }

    /** The combined statistics. */
    public LossStats stats() {
        return stats;
    }

    /** Micro-batches added. */
    public int microBatches() {
        return microBatches;
    }
}
