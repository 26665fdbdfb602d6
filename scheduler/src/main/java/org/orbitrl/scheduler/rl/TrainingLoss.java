package org.orbitrl.scheduler.rl;

/**
 * The full objective of one update: a policy loss plus an optional KL penalty, both reduced with
 * the same {@link Normaliser}: {@code loss = policy + β·KL}, {@code grad = grad_policy + grad_KL}.
 *
 * @param policy the policy surrogate
 * @param kl     the KL penalty, or {@code null} for none
 */
public record TrainingLoss(PolicyLoss policy, KlPenalty kl) {

    public TrainingLoss {
        if (policy == null) {
            throw new IllegalArgumentException("policy loss is missing");
        }
    }

    /** The loss of one batch or micro-batch; {@code normaliser} must cover the whole batch. */
    public LossResult compute(PolicyBatch batch, Normaliser normaliser) {
        LossResult p = policy.compute(batch, normaliser);
        return kl == null || kl.coefficient() == 0 ? p : p.plus(kl.compute(batch, normaliser));
    }
}
