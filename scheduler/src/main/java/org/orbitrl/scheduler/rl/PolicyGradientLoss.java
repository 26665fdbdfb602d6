package org.orbitrl.scheduler.rl;

/**
 * The plain policy gradient (REINFORCE with a baseline folded into the advantage):
 * {@code ℓ = −A·logp}, {@code dℓ/dlogp = −A}. There is no ratio and no clipping; the ratio
 * {@code exp(logp − oldLogp)} is still reported in the statistics, so a caller can see how far
 * the policy moved. Clip counts are always 0.
 */
public record PolicyGradientLoss() implements PolicyLoss {

    @Override
    public LossResult compute(PolicyBatch b, Normaliser normaliser) {
        int tokens = b.tokens();
        float[] grad = new float[b.sequences() * tokens]; // [sequences, tokens]
        double loss = 0;
        long n = 0;
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
                double a = b.advantages()[i];
                double scale = b.weight(i) * nw;
                loss += scale * (-a * b.logp()[i]);
                grad[i] = (float) (scale * -a);
                double logRatio = (double) b.logp()[i] - b.oldLogp()[i];
                double r = Math.exp(logRatio);
                n++;
                ratioSum += r;
                ratioMin = Math.min(ratioMin, r);
                ratioMax = Math.max(ratioMax, r);
                oldMinusNew -= logRatio;
            }
        }
        LossStats stats = new LossStats(n, 0, 0, ratioSum, ratioMin, ratioMax, oldMinusNew, loss, 0, 0, 0);
        return new LossResult(loss, b.sequences(), tokens, grad, stats);
    }
}
