package org.orbitrl.kernels;

/**
 * How rotary frequencies are computed, as Hugging Face's {@code modeling_rope_utils} defines the
 * {@code rope_type}s Orbit's models use: {@code default}, {@code linear} and {@code yarn}.
 *
 * @param type                 DEFAULT, LINEAR or YARN
 * @param theta                rope base ({@code rope_theta})
 * @param factor               scaling factor (LINEAR, YARN); 1 for DEFAULT
 * @param originalMaxPositions YaRN's {@code original_max_position_embeddings} (0 if absent)
 * @param maxPositions         the config's {@code max_position_embeddings}
 * @param betaFast             YaRN beta_fast (default 32)
 * @param betaSlow             YaRN beta_slow (default 1)
 * @param mscale               YaRN mscale (0 if absent)
 * @param mscaleAllDim         YaRN mscale_all_dim (0 if absent)
 * @param attentionFactorOverride YaRN attention_factor if the config gives one, else NaN
 * @param truncate             YaRN truncate (default true)
 */
public record RopeScaling(Type type, double theta, double factor, int originalMaxPositions, int maxPositions,
                          double betaFast, double betaSlow, double mscale, double mscaleAllDim,
                          double attentionFactorOverride, boolean truncate) {

    public enum Type { DEFAULT, LINEAR, YARN }

    public RopeScaling {
        if (!(theta > 0)) {
            throw new IllegalArgumentException("rope_theta must be positive, got " + theta);
        }
        if (type != Type.DEFAULT && !(factor > 0)) {
            throw new IllegalArgumentException("rope scaling factor must be positive for " + type + ", got " + factor);
        }
    }

    public static RopeScaling defaults(double theta, int maxPositions) {
        return new RopeScaling(Type.DEFAULT, theta, 1, 0, maxPositions, 32, 1, 0, 0, Double.NaN, true);
    }

    /** The rotaryDim/2 inverse frequencies. */
    public float[] inverseFrequencies(int rotaryDim) {
        int half = rotaryDim / 2;
        float[] pos = new float[half];
        for (int i = 0; i < half; i++) {
            // base ** (arange(0, dim, 2).float() / dim), evaluated in float32 as torch does
            pos[i] = (float) Math.pow(theta, (float) (2 * i) / (float) rotaryDim);
        }
        float[] inv = new float[half];
        switch (type) {
            case DEFAULT -> {
                for (int i = 0; i < half; i++) {
                    inv[i] = 1.0f / pos[i];
                }
            }
            case LINEAR -> {
                for (int i = 0; i < half; i++) {
                    inv[i] = (1.0f / pos[i]) / (float) factor;
                }
            }
            case YARN -> {
                int orig = originalMaxPositions > 0 ? originalMaxPositions : maxPositions;
                double low = correctionDim(betaFast, rotaryDim, orig);
                double high = correctionDim(betaSlow, rotaryDim, orig);
                if (truncate) {
                    low = Math.floor(low);
                    high = Math.ceil(high);
                }
                low = Math.max(low, 0);
                high = Math.min(high, rotaryDim - 1);
                if (low == high) {
                    high += 0.001;
                }
                for (int i = 0; i < half; i++) {
                    float extrapolation = 1.0f / pos[i];
                    float interpolation = 1.0f / ((float) factor * pos[i]);
                    float ramp = (float) Math.min(1, Math.max(0, (i - low) / (high - low)));
                    float extrapolationFactor = 1 - ramp;
                    inv[i] = interpolation * (1 - extrapolationFactor) + extrapolation * extrapolationFactor;
                }
            }
        }
        return inv;
    }

    /** The factor Hugging Face multiplies cos and sin by (YaRN's attention scaling); 1 otherwise. */
    public float attentionFactor() {
        if (type != Type.YARN) {
            return 1f;
        }
        if (!Double.isNaN(attentionFactorOverride)) {
            return (float) attentionFactorOverride;
        }
        if (mscale != 0 && mscaleAllDim != 0) {
            return (float) (yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAllDim));
        }
        return (float) yarnMscale(factor, 1);
    }

    /** YaRN's {@code get_mscale}: {@code 0.1·m·ln(s) + 1} for s > 1, else 1. */
    public static double yarnMscale(double scale, double m) {
        return scale <= 1 ? 1.0 : 0.1 * m * Math.log(scale) + 1.0;
    }

    private double correctionDim(double rotations, int dim, int maxPos) {
        return (dim * Math.log(maxPos / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
    }
}
