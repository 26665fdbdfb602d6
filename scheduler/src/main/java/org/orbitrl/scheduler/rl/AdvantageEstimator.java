package org.orbitrl.scheduler.rl;

/**
 * Turns per-sample rewards into per-sample advantages, relative to the other samples of the same
 * group. Implementations are pure functions; accumulation is in double.
 */
public interface AdvantageEstimator {

    /**
     * Advantages, one per sample.
     *
     * @param rewards [samples] scalar reward of each sample
     * @param groups  which samples share a prompt
     * @throws IllegalArgumentException for a non-finite reward, a length mismatch, or a group too
     *                                  small for the estimator's baseline (naming the group)
     */
    float[] compute(float[] rewards, Groups groups);

    /**
     * Broadcasts per-sequence advantages to every token: {@code out[s, t] = advantages[s]} where
     * {@code mask[s, t] = 1}, else 0.
     *
     * @param advantages [sequences]
     * @param mask       [sequences, tokens] 0/1
     * @return [sequences, tokens]
     */
    static float[] perToken(float[] advantages, float[] mask, int tokens) {
        if (tokens < 1 || mask.length != advantages.length * tokens) {
            throw new IllegalArgumentException("mask of " + mask.length + " values is not [" + advantages.length
                    + ", " + tokens + "]");
        }
        float[] out = new float[mask.length]; // [sequences, tokens]
        for (int s = 0; s < advantages.length; s++) {
            for (int t = 0; t < tokens; t++) {
                int i = s * tokens + t;
                out[i] = mask[i] != 0f ? advantages[s] : 0f;
            }
        }
        return out;
    }

    /** Throws naming the first non-finite reward. */
    static void requireFinite(float[] rewards) {
        for (int i = 0; i < rewards.length; i++) {
            if (!Float.isFinite(rewards[i])) {
                throw new IllegalArgumentException("reward of sample " + i + " is " + rewards[i]);
            }
        }
    }
}
