package org.orbitrl.scheduler.rl;

/**
 * AdamW hyper-parameters (Loshchilov and Hutter, "Decoupled Weight Decay Regularization").
 *
 * @param beta1       first-moment decay, in [0, 1) (0.9)
 * @param beta2       second-moment decay, in [0, 1) (0.999)
 * @param epsilon     added to the bias-corrected second-moment root, > 0 (1e-8)
 * @param weightDecay decoupled decay, >= 0 (0.01)
 * @param maxGradNorm global-norm clipping threshold; <= 0 turns clipping off
 */
public record AdamWConfig(double beta1, double beta2, double epsilon, double weightDecay, double maxGradNorm) {

    public AdamWConfig {
        if (!(beta1 >= 0 && beta1 < 1)) {
            throw new IllegalArgumentException("beta1 must be in [0, 1), got " + beta1);
        }
        if (!(beta2 >= 0 && beta2 < 1)) {
            throw new IllegalArgumentException("beta2 must be in [0, 1), got " + beta2);
        }
        if (!(epsilon > 0) || Double.isInfinite(epsilon)) {
            throw new IllegalArgumentException("epsilon must be positive and finite, got " + epsilon);
        }
        if (!(weightDecay >= 0) || Double.isInfinite(weightDecay)) {
            throw new IllegalArgumentException("weightDecay must be finite and >= 0, got " + weightDecay);
        }
        if (Double.isNaN(maxGradNorm) || Double.isInfinite(maxGradNorm)) {
            throw new IllegalArgumentException("maxGradNorm must be finite (<= 0 for no clipping), got " + maxGradNorm);
        }
    }

    /** PyTorch's defaults (0.9, 0.999, 1e-8, 0.01) with clipping at norm 1. */
    public static AdamWConfig defaults() {
        return new AdamWConfig(0.9, 0.999, 1e-8, 0.01, 1.0);
    }
}
