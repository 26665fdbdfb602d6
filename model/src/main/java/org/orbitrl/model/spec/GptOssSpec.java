package org.orbitrl.model.spec;

/**
 * What gpt-oss adds to a GQA MoE transformer: a learned attention sink per head, biases on
 * every projection, and the clamped SwiGLU of its experts,
 * {@code (up + 1) * gate * sigmoid(alpha * gate)} with gate clamped above and up clamped on both
 * sides at {@code swigluLimit}.
 *
 * @param swigluLimit {@code swiglu_limit} (default 7)
 * @param swigluAlpha {@code swiglu_alpha} (default 1.702)
 */
public record GptOssSpec(double swigluLimit, double swigluAlpha) {

    public GptOssSpec {
        if (!(swigluLimit > 0) || !(swigluAlpha > 0)) {
            throw new IllegalArgumentException("swiglu_limit and swiglu_alpha must be positive, got "
                    + swigluLimit + " and " + swigluAlpha);
        }
    }
}
