package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/**
 * PPO-clip, GSPO and plain policy gradient on hand-computed three-token cases. Ratios come from f32
 * log-probs ({@code old = 0}, {@code logp = (float) ln r}), so values match the hand numbers to
 * about 1e-7 relative; tolerance 1e-6 abs + 1e-6 rel.
 */
class PolicyLossTest {
    private static final double ATOL = 1e-6;
    private static final double RTOL = 1e-6;
    private static final float[] ONES = {1, 1, 1};

    private static float[] logs(double... ratios) {
        float[] f = new float[ratios.length];
        for (int i = 0; i < f.length; i++) {
            f[i] = (float) Math.log(ratios[i]);
        }
        return f;
    }

    private static PolicyBatch oneSequence(float[] logp, float[] adv) {
        return PolicyBatch.of(1, 3, logp, new float[3], adv, ONES);
    }

    @Test
    void ppoClipHigherHandCase() {
        // eps_low 0.2, eps_high 0.28 (DAPO); token mean over N = 3
        // t0: r 1.1, A +1: 1.1 <= 1.28 unclipped: l = -1.1,        grad = -A r / 3 = -1.1/3
        // t1: r 1.5, A +2: 1.5 >  1.28 clipped:   l = -1.28*2 = -2.56, grad 0
        // t2: r 0.5, A -1: 0.5 <  0.8  clipped:   l = -0.8*(-1) = 0.8,  grad 0
        // loss = (-1.1 - 2.56 + 0.8) / 3 = -2.86 / 3
        PolicyBatch b = oneSequence(logs(1.1, 1.5, 0.5), new float[] {1, 2, -1});
        LossResult r = new PpoClipLoss(0.2, 0.28).compute(b, Normaliser.over(LossNormalisation.TOKEN_MEAN, 0, b));
        RlAssert.close("loss", -2.86 / 3, r.loss(), ATOL, RTOL);
        RlAssert.close("grad", new double[] {-1.1 / 3, 0, 0}, r.grad(), ATOL, RTOL);
        assertEquals(0f, r.grad()[1]);
        assertEquals(0f, r.grad()[2]);
        LossStats s = r.stats();
        assertEquals(3, s.tokens());
        assertEquals(1, s.clippedHigh());
        assertEquals(1, s.clippedLow());
        RlAssert.close("clip fraction", 2.0 / 3, s.clipFraction(), 1e-15, 0);
        RlAssert.close("ratio mean", 3.1 / 3, s.ratioMean(), ATOL, RTOL);
        RlAssert.close("ratio max", 1.5, s.ratioMax(), ATOL, RTOL);
        RlAssert.close("ratio min", 0.5, s.ratioMin(), ATOL, RTOL);
    }

    @Test
    void ppoPessimisticSideKeepsGradient() {
        // Outside the clip range but on the side where the unclipped term is the minimum:
        // t0: r 1.5, A -1: -min(-1.5, -1.2) = 1.5,   grad = -A r = 1.5
        // t1: r 0.5, A +1: -min(0.5, 0.8)  = -0.5,   grad = -0.5
        // t2: r 1.0, A  0: 0,                        grad = 0 (not counted as clipped)
        // fixed constant C = 2: loss = (1.5 - 0.5 + 0) / 2 = 0.5, grads / 2
        PolicyBatch b = oneSequence(logs(1.5, 0.5, 1.0), new float[] {-1, 1, 0});
        LossResult r = PpoClipLoss.symmetric(0.2).compute(b, Normaliser.fixed(2));
        RlAssert.close("loss", 0.5, r.loss(), ATOL, RTOL);
        RlAssert.close("grad", new double[] {0.75, -0.25, 0}, r.grad(), ATOL, RTOL);
        assertEquals(0, r.stats().clippedHigh() + r.stats().clippedLow());
    }

    @Test
    void gspoUnclippedHandCase() {
        // log ratios [ln2, 0, -ln2]: s = exp(0/3) = 1, A = 1 on all three tokens, one sequence,
        // sequence mean (S = 1, weight 1/3 per token): loss = 3 * (1/3) * (-1 * 1) = -1
        // grad_u = (s/T) * sum_t (1/3)(-A) = (1/3) * (-1) = -1/3 for every token
        PolicyBatch b = oneSequence(logs(2, 1, 0.5), ONES);
        LossResult r = new GspoLoss(3e-4, 4e-4).compute(b, Normaliser.over(LossNormalisation.SEQUENCE_MEAN, 0, b));
        RlAssert.close("loss", -1, r.loss(), ATOL, RTOL);
        RlAssert.close("grad", new double[] {-1.0 / 3, -1.0 / 3, -1.0 / 3}, r.grad(), ATOL, RTOL);
        RlAssert.close("ratio", 1, r.stats().ratioMean(), ATOL, RTOL);
    }

