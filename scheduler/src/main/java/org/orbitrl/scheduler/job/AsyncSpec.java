package org.orbitrl.scheduler.job;

import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * Asynchronous RL: rollout keeps generating with version v while v+1 trains.
 *
 * @param enabled         run rollout and training concurrently (false: the synchronous loop)
 * @param stalenessBound  k: a token made by version below {@code current - k} is not trained on
 *                        (its sample is dropped and counted); live-tunable
 * @param partialRollouts what a version switch does to sequences in flight
 * @param maxLagGroups    backpressure: rollout pauses while this many groups wait for the trainer
 * @param priority        on a GPU shared by both: whether the rollout's kernels are scheduled first
 *                        when both wait for free multiprocessors, or neither
 */
public record AsyncSpec(boolean enabled, @Tunable int stalenessBound, PartialRollouts partialRollouts, int maxLagGroups,
                        Priority priority) {

    /** The CUDA stream priorities of rollout and training on one GPU. */
    public enum Priority {
        /** The rollout's stream has the device's highest priority: decode steps keep their pace, training fills the gaps. */
        ROLLOUT,
        /** Both at the default priority: the device interleaves their blocks as they come. */
        EQUAL
    }

    /** Without a priority: the rollout first (the default). */
    public AsyncSpec(boolean enabled, int stalenessBound, PartialRollouts partialRollouts, int maxLagGroups) {
        this(enabled, stalenessBound, partialRollouts, maxLagGroups, Priority.ROLLOUT);
    }

    public AsyncSpec {
        new Checks()
                .range("staleness_bound", stalenessBound, 0, 1_000_000)
                .require(partialRollouts != null, "partial_rollouts", "is required")
                .range("max_lag_groups", maxLagGroups, 1, 1 << 20)
                .require(priority != null, "priority", "must be rollout or equal")
                .done();
    }

    static AsyncSpec read(Section s) {
        boolean enabled = s.bool("enabled", false);
        int bound = s.integer("staleness_bound", 1);
        PartialRollouts partial = s.choice("partial_rollouts", PartialRollouts.CONTINUE);
        int lag = s.integer("max_lag_groups", 64);
        Priority priority = s.choice("priority", Priority.ROLLOUT);
        return s.build(() -> new AsyncSpec(enabled, bound, partial, lag, priority));
    }
}
