package org.orbitrl.scheduler.job;

/**
 * A step gave up early because the job is stopping ({@link JobContext#stopRequested()}) and
 * left the runner's state exactly as it was before the step, so the daemon can checkpoint it.
 */
public final class StepAbortedException extends JobException {
    public StepAbortedException(String message) {
        super(message);
    }
}
