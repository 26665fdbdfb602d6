package org.orbitrl.scheduler.rl;

/**
 * Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly
 * brings you off-policy RL training"): tokens were sampled by the rollout engine's
 * {@code π_rollout} but the loss is taken under training's {@code π_old}; each token's policy loss
 * is multiplied by the detached weight
 * <pre>
 *   w = min(exp(oldLogp_train − logp_rollout), C)
 * </pre>
 * with the ratio per token or per sequence ({@link MismatchLevel}). The weight carries no gradient.
 *
 * @param cap   C, > 0 (e.g. 2)
 * @param level the unit of the ratio
 */
public record TruncatedImportanceSampling(double cap, MismatchLevel level) {

    public TruncatedImportanceSampling {
        if (!(cap > 0) || Double.isInfinite(cap)) {
            throw new IllegalArgumentException("TIS cap must be positive and finite, got " + cap);
        }
        if (level == null) {
            throw new IllegalArgumentException("TIS level is missing");
        }
    }

    /**
     * The weights for one batch.
     *
     * @param trainLogp   [sequences, tokens] behaviour log-probs recomputed by training
     * @param rolloutLogp [sequences, tokens] log-probs recorded by rollout
     * @param mask        [sequences, tokens] loss mask (0/1), returned unchanged
     */
    public MismatchCorrection apply(float[] trainLogp, float[] rolloutLogp, float[] mask, int sequences, int tokens) {
        double[] logRatio = level.logRatios(trainLogp, rolloutLogp, mask, sequences, tokens); // [sequences, tokens]
        float[] w = new float[mask.length]; // [sequences, tokens]
        long units = 0;
        long truncated = 0;
        double wSum = 0;
        long n = 0;
        for (int s = 0; s < sequences; s++) {
            boolean seqCounted = false;
            for (int t = 0; t < tokens; t++) {
                int i = s * tokens + t;
                if (mask[i] == 0f) {
                    continue;
                }
                double r = Math.exp(logRatio[i]);
                boolean cut = r > cap;
                w[i] = (float) (cut ? cap : r);
                wSum += w[i];
                n++;
                if (level == MismatchLevel.TOKEN) {
                    units++;
                    truncated += cut ? 1 : 0;
                } else if (!seqCounted) {
                    seqCounted = true;
                    units++;
                    truncated += cut ? 1 : 0;
                }
            }
        }
        double[] gap = MismatchStats.gap(trainLogp, rolloutLogp, mask);
        MismatchStats stats = new MismatchStats((long) gap[0], gap[1], gap[2], units, truncated, n == 0 ? 1 : wSum / n);
        return new MismatchCorrection(w, mask.clone(), stats);
    }
}
