package org.orbitrl.model.spec;

import org.orbitrl.kernels.RopeScaling;

/**
 * Rotary position embedding parameters, as Hugging Face's standardized {@code rope_parameters}
 * holds them (older configs' {@code rope_theta} + {@code rope_scaling} are read into the same
 * form). Absent YaRN keys take Hugging Face's defaults.
 *
 * @param type                 {@code rope_type} (or the older {@code type}): default, linear or yarn
 * @param theta                {@code rope_theta}
 * @param factor               scaling factor; 1 for DEFAULT; for YARN, NaN when the config gives none
 *                             (then {@code max_position_embeddings / original_max_position_embeddings}, as transformers)
 * @param originalMaxPositions YaRN {@code original_max_position_embeddings}, 0 if absent
 * @param betaFast             YaRN {@code beta_fast} (default 32)
 * @param betaSlow             YaRN {@code beta_slow} (default 1)
 * @param mscale               YaRN {@code mscale}, 0 if absent
 * @param mscaleAllDim         YaRN {@code mscale_all_dim}, 0 if absent
 * @param attentionFactor      YaRN {@code attention_factor} if given, else NaN (derived from the factor)
 * @param truncate             YaRN {@code truncate} (default true)
 * @param partialRotaryFactor  fraction of the head dim that is rotated ({@code partial_rotary_factor}, default 1)
 */
public record RopeSpec(RopeScaling.Type type, double theta, double factor, int originalMaxPositions,
                       double betaFast, double betaSlow, double mscale, double mscaleAllDim,
                       double attentionFactor, boolean truncate, double partialRotaryFactor) {

    public RopeSpec {
        if (type == null) {
            throw new IllegalArgumentException("rope type must be given");
        }
        if (!(theta > 0) || Double.isInfinite(theta)) {
            throw new IllegalArgumentException("rope_theta must be a positive number, got " + theta);
        }
        boolean derived = type == RopeScaling.Type.YARN && Double.isNaN(factor);
        if (type != RopeScaling.Type.DEFAULT && !derived && !(factor > 0)) {
            throw new IllegalArgumentException("rope factor must be positive for " + type + " rope, got " + factor);
        }
        if (originalMaxPositions < 0) {
            throw new IllegalArgumentException("original_max_position_embeddings must not be negative, got "
                    + originalMaxPositions);
        }
        if (!(partialRotaryFactor > 0 && partialRotaryFactor <= 1)) {
            throw new IllegalArgumentException("partial_rotary_factor must be in (0, 1], got " + partialRotaryFactor);
        }
    }

    /** Plain rotary embedding with base {@code theta}, every dimension rotated. */
    public static RopeSpec plain(double theta) {
        return new RopeSpec(RopeScaling.Type.DEFAULT, theta, 1, 0, 32, 1, 0, 0, Double.NaN, true, 1);
    }

    /** The same parameters with another partial rotary factor. */
    public RopeSpec withPartialRotaryFactor(double f) {
        return new RopeSpec(type, theta, factor, originalMaxPositions, betaFast, betaSlow, mscale, mscaleAllDim,
                attentionFactor, truncate, f);
    }

    /** The same parameters with another base. */
    public RopeSpec withTheta(double t) {
        return new RopeSpec(type, t, factor, originalMaxPositions, betaFast, betaSlow, mscale, mscaleAllDim,
                attentionFactor, truncate, partialRotaryFactor);
    }

    /** The kernels' description of these frequencies; {@code maxPositions} is the config's {@code max_position_embeddings}. */
    public RopeScaling toRopeScaling(int maxPositions) {
        return new RopeScaling(type, theta, type == RopeScaling.Type.DEFAULT ? 1 : factor, originalMaxPositions,
                maxPositions, betaFast, betaSlow, mscale, mscaleAllDim, attentionFactor, truncate);
    }
}
