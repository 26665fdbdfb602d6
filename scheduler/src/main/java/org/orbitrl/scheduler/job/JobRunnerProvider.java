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

    /**
     * Checks a job as the daemon accepts its file, before it waits for devices: what can be checked cheaply, without
     * devices, without loading weights and without writing anything (that its model's files can be read, say), so that
     * a job that cannot run fails at once rather than when devices free up. May be called from any thread. The default
     * checks nothing.
     *
     * @throws JobException why the job cannot run: the file at fault and what was expected
     */
    default void check(JobSpec spec) throws JobException {
    }
}
