package org.orbitrl.scheduler.job;

/**
 * Makes {@link JobRunner}s of one kind. Found through {@link java.util.ServiceLoader}
 * ({@code META-INF/services/org.orbitrl.scheduler.job.JobRunnerProvider}); a job file selects
 * one by its {@code runner} key.
 */
public interface JobRunnerProvider {
    /** The name job files use ({@code rl}). */
    String name();

    /** A runner for one job. Cheap: loading happens in {@link JobRunner#load}. */
    JobRunner create(JobContext context) throws JobException;
}
