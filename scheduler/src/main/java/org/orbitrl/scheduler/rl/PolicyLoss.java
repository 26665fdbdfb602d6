package org.orbitrl.scheduler.rl;

/**
 * A policy-gradient surrogate over a batch of sequences. The loss is
 * {@code Σ_{masked s,t} w[s,t] · n[s] · ℓ[s,t]}, with {@code w} the batch's importance weights
 * (detached) and {@code n[s]} the {@link Normaliser}'s token weight; the gradient is the exact
 * derivative of that value with respect to every {@code logp[s, t]}.
 */
public interface PolicyLoss {

    /**
     * The loss of {@code batch} (a whole batch or one micro-batch of it), normalised by
     * {@code normaliser}, which must have been computed over the whole batch.
     */
    LossResult compute(PolicyBatch batch, Normaliser normaliser);
}
