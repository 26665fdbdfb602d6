package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/** Token-mean, sequence-mean and fixed-constant reductions on a hand-computed ragged batch. */
class NormalisationTest {
    // Two sequences of width 3. seq 0: mask [1,1,0], logp [-1,-2,pad], A = +1 -> l = -A logp = [1, 2]
    //                           seq 1: mask [1,0,0], logp [-4,pad,pad], A = -1 -> l = [-4]
    // padding is NaN and must never be read.
    private static final float NAN = Float.NaN;
    private static final PolicyBatch B = PolicyBatch.of(2, 3, new float[] {-1, -2, NAN, -4, NAN, NAN},
            new float[] {-1, -2, NAN, -4, NAN, NAN}, new float[] {1, 1, NAN, -1, NAN, NAN},
            new float[] {1, 1, 0, 1, 0, 0});

    @Test
    void tokenMean() {
        // N = 3: loss = (1 + 2 - 4) / 3 = -1/3; grad = -A/3 = [-1/3, -1/3, 0, 1/3, 0, 0]
        Normaliser n = Normaliser.over(LossNormalisation.TOKEN_MEAN, 0, B);
        assertEquals(3, n.denominator());
        LossResult r = new PolicyGradientLoss().compute(B, n);
        RlAssert.close("loss", -1.0 / 3, r.loss(), 1e-12, 0);
        RlAssert.close("grad", new double[] {-1.0 / 3, -1.0 / 3, 0, 1.0 / 3, 0, 0}, r.grad(), 1e-7, 0);
    }

    @Test
    void sequenceMean() {
        // S = 2: loss = ((1 + 2)/2 + (-4)/1) / 2 = (1.5 - 4) / 2 = -1.25
        // grad seq 0 = -A/(2*2) = -0.25; seq 1 = -A/(1*2) = 0.5
        Normaliser n = Normaliser.over(LossNormalisation.SEQUENCE_MEAN, 0, B);
        assertEquals(2, n.denominator());
        LossResult r = new PolicyGradientLoss().compute(B, n);
        RlAssert.close("loss", -1.25, r.loss(), 1e-12, 0);
        RlAssert.close("grad", new double[] {-0.25, -0.25, 0, 0.5, 0, 0}, r.grad(), 1e-7, 0);
    }

    @Test
    void fixedConstant() {
        // C = 10: loss = (1 + 2 - 4) / 10 = -0.1; grad = -A/10
        LossResult r = new PolicyGradientLoss().compute(B, Normaliser.over(LossNormalisation.FIXED_CONSTANT, 10, B));
        RlAssert.close("loss", -0.1, r.loss(), 1e-12, 0);
        RlAssert.close("grad", new double[] {-0.1, -0.1, 0, 0.1, 0, 0}, r.grad(), 1e-7, 0);
    }

    @Test
    void sequencesWithoutMaskedTokensDoNotCount() {
        PolicyBatch withEmpty = RlAssert.randomBatch(3, 4, 5, 0.1, true);
        int nonEmpty = 0;
        for (int s = 0; s < 4; s++) {
            nonEmpty += withEmpty.maskedTokens(s) > 0 ? 1 : 0;
        }
        assertEquals(3, nonEmpty);
        assertEquals(3, Normaliser.over(LossNormalisation.SEQUENCE_MEAN, 0, withEmpty).denominator());
    }
}
