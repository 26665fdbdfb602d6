package org.orbitrl.kernels;

/**
 * How rotary frequencies are computed, as Hugging Face's {@code modeling_rope_utils} defines the
 * {@code rope_type}s Orbit's models use: {@code default}, {@code linear} and {@code yarn}. The
 * arithmetic follows transformers step for step, including where it runs in float32 (the
 * exponent {@code arange(0, dim, 2) / dim}, the powers, reciprocals, the YaRN ramp and blend)
 * and where in double (YaRN's correction range and attention factor), so the frequencies agree
 * with transformers to the last bit wherever its float32 {@code pow} is correctly rounded.
 *
 * @param type                 DEFAULT, LINEAR or YARN
 * @param theta                rope base ({@code rope_theta})
 * @param factor               scaling factor (LINEAR, YARN); 1 for DEFAULT. For YARN, NaN means absent:
 *                             {@code max_position_embeddings / original_max_position_embeddings} is used
 * @param originalMaxPositions YaRN's {@code original_max_position_embeddings}; 0 if absent, then
 *                             {@code maxPositions} (as transformers' {@code standardize_rope_params})
 * @param maxPositions         the config's {@code max_position_embeddings}
 * @param betaFast             YaRN beta_fast (32 when absent or 0, as transformers' {@code or 32})
 * @param betaSlow             YaRN beta_slow (1 when absent or 0)
 * @param mscale               YaRN mscale (0 if absent)
 * @param mscaleAllDim         YaRN mscale_all_dim (0 if absent)
 * @param attentionFactorOverride YaRN attention_factor if the config gives one, else NaN
 * @param truncate             YaRN truncate (default true): floor/ceil the correction range
 */
public record RopeScaling(Type type, double theta, double factor, int originalMaxPositions, int maxPositions,
                          double betaFast, double betaSlow, double mscale, double mscaleAllDim,
                          double attentionFactorOverride, boolean truncate) {

    public enum Type { DEFAULT, LINEAR, YARN }

    public RopeScaling {
        if (type == null) {
            throw new IllegalArgumentException("rope type must be given");
        }
        if (!(theta > 0) || Double.isInfinite(theta)) {
            throw new IllegalArgumentException("rope_theta must be positive, got " + theta);
        }
        boolean derivedFactor = type == Type.YARN && Double.isNaN(factor);
        if (type != Type.DEFAULT && !derivedFactor && !(factor > 0)) {
            throw new IllegalArgumentException("rope scaling factor must be positive for " + type + ", got " + factor);
        }
        if (derivedFactor && maxPositions <= 0) {
            throw new IllegalArgumentException("YaRN without a factor derives it from max_position_embeddings, got "
                    + maxPositions);
        }
        if (originalMaxPositions < 0) {
            throw new IllegalArgumentException("original_max_position_embeddings must not be negative, got " + originalMaxPositions);
        }
        if (betaFast == 0) {
            betaFast = 32;
        }
        if (betaSlow == 0) {
            betaSlow = 1;
        }
    }

    public static RopeScaling defaults(double theta, int maxPositions) {
        return new RopeScaling(Type.DEFAULT, theta, 1, 0, maxPositions, 32, 1, 0, 0, Double.NaN, true);
    }

    /**
     * The rotary dimension transformers derives: {@code int(headDim * partial_rotary_factor)}
     * (truncation of the double product).
     */
    public static int rotaryDim(int headDim, double partialRotaryFactor) {
        return (int) (headDim * partialRotaryFactor);
    }

    /** YaRN's scaling factor: the given one, or {@code maxPositions / originalMaxPositions} when absent. */
    public double effectiveFactor() {
        if (type == Type.YARN && Double.isNaN(factor)) {
            return (double) maxPositions / originalMaxPositionsOrDefault();
        }
        return factor;
    }

    /** YaRN's {@code original_max_position_embeddings}: the given one, else {@code maxPositions}. */
    public int originalMaxPositionsOrDefault() {
        return originalMaxPositions > 0 ? originalMaxPositions : maxPositions;
    }

    /** The rotaryDim/2 inverse frequencies, f32 as transformers computes them. */
    public float[] inverseFrequencies(int rotaryDim) {
        if (rotaryDim <= 0 || rotaryDim % 2 != 0) {
            throw new IllegalArgumentException("rotary dimension must be positive and even, got " + rotaryDim);
        }
        int half = rotaryDim / 2;
        // base ** (arange(0, dim, 2).float() / dim): exponent and power in float32
        float base = (float) theta;
        float[] pos = new float[half];
        for (int i = 0; i < half; i++) {
            float exponent = (float) (2 * i) / (float) rotaryDim;
            pos[i] = (float) Math.pow(base, exponent);
        }
        float[] inv = new float[half];
        switch (type) {
            case DEFAULT -> {
                for (int i = 0; i < half; i++) {
                    inv[i] = 1.0f / pos[i];
                }
            }
            case LINEAR -> {
                float f = (float) factor;
                for (int i = 0; i < half; i++) {
                    inv[i] = (1.0f / pos[i]) / f;
                }
            }
            case YARN -> {
                float f = (float) effectiveFactor();
                int orig = originalMaxPositionsOrDefault();
                // correction range in double (Python floats), over the rotary dimension
                double low = correctionDim(betaFast, rotaryDim, orig);
                double high = correctionDim(betaSlow, rotaryDim, orig);
                if (truncate) {
                    low = Math.floor(low);
                    high = Math.ceil(high);
                }
                low = Math.max(low, 0);
                high = Math.min(high, rotaryDim - 1);
                if (low == high) {
                    high += 0.001; // transformers' guard against a zero-width ramp
                }
                // linear ramp in float32: (arange(half) - low) / (high - low), clamped to [0, 1]
                float lowF = (float) low;
                float widthF = (float) (high - low);
                for (int i = 0; i < half; i++) {
                    float extrapolation = 1.0f / pos[i];
                    float interpolation = 1.0f / (f * pos[i]);
                    float ramp = Math.min(1f, Math.max(0f, ((float) i - lowF) / widthF));
                    float extrapolationFactor = 1f - ramp;
                    inv[i] = interpolation * (1f - extrapolationFactor) + extrapolation * extrapolationFactor;
                }
            }
        }
        return inv;
    }

    /**
     * The factor transformers multiplies cos and sin by: for YaRN the config's
     * {@code attention_factor}, else {@code get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)}
     * when both are given and non-zero, else {@code get_mscale(factor)}; 1 for the other types.
     */
    public float attentionFactor() {
        if (type != Type.YARN) {
            return 1f;
        }
        if (!Double.isNaN(attentionFactorOverride)) {
            return (float) attentionFactorOverride;
        }
        double f = effectiveFactor();
        if (mscale != 0 && mscaleAllDim != 0) {
            return (float) (yarnMscale(f, mscale) / yarnMscale(f, mscaleAllDim));
        }
        return (float) yarnMscale(f, 1);
    }

    /** YaRN's {@code get_mscale}: {@code 0.1·m·ln(s) + 1} for s > 1, else 1. */
    public static double yarnMscale(double scale, double m) {
        return scale <= 1 ? 1.0 : 0.1 * m * Math.log(scale) + 1.0;
    }

    /** Inverse of the rotation count: the dimension whose wavelength fits {@code rotations} times in {@code maxPos}. */
    private double correctionDim(double rotations, int dim, int maxPos) {
        return (dim * Math.log(maxPos / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
    }
}
