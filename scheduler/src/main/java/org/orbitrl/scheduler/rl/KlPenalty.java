package org.orbitrl.scheduler.rl;

/**
 * The KL penalty to the reference policy, added to the policy loss:
 * {@code loss_KL = β · Σ_{masked s,t} n[s] · k(logp − refLogp)} with {@code n[s]} the same
 * {@link Normaliser} token weight as the policy loss, so both terms share one reduction and one
 * accumulation rule. The reference log-probabilities come from the same base with the adapter
 * switched off. Importance weights are not applied to this term.
 *
 * @param estimator   k1, k2 or k3
 * @param coefficient β >= 0
 */
public record KlPenalty(KlEstimator estimator, double coefficient) {

    public KlPenalty {
        if (estimator == null) {
            throw new IllegalArgumentException("KL estimator is missing");
        }
        if (!(coefficient >= 0) || Double.isInfinite(coefficient)) {
            throw new IllegalArgumentException("KL coefficient must be finite and >= 0, got " + coefficient);
        }
    }

    /**
     * The penalty over {@code batch}, which must carry {@link PolicyBatch#refLogp}.
     *
     * @return loss and gradient [sequences, tokens] d loss_KL / d logp; its statistics fill only
     *         the KL fields
     */
    public LossResult compute(PolicyBatch b, Normaliser normaliser) {
        if (b.refLogp() == null) {
            throw new IllegalArgumentException("KL penalty (" + estimator + ") needs reference log-probs, the batch has none");
        }
        int tokens = b.tokens();
        float[] grad = new float[b.sequences() * tokens]; // [sequences, tokens]
        double loss = 0;
        double klSum = 0;
        long n = 0;
        for (int s = 0; s < b.sequences(); s++) {
            int ts = b.maskedTokens(s);
            if (ts == 0) {
                continue;
            }
            double scale = coefficient * normaliser.tokenWeight(ts);
            for (int t = 0; t < tokens; t++) {
                int i = s * tokens + t;
                if (b.mask()[i] == 0f) {
                    continue;
                }
                double d = (double) b.logp()[i] - b.refLogp()[i];
                double k = estimator.value(d);
                loss += scale * k;
                grad[i] = (float) (scale * estimator.derivative(d));
                klSum += k;
                n++;
            }
        }
        LossStats stats = new LossStats(0, 0, 0, 0, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY, 0, 0, n,
                klSum, loss);
        return new LossResult(loss, b.sequences(), tokens, grad, stats);
    }
}