    @Test
    void gspoClipsWholeSequence() {
        // log ratios [ln2, ln2, 0]: s = exp(2 ln2 / 3) = 2^(2/3) = 1.587401
        // A = +1: s > 1 + 4e-4, clipped: loss = -(1 + 4e-4), every token's gradient 0
        PolicyBatch b = oneSequence(logs(2, 2, 1), ONES);
        Normaliser n = Normaliser.over(LossNormalisation.SEQUENCE_MEAN, 0, b);
        LossResult r = new GspoLoss(3e-4, 4e-4).compute(b, n);
        RlAssert.close("clipped loss", -(1 + 4e-4), r.loss(), ATOL, RTOL);
        RlAssert.bitwise("clipped grad", new float[] {0, 0, 0}, r.grad());
        assertEquals(3, r.stats().clippedHigh());
        // A = -1: -min(-s, -(1+eps)) = s = 1.587401 unclipped; grad = (s/3) * 3 * (1/3) * 1 = s/3 = 0.529134
        double s = Math.pow(2, 2.0 / 3);
        LossResult neg = new GspoLoss(3e-4, 4e-4).compute(oneSequence(logs(2, 2, 1), new float[] {-1, -1, -1}), n);
        RlAssert.close("loss", s, neg.loss(), ATOL, RTOL);
        RlAssert.close("grad", new double[] {s / 3, s / 3, s / 3}, neg.grad(), ATOL, RTOL);
    }

    @Test
    void plainPolicyGradientHandCase() {
        // logp [-1, -2, -0.5], A [1, -1, 0.5]: l = -A logp = [1, -2, 0.25], sum -0.75
        // token mean N = 3: loss -0.25, grad = -A/3 = [-1/3, 1/3, -1/6]
        PolicyBatch b = PolicyBatch.of(1, 3, new float[] {-1, -2, -0.5f}, new float[] {-1, -2, -0.5f},
                new float[] {1, -1, 0.5f}, ONES);
        LossResult r = new PolicyGradientLoss().compute(b, Normaliser.over(LossNormalisation.TOKEN_MEAN, 0, b));
        RlAssert.close("loss", -0.25, r.loss(), 1e-12, 0);
        RlAssert.close("grad", new double[] {-1.0 / 3, 1.0 / 3, -1.0 / 6}, r.grad(), 1e-7, 0);
        RlAssert.close("ratio mean", 1, r.stats().ratioMean(), 0, 0);
    }

    @Test
    void importanceWeightsScaleLossAndGradient() {
        // PG case above with weights [2, 0.5, 0]: l*w = [2, -1, 0] -> loss 1/3; grad = -A w / 3 = [-2/3, 1/6, 0]
        PolicyBatch b = new PolicyBatch(1, 3, new float[] {-1, -2, -0.5f}, new float[] {-1, -2, -0.5f},
                new float[] {1, -1, 0.5f}, ONES, new float[] {2, 0.5f, 0}, null);
        LossResult r = new PolicyGradientLoss().compute(b, Normaliser.over(LossNormalisation.TOKEN_MEAN, 0, b));
        RlAssert.close("loss", 1.0 / 3, r.loss(), 1e-12, 0);
        RlAssert.close("grad", new double[] {-2.0 / 3, 1.0 / 6, 0}, r.grad(), 1e-7, 0);
    }

    @Test
    void badBatchesAreErrors() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PolicyBatch.of(1, 3,
                new float[3], new float[3], new float[3], new float[] {1, 0.5f, 0}));
        assertTrue(e.getMessage().contains("mask[0, 1]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> PolicyBatch.of(2, 3, new float[6], new float[5],
                new float[6], new float[6]));
        assertTrue(e.getMessage().contains("oldLogp"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new KlPenalty(KlEstimator.K3, 0.1)
                .compute(PolicyBatch.of(1, 3, new float[3], new float[3], new float[3], ONES), Normaliser.fixed(1)));
        assertTrue(e.getMessage().contains("reference"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Normaliser.over(LossNormalisation.TOKEN_MEAN, 0,
                PolicyBatch.of(1, 3, new float[3], new float[3], new float[3], new float[3])));
        assertTrue(e.getMessage().contains("no masked tokens"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new PpoClipLoss(1.0, 0.2));
    }
}
