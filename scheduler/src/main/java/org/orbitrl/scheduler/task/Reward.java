package org.orbitrl.scheduler.task;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The verdict on one response.
 *
 * @param total     the scalar reward the trainer uses: the weighted sum of the breakdown
 *                  ({@link RewardWeights})
 * @param correct   whether the answer is correct (what accuracy and pass@k count)
 * @param breakdown the unweighted parts, each 0 or 1: {@code correct} and {@code format}, in that
 *                  order
 */
public record Reward(double total, boolean correct, Map<String, Double> breakdown) {

    /** Key of the correctness part. */
    public static final String CORRECT = "correct";
    /** Key of the format part. */
    public static final String FORMAT = "format";

    public Reward {
        breakdown = Collections.unmodifiableMap(new LinkedHashMap<>(breakdown));
    }

    /**
     * Scores a response: {@code total = weights.correct()·correct + weights.format()·wellFormed}.
     *
     * @param correct    the answer equals the reference
     * @param wellFormed the answer has the task's answer shape (a correct answer always has)
     */
    public static Reward score(boolean correct, boolean wellFormed, RewardWeights weights) {
        double c = correct ? 1.0 : 0.0;
        double f = wellFormed ? 1.0 : 0.0;
        Map<String, Double> parts = new LinkedHashMap<>();
        parts.put(CORRECT, c);
        parts.put(FORMAT, f);
        return new Reward(weights.correct() * c + weights.format() * f, correct, parts);
    }
}
