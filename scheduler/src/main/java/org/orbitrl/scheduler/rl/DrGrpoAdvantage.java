package org.orbitrl.scheduler.rl;

/**
 * Dr.GRPO's advantage ("Understanding R1-Zero-Like Training", Liu et al. 2025):
 * {@code A_i = r_i − mean_g(r)}, with no division by the group's standard deviation. Its other
 * half, no per-sequence length normalisation, is a property of the loss: use
 * {@link Normaliser#fixed} (sum over tokens divided by a constant) with it.
 * Every group needs at least two samples.
 */
public record DrGrpoAdvantage() implements AdvantageEstimator {

    @Override
    public float[] compute(float[] rewards, Groups groups) {
        groups.requireOnePerSample(rewards, "Dr.GRPO rewards");
        AdvantageEstimator.requireFinite(rewards);
        groups.requireAtLeast(2, "Dr.GRPO (mean baseline)");
        return new GrpoAdvantage(false, 0).compute(rewards, groups);
    }
}
