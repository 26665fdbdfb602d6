package org.orbitrl.model.spec.internal;

import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.model.spec.RopeSpec;

/**
 * Reads rotary parameters from either schema: transformers 5's {@code rope_parameters} (theta
 * inside) or the older top-level {@code rope_theta} with {@code rope_scaling} (whose kind is
 * under {@code type} or {@code rope_type}).
 */
public final class RopeParser {
    private RopeParser() {
    }

    /**
     * The rope of a config that has one set of rotary parameters.
     *
     * @param defaultTheta   the family's {@code rope_theta} default
     * @param defaultScaling parameters used when the config has neither {@code rope_parameters} nor
     *                       {@code rope_scaling} (null: plain rope)
     * @param defaultPartial {@code partial_rotary_factor} when the config has none
     */
    public static RopeSpec parse(JsonFields f, double defaultTheta, RopeSpec defaultScaling, double defaultPartial) {
        double topTheta = f.optDouble("rope_theta", defaultTheta);
        double partial = f.optDouble("partial_rotary_factor", defaultPartial);
        JsonFields params = f.optObject("rope_parameters");
        if (params == null) {
            params = f.optObject("rope_scaling");
        }
        if (params == null) {
            RopeSpec base = defaultScaling != null ? defaultScaling.withTheta(topTheta) : RopeSpec.plain(topTheta);
            return check(f, "rope_theta", () -> base.withPartialRotaryFactor(partial));
        }
        return fromParams(params, topTheta, partial);
    }

    /** One rotary parameter object ({@code rope_parameters}, {@code rope_scaling}, or a V4 sub-object). */
    public static RopeSpec fromParams(JsonFields p, double thetaIfAbsent, double partialIfAbsent) {
        String typeName = p.has("rope_type") ? p.reqString("rope_type") : p.optString("type", "default");
        String typeKey = p.has("rope_type") ? "rope_type" : "type";
        RopeScaling.Type type = switch (typeName) {
            case "default" -> RopeScaling.Type.DEFAULT;
            case "linear" -> RopeScaling.Type.LINEAR;
            case "yarn" -> RopeScaling.Type.YARN;
            default -> throw p.error(typeKey, "unsupported rope type '" + typeName
                    + "'; Orbit supports default, linear and yarn");
        };
        double theta = p.optDouble("rope_theta", thetaIfAbsent);
        // YaRN without a factor derives it from the position counts (transformers does the same)
        double factor = switch (type) {
            case DEFAULT -> p.optDouble("factor", 1);
            case LINEAR -> p.reqDouble("factor");
            case YARN -> p.optDouble("factor", Double.NaN);
        };
        int originalMax = p.optInt("original_max_position_embeddings", 0);
        double betaFast = p.optDouble("beta_fast", 32);
        double betaSlow = p.optDouble("beta_slow", 1);
        double mscale = p.optDouble("mscale", 0);
        double mscaleAllDim = p.optDouble("mscale_all_dim", 0);
        double attentionFactor = p.optDouble("attention_factor", Double.NaN);
        boolean truncate = p.optBool("truncate", true);
        double partial = p.optDouble("partial_rotary_factor", partialIfAbsent);
        return check(p, null, () -> new RopeSpec(type, theta, factor, originalMax, betaFast, betaSlow, mscale,
                mscaleAllDim, attentionFactor, truncate, partial));
    }

    private static RopeSpec check(JsonFields f, String key, java.util.function.Supplier<RopeSpec> make) {
        try {
            return make.get();
        } catch (IllegalArgumentException e) {
            throw f.error(key, e.getMessage());
        }
    }
}
