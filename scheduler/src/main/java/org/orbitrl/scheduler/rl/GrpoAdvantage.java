package org.orbitrl.scheduler.rl;

/**
 * GRPO's group-relative advantage (DeepSeekMath): {@code A_i = r_i − mean_g(r)}, and when
 * {@code normaliseStd} is set, divided by {@code std_g(r) + epsilon}. The standard deviation is the
 * unbiased (Bessel, n−1) sample standard deviation, as TRL and verl compute it, so every group
 * needs at least two samples (a group of one is an error naming the group, not a zero advantage).
 * A group whose rewards are all equal gets advantage 0 for every sample.
 *
 * @param normaliseStd divide by the group's standard deviation
 * @param epsilon      added to the standard deviation (e.g. 1e-6); ignored without normalisation
 */
public record GrpoAdvantage(boolean normaliseStd, double epsilon) implements AdvantageEstimator {

    public GrpoAdvantage {
        if (!(epsilon >= 0) || Double.isInfinite(epsilon)) {
            throw new IllegalArgumentException("epsilon must be finite and >= 0, got " + epsilon);
        }
    }

    /** GRPO with standard-deviation normalisation and {@code epsilon = 1e-6}. */
    public static GrpoAdvantage standard() {
        return new GrpoAdvantage(true, 1e-6);
    }

    @Override
    public float[] compute(float[] rewards, Groups groups) {
        groups.requireOnePerSample(rewards, "GRPO rewards");
        AdvantageEstimator.requireFinite(rewards);
        groups.requireAtLeast(2, normaliseStd ? "GRPO (mean and std baseline)" : "GRPO (mean baseline)");
        float[] out = new float[rewards.length]; // [samples]
        for (int g = 0; g < groups.count(); g++) {
            int[] m = groups.members(g);
            double mean = 0;
            float min = Float.POSITIVE_INFINITY;
            float max = Float.NEGATIVE_INFINITY;
            for (int s : m) {
                mean += rewards[s];
                min = Math.min(min, rewards[s]);
                max = Math.max(max, rewards[s]);
            }
            mean /= m.length;
            if (min == max) {
                continue; // all equal: no signal, advantage exactly 0 (not rounding noise over a zero std)
            }
            double scale = 1;
            if (normaliseStd) {
                double ss = 0;
                for (int s : m) {
                    double d = rewards[s] - mean;
                    ss += d * d;
                }
                scale = 1 / (Math.sqrt(ss / (m.length - 1)) + epsilon);
            }
            for (int s : m) {
                out[s] = (float) ((rewards[s] - mean) * scale);
            }
        }
        return out;
    }
}
