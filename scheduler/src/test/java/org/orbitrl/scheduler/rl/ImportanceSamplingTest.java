package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** TIS and MIS per token and per sequence on a hand-computed three-token case. Tolerance 1e-6 rel. */
class ImportanceSamplingTest {
    // train old logp [-1, -1, -1], rollout logp [-1.5, -0.5, -2]: delta = [0.5, -0.5, 1.0]
    // token ratios exp(delta) = [1.6487213, 0.6065307, 2.7182818]; sum of deltas 1.0, mean 1/3
    // padding column 3 is masked out and NaN.
    private static final float NAN = Float.NaN;
    private static final float[] TRAIN = {-1, -1, -1, NAN};
    private static final float[] ROLLOUT = {-1.5f, -0.5f, -2, NAN};
    private static final float[] MASK = {1, 1, 1, 0};

    @Test
    void tisPerToken() {
        // cap 2: weights [1.6487213, 0.6065307, 2 (truncated)]
        MismatchCorrection c = new TruncatedImportanceSampling(2, MismatchLevel.TOKEN).apply(TRAIN, ROLLOUT, MASK, 1, 4);
        RlAssert.close("weights", new double[] {Math.exp(0.5), Math.exp(-0.5), 2}, java.util.Arrays.copyOf(c.weights(), 3),
                0, 1e-6);
        assertArrayEquals(MASK, c.mask());
        assertEquals(3, c.stats().units());
        assertEquals(1, c.stats().corrected());
        // gap: mean |delta| = 2/3, max 1
        RlAssert.close("mean gap", 2.0 / 3, c.stats().meanAbsGap(), 0, 1e-12);
        RlAssert.close("max gap", 1, c.stats().maxAbsGap(), 0, 1e-12);
        RlAssert.close("weight mean", (Math.exp(0.5) + Math.exp(-0.5) + 2) / 3, c.stats().weightMean(), 0, 1e-6);
    }

    @Test
    void tisPerSequence() {
        // product of ratios exp(1.0) = 2.718 > cap 2: every token weight 2, one sequence truncated
        MismatchCorrection c = new TruncatedImportanceSampling(2, MismatchLevel.SEQUENCE).apply(TRAIN, ROLLOUT, MASK, 1, 4);
        RlAssert.close("weights", new double[] {2, 2, 2}, java.util.Arrays.copyOf(c.weights(), 3), 0, 1e-7);
        assertEquals(1, c.stats().units());
        assertEquals(1, c.stats().corrected());
        // geometric mean exp(1/3) = 1.3956124 < 2: kept
        MismatchCorrection g = new TruncatedImportanceSampling(2, MismatchLevel.SEQUENCE_GEOMETRIC)
                .apply(TRAIN, ROLLOUT, MASK, 1, 4);
        double w = Math.exp(1.0 / 3);
        RlAssert.close("weights", new double[] {w, w, w}, java.util.Arrays.copyOf(g.weights(), 3), 0, 1e-6);
        assertEquals(0, g.stats().corrected());
    }

    @Test
    void misPerToken() {
        // cap 2: keep |delta| <= ln 2 = 0.693: [0.5 kept, -0.5 kept, 1.0 masked]
        MismatchCorrection c = new MaskedImportanceSampling(2, MismatchLevel.TOKEN).apply(TRAIN, ROLLOUT, MASK, 1, 4);
        assertArrayEquals(new float[] {1, 1, 0, 0}, c.mask());
        assertNull(c.weights());
        assertEquals(1, c.stats().corrected());
        assertEquals(3, c.stats().units());
    }

    @Test
    void misPerSequence() {
        // product exp(1.0) outside [1/2, 2]: the whole sequence is masked; geometric exp(1/3) inside: kept
        assertArrayEquals(new float[] {0, 0, 0, 0}, new MaskedImportanceSampling(2, MismatchLevel.SEQUENCE)
                .apply(TRAIN, ROLLOUT, MASK, 1, 4).mask());
        assertArrayEquals(MASK, new MaskedImportanceSampling(2, MismatchLevel.SEQUENCE_GEOMETRIC)
                .apply(TRAIN, ROLLOUT, MASK, 1, 4).mask());
        // lower side: ratio 1/e < 1/2 is masked too
        float[] roll = {-0.5f, -0.5f, -1, NAN}; // delta [-0.5, -0.5, 0], sum -1
        assertArrayEquals(new float[] {0, 0, 0, 0}, new MaskedImportanceSampling(2, MismatchLevel.SEQUENCE)
                .apply(TRAIN, roll, MASK, 1, 4).mask());
    }

    @Test
    void weightsAreDetachedFactorsOfThePolicyLoss() {
        // TIS weights enter the policy loss as constants: the gradient is the unweighted one times w.
        PolicyBatch b = PolicyBatch.of(1, 4, new float[] {-1, -2, -0.5f, NAN}, TRAIN, new float[] {1, -1, 0.5f, NAN},
                MASK);
        MismatchCorrection c = new TruncatedImportanceSampling(2, MismatchLevel.TOKEN).apply(TRAIN, ROLLOUT, MASK, 1, 4);
        Normaliser n = Normaliser.over(LossNormalisation.TOKEN_MEAN, 0, b);
        LossResult plain = new PolicyGradientLoss().compute(b, n);
        LossResult weighted = new PolicyGradientLoss().compute(b.withCorrection(c), n);
        for (int i = 0; i < 3; i++) {
            RlAssert.close("grad " + i, (double) plain.grad()[i] * c.weights()[i], weighted.grad()[i], 0, 1e-6);
        }
    }

    @Test
    void badCapsAreErrors() {
        assertThrows(IllegalArgumentException.class, () -> new MaskedImportanceSampling(1, MismatchLevel.TOKEN));
        assertThrows(IllegalArgumentException.class, () -> new TruncatedImportanceSampling(0, MismatchLevel.TOKEN));
        assertThrows(IllegalArgumentException.class,
                () -> new TruncatedImportanceSampling(2, MismatchLevel.TOKEN).apply(TRAIN, ROLLOUT, MASK, 2, 4));
    }
}
