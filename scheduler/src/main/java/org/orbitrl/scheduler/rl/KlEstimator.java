package org.orbitrl.scheduler.rl;

/**
 * Per-token estimators of KL(π ‖ π_ref) from tokens sampled by π (J. Schulman, "Approximating KL
 * divergence", 2020), each a function of {@code d = logp − refLogp} with its derivative in
 * {@code logp}:
 * <pre>
 *   k1 = d                     dk1/dlogp = 1
 *   k2 = d²/2                  dk2/dlogp = d
 *   k3 = exp(−d) − 1 + d       dk3/dlogp = 1 − exp(−d)
 * </pre>
 * k1 is unbiased with high variance and can be negative; k2 is biased, low variance, >= 0;
 * k3 is unbiased, low variance and >= 0 (the GRPO paper's choice).
 */
public enum KlEstimator {
    K1 {
        @Override
        public double value(double d) {
            return d;
        }

        @Override
        public double derivative(double d) {
            return 1;
        }
    },
    K2 {
        @Override
        public double value(double d) {
            return 0.5 * d * d;
        }

        @Override
        public double derivative(double d) {
            return d;
        }
    },
    K3 {
        @Override
        public double value(double d) {
            return Math.expm1(-d) + d;
        }

        @Override
        public double derivative(double d) {
            return -Math.expm1(-d);
        }
    };

    /** The estimate for one token, {@code d = logp − refLogp}. */
    public abstract double value(double d);

    /** Its derivative with respect to {@code logp}. */
    public abstract double derivative(double d);
}
