package org.orbitrl.scheduler.rl;

import java.util.List;

/**
 * The denominator of a {@link LossNormalisation}, computed once over the full batch and then
 * passed unchanged to the loss of every micro-batch, so that micro-batch losses add up to the
 * full-batch loss and every token's gradient is the same whichever micro-batch it is in.
 *
 * <p>The weight of a masked token of a sequence with {@code T_s} masked tokens is
 * {@code 1/N} (token mean), {@code (1/T_s)/S} (sequence mean) or {@code 1/C} (fixed constant);
 * it depends only on the token's own sequence and this record, never on the micro-batch.
 *
 * @param mode        the reduction
 * @param denominator N, S or C as {@link LossNormalisation} defines them; must be positive
 */
public record Normaliser(LossNormalisation mode, double denominator) {

    public Normaliser {
        if (mode == null) {
            throw new IllegalArgumentException("normalisation mode is missing");
        }
        if (!(denominator > 0) || Double.isInfinite(denominator)) {
            throw new IllegalArgumentException(mode + " normaliser must be positive and finite, got " + denominator
                    + (mode == LossNormalisation.FIXED_CONSTANT ? "" : " (the batch has no masked tokens)"));
        }
    }

    /** Sum over tokens divided by {@code constant} (Dr.GRPO). */
    public static Normaliser fixed(double constant) {
        return new Normaliser(LossNormalisation.FIXED_CONSTANT, constant);
    }

    /**
     * The normaliser of the batch made of all {@code microBatches} together.
     *
     * @param fixedConstant C for {@link LossNormalisation#FIXED_CONSTANT}; ignored otherwise
     * @throws IllegalArgumentException if the batch has no masked token (token and sequence mean)
     */
    public static Normaliser over(LossNormalisation mode, double fixedConstant, List<PolicyBatch> microBatches) {
        return switch (mode) {
            case FIXED_CONSTANT -> fixed(fixedConstant);
            case TOKEN_MEAN -> {
                long n = 0;
                for (PolicyBatch b : microBatches) {
                    for (int s = 0; s < b.sequences(); s++) {
                        n += b.maskedTokens(s);
                    }
                }
                yield new Normaliser(mode, n);
            }
            case SEQUENCE_MEAN -> {
                long n = 0;
                for (PolicyBatch b : microBatches) {
                    for (int s = 0; s < b.sequences(); s++) {
                        n += b.maskedTokens(s) > 0 ? 1 : 0;
                    }
                }
                yield new Normaliser(mode, n);
            }
        };
    }

    /** The normaliser of one whole batch. */
    public static Normaliser over(LossNormalisation mode, double fixedConstant, PolicyBatch batch) {
        return over(mode, fixedConstant, List.of(batch));
    }

    /** Weight of each masked token of a sequence with {@code maskedTokens} masked tokens. */
    public double tokenWeight(int maskedTokens) {
        return switch (mode) {
            case TOKEN_MEAN, FIXED_CONSTANT -> 1.0 / denominator;
            case SEQUENCE_MEAN -> (1.0 / maskedTokens) / denominator;
        };
    }
}
