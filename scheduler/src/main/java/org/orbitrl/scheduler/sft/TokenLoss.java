package org.orbitrl.scheduler.sft;

import org.orbitrl.kernels.Tensor;

import java.util.List;

/**
 * Cross-entropy of chosen target tokens and its gradient with respect to the logits: the
 * supervised loss, {@code mean over targets of −log softmax(logits[row])[token]}.
 */
public final class TokenLoss {
    private TokenLoss() {
    }

    /** One predicted token: logits row {@code row} should predict {@code token}. */
    public record Target(int row, int token) {
    }

    /** The loss and d loss / d logits [rows, vocab]. */
    public record Result(double loss, Tensor dLogits, int targets) {
    }

    public static Result crossEntropy(Tensor logits, List<Target> targets) {
        int v = logits.size(-1);
        long rows = logits.numel() / v;
        float[] lg = logits.toFloatArray();
        float[] d = new float[lg.length];
        double loss = 0;
        float inv = 1f / targets.size();
        for (Target t : targets) {
            int o = t.row() * v;
            float max = Float.NEGATIVE_INFINITY;
            for (int i = 0; i < v; i++) {
                max = Math.max(max, lg[o + i]);
            }
            double sum = 0;
            for (int i = 0; i < v; i++) {
                sum += Math.exp(lg[o + i] - max);
            }
            loss -= (lg[o + t.token()] - max) - Math.log(sum);
            for (int i = 0; i < v; i++) {
                d[o + i] += (float) (Math.exp(lg[o + i] - max) / sum) * inv;
            }
            d[o + t.token()] -= inv;
        }
        return new Result(loss / targets.size(), Tensor.of(d, rows, v), targets.size());
    }
}
