package org.orbitrl.scheduler.rl;

/**
 * The unit a train/rollout importance ratio is taken over, for {@link TruncatedImportanceSampling}
 * and {@link MaskedImportanceSampling}. With {@code δ[t] = oldLogp_train[t] − logp_rollout[t]} over
 * the masked tokens {@code M} of a sequence:
 * <ul>
 *   <li>{@link #TOKEN}: one ratio per token, {@code exp(δ[t])}.</li>
 *   <li>{@link #SEQUENCE}: one ratio per sequence, the product of its token ratios,
 *       {@code exp(Σ_{t∈M} δ[t])} (the importance weight of the whole sequence).</li>
 *   <li>{@link #SEQUENCE_GEOMETRIC}: one ratio per sequence, the geometric mean of its token
 *       ratios, {@code exp((1/|M|) Σ_{t∈M} δ[t])}, which does not grow with length.</li>
 * </ul>
 */
public enum MismatchLevel {
    TOKEN,
    SEQUENCE,
    SEQUENCE_GEOMETRIC;

    /**
     * The log-ratio of every masked token's unit (the token, or its sequence), NaN elsewhere.
     *
     * @return [sequences, tokens]
     */
    double[] logRatios(float[] trainLogp, float[] rolloutLogp, float[] mask, int sequences, int tokens) {
        int n = sequences * tokens;
        if (tokens < 1 || trainLogp.length != n || rolloutLogp.length != n || mask.length != n) {
            throw new IllegalArgumentException("log-probs (" + trainLogp.length + ", " + rolloutLogp.length
                    + ") and mask (" + mask.length + ") must all be [" + sequences + ", " + tokens + "]");
        }
        double[] out = new double[n]; // [sequences, tokens]
        java.util.Arrays.fill(out, Double.NaN);
        for (int s = 0; s < sequences; s++) {
            double sum = 0;
            int count = 0;
            for (int t = 0; t < tokens; t++) {
                int i = s * tokens + t;
                if (mask[i] == 1f) {
                    double d = (double) trainLogp[i] - rolloutLogp[i];
                    out[i] = d;
                    sum += d;
                    count++;
                } else if (mask[i] != 0f) {
                    throw new IllegalArgumentException("mask[" + s + ", " + t + "] is " + mask[i] + ", expected 0 or 1");
                }
            }
            if (this != TOKEN && count > 0) {
                double unit = this == SEQUENCE ? sum : sum / count;
                for (int t = 0; t < tokens; t++) {
                    int i = s * tokens + t;
                    if (mask[i] != 0f) {
                        out[i] = unit;
                    }
                }
            }
        }
        return out;
    }
}
