package org.orbitrl.scheduler.rl;

/**
 * PPO's clipped surrogate per token with separate lower and upper clip ranges (DAPO's
 * "clip-higher"): with {@code r = exp(logp − oldLogp)} and advantage {@code A},
 * <pre>
 *   ℓ = −min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)
 *   dℓ/dlogp = −A·r   on the unclipped branch,   0 on the clipped branch
 * </pre>
 * The clipped branch is taken when {@code A > 0 and r > 1 + ε_high} or {@code A < 0 and
 * r < 1 − ε_low}; at the bounds themselves both branches are equal and the gradient is −A·r.
 *
 * @param epsLow  lower clip range, in [0, 1)
 * @param epsHigh upper clip range, >= 0
 */
public record PpoClipLoss(double epsLow, double epsHigh) implements PolicyLoss {

    public PpoClipLoss {
        if (!(epsLow >= 0 && epsLow < 1)) {
            throw new IllegalArgumentException("epsLow must be in [0, 1), got " + epsLow);
        }
        if (!(epsHigh >= 0) || Double.isInfinite(epsHigh)) {
            throw new IllegalArgumentException("epsHigh must be finite and >= 0, got " + epsHigh);
        }
    }

    /** Symmetric clipping, {@code ε_low = ε_high = eps} (PPO, GRPO). */
    public static PpoClipLoss symmetric(double eps) {
        return new PpoClipLoss(eps, eps);
    }

    @Override
    public LossResult compute(PolicyBatch b, Normaliser normaliser) {
        int tokens = b.tokens();
        float[] grad = new float[b.sequences() * tokens]; // [sequences, tokens]
        double lo = 1 - epsLow;
        double hi = 1 + epsHigh;
        double loss = 0;
        long n = 0;
        long clipLow = 0;
        long clipHigh = 0;
        double ratioSum = 0;
        double ratioMin = Double.POSITIVE_INFINITY;
        double ratioMax = Double.NEGATIVE_INFINITY;
        double oldMinusNew = 0;
        for (int s = 0; s < b.sequences(); s++) {
            int ts = b.maskedTokens(s);
            if (ts == 0) {
                continue;
            }
            double nw = normaliser.tokenWeight(ts);
            for (int t = 0; t < tokens; t++) {
                int i = s * tokens + t;
                if (b.mask()[i] == 0f) {
                    continue;
                }
                double logRatio = (double) b.logp()[i] - b.oldLogp()[i];
                double r = Math.exp(logRatio);
                double a = b.advantages()[i];
                double scale = b.weight(i) * nw;
                double l;
                if (a > 0 && r > hi) {
                    l = -hi * a;
                    clipHigh++;
                } else if (a < 0 && r < lo) {
                    l = -lo * a;
                    clipLow++;
                } else {
                    l = -r * a;
                    grad[i] = (float) (scale * (-a * r));
                }
                loss += scale * l;
                n++;
                ratioSum += r;
                ratioMin = Math.min(ratioMin, r);
                ratioMax = Math.max(ratioMax, r);
                oldMinusNew -= logRatio;
            }
        }
        LossStats stats = new LossStats(n, clipLow, clipHigh, ratioSum, ratioMin, ratioMax, oldMinusNew, loss, 0, 0, 0);
        return new LossResult(loss, b.sequences(), tokens, grad, stats);
    }
}
