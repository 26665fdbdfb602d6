package org.orbitrl.scheduler.rl;

/**
 * Masked importance sampling (MIS): units whose train/rollout ratio
 * {@code exp(oldLogp_train − logp_rollout)} lies outside {@code [1/C, C]} are removed from the
 * loss mask, per token or per sequence ({@link MismatchLevel}); the rest train with weight 1.
 * A NaN ratio is outside the interval and is masked.
 *
 * @param cap   C, > 1
 * @param level the unit of the ratio
 */
public record MaskedImportanceSampling(double cap, MismatchLevel level) {

    public MaskedImportanceSampling {
        if (!(cap > 1) || Double.isInfinite(cap)) {
            throw new IllegalArgumentException("MIS cap must be > 1 and finite, got " + cap);
        }
        if (level == null) {
            throw new IllegalArgumentException("MIS level is missing");
        }
    }

    /**
     * The corrected mask for one batch.
     *
     * @param trainLogp   [sequences, tokens] behaviour log-probs recomputed by training
     * @param rolloutLogp [sequences, tokens] log-probs recorded by rollout
     * @param mask        [sequences, tokens] loss mask (0/1)
     * @return weights {@code null}; the mask with out-of-range units set to 0
     */
    public MismatchCorrection apply(float[] trainLogp, float[] rolloutLogp, float[] mask, int sequences, int tokens) {
        double[] logRatio = level.logRatios(trainLogp, rolloutLogp, mask, sequences, tokens); // [sequences, tokens]
        double logCap = Math.log(cap);
        float[] out = mask.clone(); // [sequences, tokens]
        long units = 0;
        long masked = 0;
        for (int s = 0; s < sequences; s++) {
            boolean seqCounted = false;
            for (int t = 0; t < tokens; t++) {
                int i = s * tokens + t;
                if (mask[i] == 0f) {
                    continue;
                }
                boolean inside = Math.abs(logRatio[i]) <= logCap;
                if (!inside) {
                    out[i] = 0f;
                }
                if (level == MismatchLevel.TOKEN || !seqCounted) {
                    seqCounted = true;
                    units++;
                    masked += inside ? 0 : 1;
                }
            }
        }
        double[] gap = MismatchStats.gap(trainLogp, rolloutLogp, mask);
        return new MismatchCorrection(null, out, new MismatchStats((long) gap[0], gap[1], gap[2], units, masked, 1));
    }
}
