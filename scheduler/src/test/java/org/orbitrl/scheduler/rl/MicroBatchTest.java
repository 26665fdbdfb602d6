package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Gradient accumulation: for random splits of one batch into micro-batches (by whole sequences,
 * one of them with no masked token), with the normaliser computed over the full batch, the
 * concatenated micro-batch gradients equal the full-batch gradient bit for bit, the summed losses
 * equal the full loss within 1e-12 relative (only the order of double additions differs), and
 * the statistics' counts are identical.
 */
class MicroBatchTest {
    private static final double LOSS_RTOL = 1e-12;

    private static List<TrainingLoss> losses() {
        return List.of(
                new TrainingLoss(new PpoClipLoss(0.2, 0.28), new KlPenalty(KlEstimator.K3, 0.05)),
                new TrainingLoss(new GspoLoss(0.1, 0.15), new KlPenalty(KlEstimator.K2, 0.1)),
                new TrainingLoss(new PolicyGradientLoss(), new KlPenalty(KlEstimator.K1, 0.02)),
                new TrainingLoss(new PpoClipLoss(0.2, 0.2), null));
    }

    @Test
    void anySplitGivesTheSameLossAndGradients() {
        PolicyBatch full = RlAssert.randomBatch(11, 11, 7, 0.5, true);
        int cases = 0;
        for (LossNormalisation mode : LossNormalisation.values()) {
            Normaliser n = Normaliser.over(mode, 7 * 11, full);
            for (TrainingLoss loss : losses()) {
                LossResult ref = loss.compute(full, n);
                if (!(loss.policy() instanceof PolicyGradientLoss)) {
                    assertTrue(ref.stats().clippedLow() > 0 && ref.stats().clippedHigh() > 0,
                            "both clipped branches occur: " + ref.stats());
                }
                for (long seed = 1; seed <= 6; seed++) {
                    List<PolicyBatch> parts = split(full, seed);
                    assertEquals(n, Normaliser.over(mode, 7 * 11, parts), "normaliser over micro-batches");
                    LossAccumulator acc = new LossAccumulator();
                    float[] grad = new float[0];
                    for (PolicyBatch p : parts) {
                        LossResult r = loss.compute(p, n);
                        acc.add(r);
                        grad = concat(grad, r.grad());
                    }
                    String what = mode + " " + loss + " split " + sizes(parts);
                    RlAssert.bitwise(what + " grad", ref.grad(), grad);
                    RlAssert.close(what + " loss", ref.loss(), acc.loss(), 0, LOSS_RTOL);
                    LossStats a = acc.stats();
                    LossStats e = ref.stats();
                    assertEquals(e.tokens(), a.tokens(), what);
                    assertEquals(e.clippedLow(), a.clippedLow(), what);
                    assertEquals(e.clippedHigh(), a.clippedHigh(), what);
                    assertEquals(e.klTokens(), a.klTokens(), what);
                    assertEquals(e.ratioMax(), a.ratioMax(), what);
                    RlAssert.close(what + " ratio sum", e.ratioSum(), a.ratioSum(), 0, LOSS_RTOL);
                    RlAssert.close(what + " kl loss", e.klLoss(), a.klLoss(), 1e-300, LOSS_RTOL);
                    cases++;
                }
            }
        }
        assertEquals(3 * 4 * 6, cases);
    }

    @Test
    void normalisingEachMicroBatchOnItsOwnWouldDiffer() {
        // The invariance above is not automatic: a per-micro-batch token mean changes the gradients.
        PolicyBatch full = RlAssert.randomBatch(12, 8, 6, 0.3, false);
        TrainingLoss loss = losses().get(0);
        for (LossNormalisation mode : new LossNormalisation[] {LossNormalisation.TOKEN_MEAN,
                LossNormalisation.SEQUENCE_MEAN}) {
            LossResult ref = loss.compute(full, Normaliser.over(mode, 0, full));
            float[] grad = new float[0];
            for (PolicyBatch p : List.of(full.slice(0, 3), full.slice(3, 8))) {
                grad = concat(grad, loss.compute(p, Normaliser.over(mode, 0, p)).grad());
            }
            assertFalse(java.util.Arrays.equals(ref.grad(), grad), mode.toString());
        }
    }

    /** Random contiguous micro-batches by sequence; at least two. */
    private static List<PolicyBatch> split(PolicyBatch b, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        List<PolicyBatch> out = new ArrayList<>();
        int from = 0;
        while (from < b.sequences()) {
            int size = 1 + r.nextInt(Math.max(1, b.sequences() / 2));
            int to = Math.min(b.sequences(), from + size);
            out.add(b.slice(from, to));
            from = to;
        }
        return out;
    }

    private static String sizes(List<PolicyBatch> parts) {
        return parts.stream().map(p -> Integer.toString(p.sequences())).toList().toString();
    }

    private static float[] concat(float[] a, float[] b) {
        float[] c = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, c, a.length, b.length);
        return c;
    }
}
