package org.orbitrl.scheduler.job;

/**
 * The job fields that may change while a job runs. The job's records validate them
 * ({@link JobSpec#with}); {@link TunableKey} names them for JMX and {@code orbitctl set}.
 *
 * @param learningRate   {@code optimizer.lr}: the peak learning rate the schedule scales
 * @param temperature    {@code sampling.temperature}
 * @param stalenessBound {@code async.staleness_bound}
 * @param evalInterval   {@code eval.interval}, in steps
 */
public record Tunables(double learningRate, double temperature, int stalenessBound, int evalInterval) {

    public Tunables withLearningRate(double v) {
        return new Tunables(v, temperature, stalenessBound, evalInterval);
    }

    public Tunables withTemperature(double v) {
        return new Tunables(learningRate, v, stalenessBound, evalInterval);
    }

    public Tunables withStalenessBound(int v) {
        return new Tunables(learningRate, temperature, v, evalInterval);
    }

    public Tunables withEvalInterval(int v) {
        return new Tunables(learningRate, temperature, stalenessBound, v);
    }
}
