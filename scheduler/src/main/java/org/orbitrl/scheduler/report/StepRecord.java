package org.orbitrl.scheduler.report;

import java.time.Instant;
import java.util.Collections;
import java.util.Map;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * One training step as logged in {@code metrics.jsonl} ({@code "type": "step"}). NaN marks a value
 * that was not measured (written as JSON {@code null}).
 *
 * @param step            the step just completed
 * @param time            when it completed
 * @param rewardMean      mean total reward of the step's samples
 * @param accuracy        fraction of the step's samples judged correct
 * @param logprobGapMean  mean |training log-prob − rollout log-prob| over the step's tokens (nats)
 * @param logprobGapMax   largest such gap (nats)
 * @param tokens          tokens generated in the step
 * @param tokensPerSecond generated tokens per second of step time
 * @param stepSeconds     wall time of the step
 * @param adapterVersion  the adapter version the step published
 * @param extras          further named measurements: {@code loss}, {@code kl}, {@code grad_norm},
 *                        {@code lr}, ...
 * @param memoryBytes     device memory in use by category ({@code weights}, {@code kv_cache},
 *                        {@code activations}, ...), in bytes
 */
public record StepRecord(long step, Instant time, double rewardMean, double accuracy, double logprobGapMean,
                         double logprobGapMax, long tokens, double tokensPerSecond, double stepSeconds,
                         long adapterVersion, SortedMap<String, Double> extras, SortedMap<String, Long> memoryBytes) {

    public StepRecord {
        extras = Collections.unmodifiableSortedMap(new TreeMap<>(extras));
        memoryBytes = Collections.unmodifiableSortedMap(new TreeMap<>(memoryBytes));
    }

    /** A record whose {@code tokensPerSecond} is {@code tokens / stepSeconds} (NaN if no time). */
    public static StepRecord of(long step, Instant time, double rewardMean, double accuracy, double logprobGapMean,
                                double logprobGapMax, long tokens, double stepSeconds, long adapterVersion,
                                Map<String, Double> extras, Map<String, Long> memoryBytes) {
        double perSecond = stepSeconds > 0 ? tokens / stepSeconds : Double.NaN;
        return new StepRecord(step, time, rewardMean, accuracy, logprobGapMean, logprobGapMax, tokens, perSecond,
                stepSeconds, adapterVersion, new TreeMap<>(extras), new TreeMap<>(memoryBytes));
    }
}
