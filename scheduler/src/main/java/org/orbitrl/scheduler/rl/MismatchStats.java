package org.orbitrl.scheduler.rl;

/**
 * How far training's recomputed log-probs are from rollout's, and what a correction did about it.
 *
 * @param tokens      masked tokens compared (before any masking by the correction)
 * @param meanAbsGap  mean of |oldLogp_train − logp_rollout| over those tokens (0 when none)
 * @param maxAbsGap   largest such difference (0 when none)
 * @param units       tokens or sequences the ratio was taken over
 * @param corrected   units whose weight was truncated at the cap (TIS) or that were masked (MIS)
 * @param weightMean  mean importance weight over masked tokens after correction (1 for MIS)
 */
public record MismatchStats(long tokens, double meanAbsGap, double maxAbsGap, long units, long corrected,
                            double weightMean) {

    /** Fraction of units truncated or masked; 0 when no unit. */
    public double correctedFraction() {
        return units == 0 ? 0 : (double) corrected / units;
    }

    static double[] gap(float[] trainLogp, float[] rolloutLogp, float[] mask) {
        double sum = 0;
        double max = 0;
        long n = 0;
        for (int i = 0; i < mask.length; i++) {
            if (mask[i] != 0f) {
                double d = Math.abs((double) trainLogp[i] - rolloutLogp[i]);
                sum += d;
                max = d > max || Double.isNaN(d) ? d : max;
                n++;
            }
        }
        return new double[] {n, n == 0 ? 0 : sum / n, max};
    }
}
