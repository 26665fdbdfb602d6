package org.orbitrl.scheduler.job;

/**
 * A job cannot go on. The message is the reason the daemon shows as the job's failure
 * ({@code failed: <message>}), so it says what went wrong and, where known, what to do.
 */
public class JobException extends Exception {
    public JobException(String message) {
        super(message);
    }

    public JobException(String message, Throwable cause) {
        super(message, cause);
    }
}
