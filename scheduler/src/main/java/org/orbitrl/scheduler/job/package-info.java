/**
 * Jobs: the job-file schema ({@link org.orbitrl.scheduler.job.JobSpec} and its section records,
 * read strictly by {@link org.orbitrl.scheduler.job.JobFiles}), and the service-provider interface
 * through which the daemon runs a job ({@link org.orbitrl.scheduler.job.JobRunner}, found by name
 * through {@link org.orbitrl.scheduler.job.JobRunnerProvider}).
 *
 * <p>The daemon owns a job's lifecycle: it plans, loads, calls {@code step()} until the job's
 * steps are done, evaluates and checkpoints on the job's cadence, pauses, applies tunable
 * changes and stops, always between steps. A runner owns what happens inside a step.
 */
package org.orbitrl.scheduler.job;
