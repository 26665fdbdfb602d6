package org.orbitrl.scheduler.rl;

/**
 * The learning rate of each optimizer step. Steps are counted from 1: {@code at(1)} is the rate of
 * the first update (the same {@code t} as AdamW's bias correction).
 */
public sealed interface LearningRateSchedule {

    /** The learning rate of step {@code t >= 1}. */
    double at(long t);

    /** The same rate at every step. */
    static LearningRateSchedule constant(double lr) {
        return new Constant(lr);
    }

    /**
     * Linear warmup from {@code peak/warmup} at step 1 to {@code peak} at step {@code warmup},
     * then cosine decay to {@code peak·minRatio} at step {@code total}, constant after:
     * <pre>
     *   t <= warmup:          peak · t / warmup
     *   warmup < t < total:   peak · (minRatio + (1 − minRatio) · ½(1 + cos(π (t − warmup)/(total − warmup))))
     *   t >= total:           peak · minRatio
     * </pre>
     */
    static LearningRateSchedule warmupCosine(double peak, long warmup, long total, double minRatio) {
        return new WarmupCosine(peak, warmup, total, minRatio);
    }

    private static void checkStep(long t) {
        if (t < 1) {
            throw new IllegalArgumentException("optimizer steps count from 1, got " + t);
        }
    }

    private static void checkRate(double lr, String what) {
        if (!(lr >= 0) || Double.isInfinite(lr)) {
            throw new IllegalArgumentException(what + " must be finite and >= 0, got " + lr);
        }
    }

    /** A constant rate. */
    record Constant(double lr) implements LearningRateSchedule {
        public Constant {
            checkRate(lr, "learning rate");
        }

        @Override
        public double at(long t) {
            checkStep(t);
            return lr;
        }
    }

    /** Linear warmup, then cosine decay to a floor; see {@link #warmupCosine}. */
    record WarmupCosine(double peak, long warmup, long total, double minRatio) implements LearningRateSchedule {
        public WarmupCosine {
            checkRate(peak, "peak learning rate");
            if (warmup < 0 || total < warmup) {
                throw new IllegalArgumentException("need 0 <= warmup <= total steps, got warmup " + warmup
                        + ", total " + total);
            }
            if (!(minRatio >= 0 && minRatio <= 1)) {
                throw new IllegalArgumentException("minRatio must be in [0, 1], got " + minRatio);
            }
        }

        @Override
        public double at(long t) {
            checkStep(t);
            if (t <= warmup) {
                return peak * t / warmup;
            }
            if (t >= total) {
                return peak * minRatio;
            }
            double progress = (double) (t - warmup) / (total - warmup);
            return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
        }
    }
}
