package org.orbitrl.scheduler.job;

/**
 * Per-token estimators of KL(π‖π_ref) from r = π_ref/π at a sampled token (Schulman's k1/k2/k3).
 */
public enum KlEstimator {
    /** {@code -log r}: unbiased, high variance, can be negative. */
    K1,
    /** {@code (log r)² / 2}: biased, low variance. */
    K2,
    /** {@code r - 1 - log r}: unbiased, never negative. */
    K3
}
