package org.orbitrl.kernels;

/**
 * Parameters of one attention call.
 *
 * @param scale         softmax scale applied to q·k (usually {@code 1/sqrt(D)}, times YaRN's mscale² where a model asks)
 * @param slidingWindow 0 for full causal attention, else the window length in tokens
 * @param sinks         null, or f32 [Hq]: a per-head logit that joins every softmax denominator
 *                      and contributes no value (gpt-oss, DeepSeek V4)
 */
public record AttentionSpec(float scale, int slidingWindow, Tensor sinks) {
    public AttentionSpec {
        if (!(scale > 0) || Float.isInfinite(scale)) {
            throw new IllegalArgumentException("attention scale must be positive and finite, got " + scale);
        }
        if (slidingWindow < 0) {
            throw new IllegalArgumentException("sliding window must be >= 0, got " + slidingWindow);
        }
    }

    public static AttentionSpec causal(int headDim) {
        return new AttentionSpec((float) (1.0 / Math.sqrt(headDim)), 0, null);
    }
}
