package org.orbitrl.daemon.jmx;

import java.util.Map;

/**
 * One job: {@code org.orbitrl:type=Job,name=NAME}. Measurements are NaN until first measured.
 * Writable attributes are the job's live-tunable fields; every write and operation is validated
 * and a refused one throws with the reason.
 */
public interface JobMXBean {
    String getName();

    /** queued, planning, loading, running, paused, completed, stopped or failed. */
    String getState();

    /** Why the job is in its state: the failure reason, what it waits for. */
    String getReason();

    /** The last notice: a refused change to a fixed field, an invalid edit, a corrupt checkpoint set aside. */
    String getLastNotice();

    /** The job file. */
    String getFile();

    /** The effective job file (canonical YAML, every key). */
    String getSpec();

    /** Devices the job holds. */
    String[] getDevices();

    long getStep();

    long getTotalSteps();

    /** Mean total reward of the last step. */
    double getRewardMean();

    /** Fraction of the last step's samples judged correct. */
    double getAccuracy();

    /** Accuracy at temperature 0 of the last evaluation on held-out prompts. */
    double getEvalAccuracy();

    /** Step of the last evaluation (-1: none yet). */
    long getEvalStep();

    /** pass@k of the last evaluation, by k. */
    Map<Integer, Double> getPassAtK();

    /** Mean |training − rollout| log-prob of the last step's tokens. */
    double getLogprobGapMean();

    /** Largest |training − rollout| log-prob of the last step's tokens. */
    double getLogprobGapMax();

    /** Generated tokens per second in the last step. */
    double getTokensPerSecond();

    /** Wall time of the last step. */
    double getStepTimeSeconds();

    /** Seconds until the last step at the recent pace. */
    double getEtaSeconds();

    long getAdapterVersion();

    /** Mean staleness (current version − token version) of the last step's trained tokens. */
    double getStaleness();

    /** Largest staleness in the last step. */
    long getStalenessMax();

    /** Samples dropped in the last step for exceeding the staleness bound. */
    long getDroppedStaleSamples();

    /** Sample-log index of the last entry the trainer consumed. */
    long getConsumedIndex();

    long getSamplesTrained();

    /** Step of the last checkpoint (-1: none). */
    long getLastCheckpointStep();

    String getLastCheckpointFile();

    /** The runner's live gauges (idle fractions, backpressure, queue lag, publish cost). */
    Map<String, Double> getGauges();

    /** Further measurements of the last step (loss, kl, clip fraction, ...). */
    Map<String, Double> getStepMetrics();

    /** Peak learning rate (optimizer.lr). Live-tunable; must be in (0, 1]. */
    double getLearningRate();

    void setLearningRate(double lr);

    /** Rollout temperature (sampling.temperature). Live-tunable; 0..10. */
    double getTemperature();

    void setTemperature(double t);

    /** Staleness bound k (async.staleness_bound). Live-tunable; 0..1000000. */
    int getStalenessBound();

    void setStalenessBound(int k);

    /** Steps between evaluations (eval.interval). Live-tunable; 0 = only at the start and the end. */
    int getEvalInterval();

    void setEvalInterval(int steps);

    /** Pauses after the current step and checkpoints; devices stay held. */
    void pause();

    /** Resumes a paused job; queues a stopped or failed job again, to resume from its last checkpoint. */
    void resume();

    /** Stops the job after a checkpoint. */
    void stop();

    /** Checkpoints at the next step boundary (at once if paused). */
    void checkpointNow();

    /**
     * Sets a live-tunable field by its job-file key ({@code optimizer.lr}, {@code sampling.temperature},
     * {@code async.staleness_bound}, {@code eval.interval}) or short name ({@code lr}, {@code temperature},
     * {@code staleness_bound}, {@code eval_interval}).
     *
     * @return the new value as the job file would write it
     */
    String set(String key, String value);
}
