package org.orbitrl.scheduler.rl;

/**
 * GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"): the importance ratio and its
 * clipping are per sequence. For a sequence with masked tokens {@code M} ({@code |M| = T}),
 * <pre>
 *   s = exp( (1/T) Σ_{t∈M} (logp[t] − oldLogp[t]) )          (geometric mean of token ratios)
 *   ℓ[t] = −min(s·A[t], clip(s, 1 − ε_low, 1 + ε_high)·A[t])   for every t ∈ M
 * </pre>
 * and the batch loss reduces {@code ℓ} with the {@link Normaliser} like any token loss (with
 * {@link LossNormalisation#SEQUENCE_MEAN} and one advantage per sequence this is exactly the
 * paper's {@code (1/G) Σ_i min(s_i A_i, clip(s_i) A_i)}). The gradient is the exact derivative:
 * since {@code ds/dlogp[u] = s/T},
 * <pre>
 *   d loss / d logp[u] = (s/T) · Σ_{t∈M, unclipped} w[t]·n·(−A[t])
 * </pre>
 * which, for one advantage per sequence, equals the GSPO-token gradient of the paper. A sequence
 * on the clipped branch gets zero gradient on all its tokens. Statistics count each masked token
 * with its sequence's ratio {@code s}.
 *
 * @param epsLow  lower clip range, in [0, 1) (the paper uses 3e-4)
 * @param epsHigh upper clip range, >= 0 (the paper uses 4e-4)
 */
public record GspoLoss(double epsLow, double epsHigh) implements PolicyLoss {

    public GspoLoss {
        if (!(epsLow >= 0 && epsLow < 1)) {
            throw new IllegalArgumentException("epsLow must be in [0, 1), got " + epsLow);
        }
        if (!(epsHigh >= 0) || Double.isInfinite(epsHigh)) {
            throw new IllegalArgumentException("epsHigh must be finite and >= 0, got " + epsHigh);
        }
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
        for (int seq = 0; seq < b.sequences(); seq++) {
            int ts = b.maskedTokens(seq);
            if (ts == 0) {
                continue;
            }
            double nw = normaliser.tokenWeight(ts);
            double logRatioSum = 0;
            for (int t = 0; t < tokens; t++) {
                int i = seq * tokens + t;
                if (b.mask()[i] != 0f) {
                    logRatioSum += (double) b.logp()[i] - b.oldLogp()[i];
                }
            }
            double s = Math.exp(logRatioSum / ts);
            double dLossDs = 0;
            for (int t = 0; t < tokens; t++) {
                int i = seq * tokens + t;
                if (b.mask()[i] == 0f) {
                    continue;
                }
                double a = b.advantages()[i];
                double scale = b.weight(i) * nw;
                double l;
                if (a > 0 && s > hi) {
                    l = -hi * a;
                    clipHigh++;
                } else if (a < 0 && s < lo) {
                    l = -lo * a;
                    clipLow++;
                } else {
                    l = -s * a;
                    dLossDs += scale * -a;
                }
                loss += scale * l;
                n++;
                ratioSum += s;
                ratioMin = Math.min(ratioMin, s);
                ratioMax = Math.max(ratioMax, s);
            }
            oldMinusNew -= logRatioSum;
            float g = (float) (dLossDs * s / ts);
            for (int t = 0; t < tokens; t++) {
                int i = seq * tokens + t;
                if (b.mask()[i] != 0f) {
                    grad[i] = g;
                }
            }
        }
        LossStats stats = new LossStats(n, clipLow, clipHigh, ratioSum, ratioMin, ratioMax, oldMinusNew, loss, 0, 0, 0);
        return new LossResult(loss, b.sequences(), tokens, grad, stats);
    }
}
