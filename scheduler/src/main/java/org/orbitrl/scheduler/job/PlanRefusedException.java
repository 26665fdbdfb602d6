package org.orbitrl.scheduler.job;

/**
 * The job does not fit the devices it was given. Thrown by {@link JobRunner#plan()} before
 * anything is loaded; the message carries the memory table, the category that overflows and
 * what would make the job fit.
 */
public final class PlanRefusedException extends JobException {
    public PlanRefusedException(String message) {
        super(message);
    }
}
