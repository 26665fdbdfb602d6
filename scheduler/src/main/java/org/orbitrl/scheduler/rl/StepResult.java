package org.orbitrl.scheduler.rl;

/** What an optimizer step did. */
public sealed interface StepResult {

    /** Whether parameters were updated. */
    boolean applied();

    /**
     * The update was applied.
     *
     * @param step         the step number just taken (1 for the first)
     * @param learningRate the rate used
     * @param gradNorm     global gradient norm before clipping
     * @param clipFactor   factor the gradients were scaled by (1 when not clipped)
     */
    record Applied(long step, double learningRate, double gradNorm, double clipFactor) implements StepResult {
        @Override
        public boolean applied() {
            return true;
        }
    }

    /**
     * The update was skipped because the loss or a gradient was not finite; parameters and
     * optimizer state are unchanged.
     *
     * @param step     the step number that was not taken
     * @param offender the first NaN or infinity found: {@code "loss"} or the gradient's parameter name
     */
    record Skipped(long step, NonFiniteValue offender) implements StepResult {
        @Override
        public boolean applied() {
            return false;
        }

        @Override
        public String toString() {
            return "step " + step + " skipped: " + offender;
        }
    }
}
