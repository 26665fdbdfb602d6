package org.orbitrl.daemon.jmx;

/**
 * One row of the daemon's job list (a {@code CompositeData} to JMX clients).
 *
 * @param name           the job
 * @param state          lifecycle state, lower case
 * @param reason         why it is in that state
 * @param step           steps completed
 * @param totalSteps     steps it runs
 * @param rewardMean     mean reward of the last step (NaN before the first)
 * @param evalAccuracy   accuracy of the last evaluation (NaN before the first)
 * @param adapterVersion current adapter version
 * @param devices        devices it holds, comma-separated
 */
public record JobSummary(String name, String state, String reason, long step, long totalSteps, double rewardMean,
                         double evalAccuracy, long adapterVersion, String devices) {
}
