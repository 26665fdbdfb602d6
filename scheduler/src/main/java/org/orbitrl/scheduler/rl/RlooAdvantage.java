package org.orbitrl.scheduler.rl;

/**
 * REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): the baseline of sample
 * {@code i} is the mean reward of the other samples of its group,
 * {@code A_i = r_i − (Σ_g r − r_i)/(n − 1)}, which equals {@code n/(n−1)·(r_i − mean_g r)}.
 * Every group needs at least two samples; a group whose rewards are all equal gets 0.
 */
public record RlooAdvantage() implements AdvantageEstimator {

    @Override
    public float[] compute(float[] rewards, Groups groups) {
        groups.requireOnePerSample(rewards, "RLOO rewards");
        AdvantageEstimator.requireFinite(rewards);
        groups.requireAtLeast(2, "RLOO (leave-one-out baseline)");
        float[] out = new float[rewards.length]; // [samples]
        for (int g = 0; g < groups.count(); g++) {
            int[] m = groups.members(g);
            double sum = 0;
            float min = Float.POSITIVE_INFINITY;
            float max = Float.NEGATIVE_INFINITY;
            for (int s : m) {
                sum += rewards[s];
                min = Math.min(min, rewards[s]);
                max = Math.max(max, rewards[s]);
            }
            if (min == max) {
                continue; // all equal: advantage exactly 0
            }
            for (int s : m) {
                double baseline = (sum - rewards[s]) / (m.length - 1);
                out[s] = (float) (rewards[s] - baseline);
            }
        }
        return out;
    }
}
