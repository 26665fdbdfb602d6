package org.orbitrl.scheduler.rl;

import java.util.Arrays;

/**
 * The per-token inputs of a policy loss for a batch (or micro-batch) of sequences, each a
 * row-major {@code [sequences, tokens]} array padded to the longest response. Positions where
 * {@code mask} is 0 are never read.
 *
 * @param sequences  number of sequences (rows)
 * @param tokens     tokens per row (columns)
 * @param logp       [sequences, tokens] current log-probabilities; the loss is differentiated by these
 * @param oldLogp    [sequences, tokens] behaviour log-probabilities the PPO ratio is taken against
 *                   (recomputed by the trainer before the update); detached
 * @param advantages [sequences, tokens] advantage of each token (a sequence's advantage broadcast by
 *                   {@link AdvantageEstimator#perToken}); detached
 * @param mask       [sequences, tokens] loss mask, each value exactly 0 or 1
 * @param isWeights  [sequences, tokens] detached importance weights multiplying each token's policy
 *                   loss (from {@link TruncatedImportanceSampling}), or {@code null} for all ones
 * @param refLogp    [sequences, tokens] reference-policy log-probabilities for the KL penalty (the
 *                   base with the adapter off), or {@code null} when no KL term is used
 */
public record PolicyBatch(int sequences, int tokens, float[] logp, float[] oldLogp, float[] advantages,
                          float[] mask, float[] isWeights, float[] refLogp) {

    public PolicyBatch {
        if (sequences < 0 || tokens < 1) {
            throw new IllegalArgumentException("batch shape [" + sequences + ", " + tokens + "] is invalid");
        }
        int n = Math.multiplyExact(sequences, tokens);
        check("logp", logp, n, sequences, tokens, true);
        check("oldLogp", oldLogp, n, sequences, tokens, true);
        check("advantages", advantages, n, sequences, tokens, true);
        check("mask", mask, n, sequences, tokens, true);
        check("isWeights", isWeights, n, sequences, tokens, false);
        check("refLogp", refLogp, n, sequences, tokens, false);
        for (int i = 0; i < n; i++) {
            if (mask[i] != 0f && mask[i] != 1f) {
                throw new IllegalArgumentException("mask[" + i / tokens + ", " + i % tokens + "] is " + mask[i]
                        + ", expected 0 or 1");
            }
        }
        if (isWeights != null) {
            for (int i = 0; i < n; i++) {
                if (mask[i] != 0f && isWeights[i] < 0f) {
                    throw new IllegalArgumentException("isWeights[" + i / tokens + ", " + i % tokens + "] is "
                            + isWeights[i] + ", expected >= 0 (NaN passes through to the loss)");
                }
            }
        }
    }

    private static void check(String name, float[] a, int n, int s, int t, boolean required) {
        if (a == null) {
            if (required) {
                throw new IllegalArgumentException(name + " is missing");
            }
            return;
        }
        if (a.length != n) {
            throw new IllegalArgumentException(name + " has " + a.length + " values, expected [" + s + ", " + t
                    + "] = " + n);
        }
    }

    /** A batch with no importance weights and no reference log-probabilities. */
    public static PolicyBatch of(int sequences, int tokens, float[] logp, float[] oldLogp, float[] advantages,
                                 float[] mask) {
        return new PolicyBatch(sequences, tokens, logp, oldLogp, advantages, mask, null, null);
    }

    /** This batch with importance weights (and, if the correction masked tokens, its new mask). */
    public PolicyBatch withCorrection(MismatchCorrection correction) {
        return new PolicyBatch(sequences, tokens, logp, oldLogp, advantages, correction.mask(), correction.weights(),
                refLogp);
    }

    /** This batch with reference log-probabilities for the KL penalty. */
    public PolicyBatch withRefLogp(float[] ref) {
        return new PolicyBatch(sequences, tokens, logp, oldLogp, advantages, mask, isWeights, ref);
    }

    /** This batch with other current log-probabilities (same shape). */
    public PolicyBatch withLogp(float[] current) {
        return new PolicyBatch(sequences, tokens, current, oldLogp, advantages, mask, isWeights, refLogp);
    }

    /** Sequences {@code [from, to)} as a micro-batch (copies of the rows). */
    public PolicyBatch slice(int from, int to) {
        if (from < 0 || to > sequences || from > to) {
            throw new IndexOutOfBoundsException("sequences [" + from + ", " + to + ") of " + sequences);
        }
        int a = from * tokens;
        int b = to * tokens;
        return new PolicyBatch(to - from, tokens, Arrays.copyOfRange(logp, a, b), Arrays.copyOfRange(oldLogp, a, b),
                Arrays.copyOfRange(advantages, a, b), Arrays.copyOfRange(mask, a, b),
                isWeights == null ? null : Arrays.copyOfRange(isWeights, a, b),
                refLogp == null ? null : Arrays.copyOfRange(refLogp, a, b));
    }

    /** Masked tokens of sequence {@code s}. */
    public int maskedTokens(int s) {
        int c = 0;
        for (int t = 0; t < tokens; t++) {
            if (mask[s * tokens + t] != 0f) {
                c++;
            }
        }
        return c;
    }

    /** Importance weight of token {@code i} (1 without weights). */
    double weight(int i) {
        return isWeights == null ? 1.0 : isWeights[i];
    }
}
