package org.orbitrl.scheduler.task;

/**
 * How the parts of a reward add up: {@code total = correct·[answer correct] + format·[answer well
 * formed]}. The default, {@code correct = 1.0, format = 0.1}, gives 1.1 to a correct answer, 0.1
 * to a well-formed wrong one and 0 to a malformed one: the small format term lets a model that
 * never answers correctly still learn the shape of an answer, while correctness dominates.
 *
 * @param correct weight of the correctness term, finite and >= 0
 * @param format  weight of the format term, finite and >= 0
 */
public record RewardWeights(double correct, double format) {

    /** {@code correct = 1.0, format = 0.1}. */
    public static final RewardWeights DEFAULT = new RewardWeights(1.0, 0.1);

    public RewardWeights {
        if (!(correct >= 0) || Double.isInfinite(correct) || !(format >= 0) || Double.isInfinite(format)) {
            throw new IllegalArgumentException("reward weights must be finite and >= 0, got correct " + correct
                    + ", format " + format);
        }
    }
}
