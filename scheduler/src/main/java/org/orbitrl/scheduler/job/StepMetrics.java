package org.orbitrl.scheduler.job;

import java.util.Map;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * What one step measured. NaN where a runner does not measure a value.
 *
 * @param step             the step just completed (1-based: the first step is 1)
 * @param rewardMean       mean total reward of the step's samples
 * @param accuracy         fraction of the step's samples judged correct
 * @param logprobGapMean   mean |training log-prob − rollout log-prob| over the step's tokens
 * @param logprobGapMax    largest such gap
 * @param tokens           tokens generated in the step
 * @param stepSeconds      wall time of the step
 * @param adapterVersion   the adapter version published by the step
 * @param stalenessMean    mean (current version − token's version) over trained tokens
 * @param stalenessMax     largest such staleness
 * @param droppedStale     samples dropped in the step for exceeding the staleness bound
 * @param samplesTrained   samples trained in the step
 * @param extra            further named measurements (loss, kl, clip fraction, grad norm, ...)
 */
public record StepMetrics(long step, double rewardMean, double accuracy, double logprobGapMean, double logprobGapMax,
                          long tokens, double stepSeconds, long adapterVersion, double stalenessMean, long stalenessMax,
                          long droppedStale, long samplesTrained, SortedMap<String, Double> extra) {
    public StepMetrics {
        extra = java.util.Collections.unmodifiableSortedMap(new TreeMap<>(extra));
    }

    /** Generated tokens per second of the step. */
    public double tokensPerSecond() {
        return stepSeconds > 0 ? tokens / stepSeconds : Double.NaN;
    }

    /** Metrics with only the basics; the rest NaN or zero. */
    public static StepMetrics basic(long step, double rewardMean, double accuracy, long tokens, double stepSeconds,
                                    long adapterVersion, long samplesTrained, Map<String, Double> extra) {
        return new StepMetrics(step, rewardMean, accuracy, Double.NaN, Double.NaN, tokens, stepSeconds, adapterVersion,
                Double.NaN, 0, 0, samplesTrained, new TreeMap<>(extra));
    }
}
