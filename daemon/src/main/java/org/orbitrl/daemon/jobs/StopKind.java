package org.orbitrl.daemon.jobs;

/** Why a job is asked to stop. */
enum StopKind {
    NONE(""),
    /** A user asked (JMX, orbitctl). The job ends STOPPED. */
    USER("stopped by request"),
    /** Its job file was deleted. The job ends STOPPED and resumes if the file comes back. */
    FILE_DELETED("job file deleted"),
    /** The daemon is exiting. The job checkpoints and keeps its state, to resume on the next start. */
    SHUTDOWN("daemon shutting down");

    final String reason;

    StopKind(String reason) {
        this.reason = reason;
    }
}
