package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/** k1, k2, k3 on a hand-computed three-token case, alone and added to a policy loss. Tolerance 1e-7 abs. */
class KlPenaltyTest {
    // logp [-1, -2, -0.5], ref [-1.5, -1, -0.5]: d = logp - ref = [0.5, -1, 0]; token mean N = 3, beta 0.1
    private static final float[] LOGP = {-1, -2, -0.5f};
    private static final float[] REF = {-1.5f, -1, -0.5f};
    private static final PolicyBatch B = PolicyBatch.of(1, 3, LOGP, LOGP, new float[] {1, -1, 0.5f},
            new float[] {1, 1, 1}).withRefLogp(REF);
    private static final Normaliser N = Normaliser.over(LossNormalisation.TOKEN_MEAN, 0, B);

    @Test
    void k1() {
        // k1 = d = [0.5, -1, 0], sum -0.5: loss = 0.1 * -0.5 / 3; grad = 0.1 * 1 / 3
        LossResult r = new KlPenalty(KlEstimator.K1, 0.1).compute(B, N);
        RlAssert.close("loss", -0.05 / 3, r.loss(), 1e-12, 0);
        RlAssert.close("grad", new double[] {0.1 / 3, 0.1 / 3, 0.1 / 3}, r.grad(), 1e-7, 0);
        RlAssert.close("kl mean", -0.5 / 3, r.stats().klMean(), 1e-12, 0);
    }

    @Test
    void k2() {
        // k2 = d^2/2 = [0.125, 0.5, 0], sum 0.625: loss = 0.1 * 0.625 / 3; grad = 0.1 * d / 3
        LossResult r = new KlPenalty(KlEstimator.K2, 0.1).compute(B, N);
        RlAssert.close("loss", 0.0625 / 3, r.loss(), 1e-12, 0);
        RlAssert.close("grad", new double[] {0.05 / 3, -0.1 / 3, 0}, r.grad(), 1e-7, 0);
    }

    @Test
    void k3() {
        // k3 = exp(-d) - 1 + d:  d=0.5: 0.6065306597 - 0.5 = 0.1065306597
        //                        d=-1:  2.7182818285 - 2   = 0.7182818285
        //                        d=0:   0
        // sum 0.8248124882, loss = 0.1 * sum / 3 = 0.02749374961
        // grad = 0.1/3 * (1 - exp(-d)) = 0.1/3 * [0.3934693403, -1.7182818285, 0]
        LossResult r = new KlPenalty(KlEstimator.K3, 0.1).compute(B, N);
        RlAssert.close("loss", 0.02749374961, r.loss(), 1e-11, 0);
        RlAssert.close("grad", new double[] {0.1 / 3 * 0.3934693403, 0.1 / 3 * -1.7182818285, 0}, r.grad(), 1e-7, 0);
        assertEquals(3, r.stats().klTokens());
    }

    @Test
    void combinesWithThePolicyLossByTheCoefficient() {
        // PG: l = -A logp = [1, -2, 0.25] -> policy loss -0.25, grad -A/3 = [-1/3, 1/3, -1/6]
        // plus k2 with beta 0.1 (above): loss -0.25 + 0.0625/3, grad sums
        LossResult r = new TrainingLoss(new PolicyGradientLoss(), new KlPenalty(KlEstimator.K2, 0.1)).compute(B, N);
        RlAssert.close("loss", -0.25 + 0.0625 / 3, r.loss(), 1e-12, 0);
        RlAssert.close("grad", new double[] {-1.0 / 3 + 0.05 / 3, 1.0 / 3 - 0.1 / 3, -1.0 / 6}, r.grad(), 1e-7, 0);
        RlAssert.close("policy part", -0.25, r.stats().policyLoss(), 1e-12, 0);
        RlAssert.close("kl part", 0.0625 / 3, r.stats().klLoss(), 1e-12, 0);
        // coefficient 0: no reference needed, the KL term vanishes
        LossResult none = new TrainingLoss(new PolicyGradientLoss(), new KlPenalty(KlEstimator.K3, 0))
                .compute(B.withRefLogp(null), N);
        RlAssert.close("beta 0", -0.25, none.loss(), 1e-12, 0);
    }

    @Test
    void estimatorsAreNonNegativeWhereTheoryCertifies() {
        for (double d = -5; d <= 5; d += 0.25) {
            assertEquals(true, KlEstimator.K2.value(d) >= 0 && KlEstimator.K3.value(d) >= 0, "d = " + d);
        }
    }
}
