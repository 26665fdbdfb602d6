package org.orbitrl.scheduler.job;

/** The policy-gradient objective. */
public enum Algorithm {
    /** Group-relative advantages normalised by the group's std; token-level clipped ratio. */
    GRPO(0.2, 0.2),
    /** GRPO without the std and length normalisations (Dr. GRPO). */
    DR_GRPO(0.2, 0.2),
    /** The PPO clipped surrogate on group-baselined advantages, per token. */
    PPO_CLIP(0.2, 0.2),
    /** Group sequence policy optimisation: clipping on the length-normalised sequence ratio. */
    GSPO(3e-4, 4e-4);

    private final double defaultClipLow;
    private final double defaultClipHigh;

    Algorithm(double defaultClipLow, double defaultClipHigh) {
        this.defaultClipLow = defaultClipLow;
        this.defaultClipHigh = defaultClipHigh;
    }

    /** The ratio clip below 1 used when the job file does not set one. */
    public double defaultClipLow() {
        return defaultClipLow;
    }

    /** The ratio clip above 1 used when the job file does not set one. */
    public double defaultClipHigh() {
        return defaultClipHigh;
    }
}
