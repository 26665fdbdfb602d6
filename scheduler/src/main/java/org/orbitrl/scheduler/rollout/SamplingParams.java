package org.orbitrl.scheduler.rollout;

import java.util.List;

/**
 * How one request samples. Temperature 0 is greedy. Filters apply in the order top-k, top-p,
 * min-p to the temperature-scaled distribution.
 *
 * @param temperature  0 for greedy, else > 0
 * @param topP         nucleus mass in (0, 1]; 1 disables
 * @param topK         keep the k most likely tokens; 0 disables
 * @param minP         drop tokens below minP × the top probability; 0 disables
 * @param maxNewTokens generation stops with reason LENGTH after this many tokens
 * @param stopTokenIds generation stops with reason STOP after emitting one of these
 * @param stopStrings  generation stops with reason STOP when the decoded text contains one
 * @param seed         seeds this request's own random stream: the same request draws the same
 *                     tokens whatever else is in the batch
 */
public record SamplingParams(float temperature, float topP, int topK, float minP, int maxNewTokens,
                             List<Integer> stopTokenIds, List<String> stopStrings, long seed) {

    public SamplingParams {
        if (!(temperature >= 0) || Float.isInfinite(temperature)) {
            throw new IllegalArgumentException("temperature must be >= 0 and finite, got " + temperature);
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("top_p must be in (0, 1], got " + topP);
        }
        if (topK < 0) {
            throw new IllegalArgumentException("top_k must be >= 0, got " + topK);
        }
        if (!(minP >= 0 && minP < 1)) {
            throw new IllegalArgumentException("min_p must be in [0, 1), got " + minP);
        }
        if (maxNewTokens <= 0) {
            throw new IllegalArgumentException("max_new_tokens must be positive, got " + maxNewTokens);
        }
        stopTokenIds = List.copyOf(stopTokenIds);
        stopStrings = List.copyOf(stopStrings);
    }

    public static SamplingParams greedy(int maxNewTokens) {
        return new SamplingParams(0, 1, 0, 0, maxNewTokens, List.of(), List.of(), 0);
    }

    public static SamplingParams sample(float temperature, float topP, int maxNewTokens, long seed) {
        return new SamplingParams(temperature, topP, 0, 0, maxNewTokens, List.of(), List.of(), seed);
    }

    public SamplingParams withSeed(long s) {
        return new SamplingParams(temperature, topP, topK, minP, maxNewTokens, stopTokenIds, stopStrings, s);
    }

    public SamplingParams withStops(List<Integer> ids, List<String> strings) {
        return new SamplingParams(temperature, topP, topK, minP, maxNewTokens, ids, strings, seed);
    }

    public boolean greedy() {
        return temperature == 0;
    }
}
