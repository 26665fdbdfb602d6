package org.orbitrl.scheduler.rollout;

import org.orbitrl.model.nn.LogProbs;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * Draws one token from a row of logits. Deterministic for a given random stream: every request
 * owns its stream (seeded from its seed), and each draw consumes exactly one value from it.
 *
 * <p>Two log-probabilities are reported: {@code policyLogprob}, the token's log-probability under
 * the temperature-scaled softmax over the whole vocabulary (temperature 1 when greedy) — what the
 * trainer recomputes, and what the train/rollout gap compares — and {@code sampledLogprob}, under
 * the distribution actually sampled from, after the top-k/top-p/min-p filters (0 when greedy).
 */
public final class Sampler {
    private Sampler() {
    }

    /** One draw. */
    public record Draw(int token, float policyLogprob, float sampledLogprob) {
    }

    public static Draw sample(float[] logits, SamplingParams p, SplittableRandom rng) {
        int v = logits.length;
        float t = p.greedy() ? 1f : p.temperature();
        float max = Float.NEGATIVE_INFINITY;
        int argmax = 0;
        for (int i = 0; i < v; i++) {
            if (logits[i] > max) {
                max = logits[i];
                argmax = i;
            }
        }
        double[] prob = new double[v];
        double sum = 0;
        for (int i = 0; i < v; i++) {
            prob[i] = Math.exp((logits[i] - max) / t);
            sum += prob[i];
        }
        if (p.greedy()) {
            rng.nextDouble(); // one draw per token, greedy or not, so streams stay aligned
            return new Draw(argmax, LogProbs.of(logits, argmax, p.temperature()), 0f);
        }
        for (int i = 0; i < v; i++) {
            prob[i] /= sum;
        }
        // filters over tokens sorted by probability (descending; ties to the lower id)
        Integer[] order = new Integer[v];
        for (int i = 0; i < v; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> prob[a] != prob[b] ? Double.compare(prob[b], prob[a]) : Integer.compare(a, b));
        int keep = v;
        if (p.topK() > 0) {
            keep = Math.min(keep, p.topK());
        }
        if (p.topP() < 1) {
            double cum = 0;
            for (int i = 0; i < keep; i++) {
                cum += prob[order[i]];
                if (cum >= p.topP()) {
                    keep = i + 1;
                    break;
                }
            }
        }
        if (p.minP() > 0) {
            double floor = p.minP() * prob[order[0]];
            int k = 1;
            while (k < keep && prob[order[k]] >= floor) {
                k++;
            }
            keep = k;
        }
        double kept = 0;
        for (int i = 0; i < keep; i++) {
            kept += prob[order[i]];
        }
        double u = rng.nextDouble() * kept;
        int token = order[keep - 1];
        double cum = 0;
        for (int i = 0; i < keep; i++) {
            cum += prob[order[i]];
            if (u < cum) {
                token = order[i];
                break;
            }
        }
        float policy = LogProbs.of(logits, token, p.temperature());
        float sampled = (float) Math.log(prob[token] / kept);
        return new Draw(token, policy, sampled);
    }
}
