package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.function.ToDoubleFunction;
import org.junit.jupiter.api.Test;

/**
 * Closed-form gradients d loss / d logp against central finite differences of the loss value on
 * seeded random ragged batches (with importance weights, NaN padding), for every loss and every
 * normalisation. Step h = 1e-3 on the f32 log-prob (the actual f32 step is used as the divisor);
 * tolerance |fd − grad| <= 1e-7 + 1e-5·|fd|. Tokens within 3e-3 of a clip boundary are skipped (the
 * loss has a kink there); each case must check tokens on both sides of clipping where clipping exists.
 */
class GradientCheckTest {
    private static final double H = 1e-3;
    private static final double ATOL = 1e-7;
    private static final double RTOL = 1e-5;
    private static final double EPS_LOW = 0.2;
    private static final double EPS_HIGH = 0.28;
    /** A step of h moves a ratio by at most ~1.3e-3; tokens closer than this to a bound are skipped. */
    private static final double MARGIN = 3e-3;

    private static List<Normaliser> normalisers(PolicyBatch b) {
        return List.of(Normaliser.over(LossNormalisation.TOKEN_MEAN, 0, b),
                Normaliser.over(LossNormalisation.SEQUENCE_MEAN, 0, b), Normaliser.fixed(17));
    }

    @Test
    void ppoClip() {
        int[] counts = check("PPO", new PpoClipLoss(EPS_LOW, EPS_HIGH)::compute, Kinks.TOKEN);
        assertTrue(counts[1] > 0 && counts[0] > counts[1], "checked " + counts[0] + " tokens, " + counts[1] + " clipped");
    }

    @Test
    void gspo() {
        int[] counts = check("GSPO", new GspoLoss(EPS_LOW, EPS_HIGH)::compute, Kinks.SEQUENCE);
        assertTrue(counts[1] > 0 && counts[0] > counts[1], "checked " + counts[0] + " tokens, " + counts[1] + " clipped");
    }

    @Test
    void plainPolicyGradient() {
        check("PG", new PolicyGradientLoss()::compute, Kinks.NONE);
    }

    @Test
    void klEstimators() {
        for (KlEstimator k : KlEstimator.values()) {
            check("KL " + k, new KlPenalty(k, 0.3)::compute, Kinks.NONE);
        }
    }

    @Test
    void ppoPlusKl() {
        check("PPO + 0.05 k3", new TrainingLoss(new PpoClipLoss(EPS_LOW, EPS_HIGH), new KlPenalty(KlEstimator.K3, 0.05))
                ::compute, Kinks.TOKEN);
    }

    /** Where a loss is not differentiable: at the clip bounds of the token or of the sequence ratio. */
    enum Kinks { NONE, TOKEN, SEQUENCE }

    interface Loss {
        LossResult compute(PolicyBatch b, Normaliser n);
    }

    /** Returns {tokens checked, of which with zero gradient from clipping}. */
    private static int[] check(String name, Loss loss, Kinks kinks) {
        int checked = 0;
        int zero = 0;
        int skipped = 0;
        for (long seed = 1; seed <= 3; seed++) {
            PolicyBatch b = RlAssert.randomBatch(seed, 6, 6, 0.6, seed == 2);
            double[] seqRatio = sequenceRatios(b);
            for (Normaliser n : normalisers(b)) {
                LossResult r = loss.compute(b, n);
                List<Double> expected = new ArrayList<>();
                List<Double> actual = new ArrayList<>();
                for (int i = 0; i < b.logp().length; i++) {
                    if (b.mask()[i] == 0f) {
                        assertEquals(0f, r.grad()[i], name + ": gradient at padding " + i);
                        continue;
                    }
                    double ratio = kinks == Kinks.TOKEN ? Math.exp((double) b.logp()[i] - b.oldLogp()[i])
                            : seqRatio[i / b.tokens()];
                    if (kinks != Kinks.NONE
                            && (Math.abs(ratio - (1 + EPS_HIGH)) < MARGIN || Math.abs(ratio - (1 - EPS_LOW)) < MARGIN)) {
                        skipped++;
                        continue;
                    }
                    int idx = i;
                    double fd = centralDifference(b, idx, x -> loss.compute(x, n).loss());
                    expected.add(fd);
                    actual.add((double) r.grad()[i]);
                    checked++;
                    zero += r.grad()[i] == 0f && b.advantages()[i] != 0 ? 1 : 0;
                }
                RlAssert.close(name + " " + n + " seed " + seed, unbox(expected), unbox(actual), ATOL, RTOL);
            }
        }
        assertTrue(skipped < checked * 0.15, name + ": skipped " + skipped + " of " + checked);
        return new int[] {checked, zero};
    }

    private static double centralDifference(PolicyBatch b, int i, ToDoubleFunction<PolicyBatch> f) {
        float x = b.logp()[i];
        float xp = (float) (x + H);
        float xm = (float) (x - H);
        float[] lp = b.logp().clone();
        lp[i] = xp;
        double fp = f.applyAsDouble(b.withLogp(lp));
        lp[i] = xm;
        double fm = f.applyAsDouble(b.withLogp(lp));
        return (fp - fm) / ((double) xp - xm);
    }

    private static double[] sequenceRatios(PolicyBatch b) {
        double[] out = new double[b.sequences()];
        for (int s = 0; s < b.sequences(); s++) {
            double sum = 0;
            int c = 0;
            for (int t = 0; t < b.tokens(); t++) {
                int i = s * b.tokens() + t;
                if (b.mask()[i] != 0f) {
                    sum += (double) b.logp()[i] - b.oldLogp()[i];
                    c++;
                }
            }
            out[s] = c == 0 ? 1 : Math.exp(sum / c);
        }
        return out;
    }

    private static double[] unbox(List<Double> l) {
        return l.stream().mapToDouble(Double::doubleValue).toArray();
    }
}
