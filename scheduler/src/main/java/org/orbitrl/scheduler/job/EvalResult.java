package org.orbitrl.scheduler.job;

import java.util.Collections;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * One evaluation on held-out prompts.
 *
 * @param step     steps completed when it ran (0: before training)
 * @param accuracy mean accuracy at temperature 0
 * @param passAtK  pass@k by the unbiased estimator, by k
 * @param prompts  prompts evaluated
 * @param seconds  wall time of the evaluation
 */
public record EvalResult(long step, double accuracy, SortedMap<Integer, Double> passAtK, int prompts, double seconds) {
    public EvalResult {
        passAtK = Collections.unmodifiableSortedMap(new TreeMap<>(passAtK));
    }
}
