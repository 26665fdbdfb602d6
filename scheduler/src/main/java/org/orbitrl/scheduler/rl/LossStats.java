package org.orbitrl.scheduler.rl;

/**
 * Sums over the masked tokens a loss saw, so that statistics of micro-batches (and of the policy
 * and KL terms of one micro-batch) combine with {@link #plus}. Ratios are {@code exp(logp − oldLogp)}
 * per token, or the sequence ratio repeated on each token of the sequence for {@link GspoLoss}.
 *
 * @param tokens          masked tokens the policy loss saw
 * @param clippedLow      tokens on the clipped branch below {@code 1 − ε_low} (negative advantage)
 * @param clippedHigh     tokens on the clipped branch above {@code 1 + ε_high} (positive advantage)
 * @param ratioSum        sum of ratios
 * @param ratioMin        smallest ratio (+∞ when no token)
 * @param ratioMax        largest ratio (−∞ when no token)
 * @param oldMinusNewSum  sum of {@code oldLogp − logp}, whose mean estimates KL(old ‖ current)
 * @param policyLoss      the policy term's contribution to the loss (already normalised)
 * @param klTokens        masked tokens the KL penalty saw
 * @param klSum           sum of the KL estimator over those tokens (unscaled)
 * @param klLoss          the KL term's contribution to the loss (coefficient and normaliser applied)
 */
public record LossStats(long tokens, long clippedLow, long clippedHigh, double ratioSum, double ratioMin,
                        double ratioMax, double oldMinusNewSum, double policyLoss, long klTokens, double klSum,
                        double klLoss) {

    /** Statistics of nothing. */
    public static final LossStats EMPTY = new LossStats(0, 0, 0, 0, Double.POSITIVE_INFINITY,
            Double.NEGATIVE_INFINITY, 0, 0, 0, 0, 0);

    /** Field-wise sum (min and max for the extremes). */
    public LossStats plus(LossStats o) {
        return new LossStats(tokens + o.tokens, clippedLow + o.clippedLow, clippedHigh + o.clippedHigh,
                ratioSum + o.ratioSum, Math.min(ratioMin, o.ratioMin), Math.max(ratioMax, o.ratioMax),
                oldMinusNewSum + o.oldMinusNewSum, policyLoss + o.policyLoss, klTokens + o.klTokens,
                klSum + o.klSum, klLoss + o.klLoss);
    }

    /** Fraction of masked tokens on a clipped branch (zero gradient); 0 when no token. */
    public double clipFraction() {
        return tokens == 0 ? 0 : (double) (clippedLow + clippedHigh) / tokens;
    }

    /** Mean ratio over masked tokens; NaN when no token. */
    public double ratioMean() {
        return ratioSum / tokens;
    }

    /** Mean of {@code oldLogp − logp} over masked tokens (the "approx KL" of PPO); NaN when no token. */
    public double approxKlToOld() {
        return oldMinusNewSum / tokens;
    }

    /** Mean KL estimate to the reference over masked tokens; NaN when no KL term. */
    public double klMean() {
        return klSum / klTokens;
    }
}
