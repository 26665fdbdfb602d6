package org.orbitrl.scheduler.rl;

/**
 * How per-token losses {@code ℓ[s, t]} over masked tokens are reduced to one number.
 * <ul>
 *   <li>{@link #TOKEN_MEAN}: {@code Σ ℓ / N}, N = masked tokens in the whole batch (DAPO).</li>
 *   <li>{@link #SEQUENCE_MEAN}: {@code (1/S) Σ_s (1/T_s) Σ_t ℓ[s, t]}, T_s = masked tokens of
 *       sequence s, S = sequences with at least one masked token in the whole batch (GRPO).</li>
 *   <li>{@link #FIXED_CONSTANT}: {@code Σ ℓ / C} for a constant C chosen by the job, such as the
 *       maximum response length times the number of sequences (Dr.GRPO).</li>
 * </ul>
 */
public enum LossNormalisation {
    TOKEN_MEAN,
    SEQUENCE_MEAN,
    FIXED_CONSTANT
}
