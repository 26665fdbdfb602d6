package org.orbitrl.memory.plan;

import org.orbitrl.memory.plan.internal.ActivationModel;
import org.orbitrl.model.spec.ModelSpec;

/**
 * The device memory a rollout engine's captured decode steps may hold: each captured step keeps an arena of its own
 * (the step's working set, sized when it is captured), one per batch bucket, block-table width and adapter state, so
 * that without a bound they add up as the batch shrinks and the sequences grow. The engine closes the least recently
 * replayed ones beyond {@link #engineBytes} (its {@code graphArenaBytes} option), and the planner counts that budget in a
 * rollout GPU's activations, so the two agree.
 */
public final class DecodeGraphBudget {
    /** Arenas of the engine's largest step the budget holds: the step replaying and room for the smaller ones. */
    public static final int LARGEST_STEPS = 2;

    private DecodeGraphBudget() {
    }

    /**
     * One captured step's arena at {@code rows} rows: a layer's forward working set at that many tokens in f32 (twice
     * the bf16 estimate of {@link ActivationModel#forwardScratchBytes}), the residual stream and its normed copy, and the
     * logits [rows, vocab / tp] f32.
     */
    public static long stepArenaBytes(ModelSpec spec, long rows, int tp) {
        long layer = 2 * ActivationModel.forwardScratchBytes(WeightInventory.of(spec), rows, tp);
        long stream = 2L * rows * spec.hiddenSize() * 4;
        long logits = rows * ((spec.vocabSize() + tp - 1) / tp) * 4;
        return layer + stream + logits;
    }

    /**
     * The arena budget of an engine decoding {@code sequences} at once: {@link #LARGEST_STEPS} arenas of its largest
     * step, the batch padded to a power of two as the engine pads it.
     */
    public static long engineBytes(ModelSpec spec, long sequences, int tp) {
        long rows = sequences <= 1 ? 1 : Long.highestOneBit(sequences - 1) << 1;
        return LARGEST_STEPS * stepArenaBytes(spec, rows, tp);
    }
}
