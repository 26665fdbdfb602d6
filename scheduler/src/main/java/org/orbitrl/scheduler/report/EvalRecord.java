package org.orbitrl.scheduler.report;

import java.time.Instant;
import java.util.Collections;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * One evaluation as logged in {@code metrics.jsonl} ({@code "type": "eval"}).
 *
 * @param step     the last step trained before it (0 = before training)
 * @param time     when it completed
 * @param accuracy fraction of problems answered correctly at temperature 0 (NaN if not measured)
 * @param passAtK  k → pass@k by the unbiased estimator, ascending k
 */
public record EvalRecord(long step, Instant time, double accuracy, SortedMap<Integer, Double> passAtK) {

    public EvalRecord {
        passAtK = Collections.unmodifiableSortedMap(new TreeMap<>(passAtK));
    }
}
