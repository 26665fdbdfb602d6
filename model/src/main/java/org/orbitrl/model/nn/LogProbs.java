package org.orbitrl.model.nn;

/**
 * Token log-probabilities from a row of logits, computed one way for everyone: the rollout
 * sampler records them and the trainer recomputes them with this same function, so that in exact
 * mode (bit-identical logits) the two agree bit for bit.
 */
public final class LogProbs {
    private LogProbs() {
    }

    /**
     * log softmax(logits / temperature)[token], in double precision with the max subtracted,
     * rounded to float. Temperature 0 (greedy) counts as 1.
     */
    public static float of(float[] logits, int offset, int vocab, int token, float temperature) {
        float t = temperature == 0 ? 1f : temperature;
        float max = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < vocab; i++) {
            max = Math.max(max, logits[offset + i]);
        }
        double sum = 0;
        for (int i = 0; i < vocab; i++) {
            sum += Math.exp((logits[offset + i] - max) / t);
        }
        return (float) ((logits[offset + token] - max) / t - Math.log(sum));
    }

    public static float of(float[] logits, int token, float temperature) {
        return of(logits, 0, logits.length, token, temperature);
    }
}
