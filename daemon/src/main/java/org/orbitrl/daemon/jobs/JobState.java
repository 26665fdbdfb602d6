package org.orbitrl.daemon.jobs;

import java.util.EnumSet;
import java.util.Set;

/** Where a job is in its life. */
public enum JobState {
    /** Valid and waiting for devices. */
    QUEUED,
    /** Devices given; the runner checks the job fits them. */
    PLANNING,
    /** The base, adapter and engines load; state is restored from the last checkpoint. */
    LOADING,
    /** Steps run. */
    RUNNING,
    /** Checkpointed and holding its devices, waiting for resume or stop. */
    PAUSED,
    /** Every step ran. */
    COMPLETED,
    /** Stopped by a user or because its file was deleted; checkpointed. */
    STOPPED,
    /** Could not go on; the reason says why. */
    FAILED;

    /** Whether the job is over (until its file changes or it is resumed). */
    public boolean terminal() {
        return this == COMPLETED || this == STOPPED || this == FAILED;
    }

    /** Whether the job holds devices in this state. */
    public boolean holdsDevices() {
        return this == PLANNING || this == LOADING || this == RUNNING || this == PAUSED;
    }

    /** Whether a job may move from this state to {@code next}. */
    public boolean canMoveTo(JobState next) {
        return next(this).contains(next);
    }

    private static Set<JobState> next(JobState s) {
        return switch (s) {
            case QUEUED -> EnumSet.of(PLANNING, STOPPED, FAILED);
            case PLANNING -> EnumSet.of(LOADING, STOPPED, FAILED);
            case LOADING -> EnumSet.of(RUNNING, PAUSED, STOPPED, FAILED);
            case RUNNING -> EnumSet.of(PAUSED, COMPLETED, STOPPED, FAILED);
            case PAUSED -> EnumSet.of(RUNNING, STOPPED, FAILED);
            case COMPLETED -> EnumSet.noneOf(JobState.class);
            case STOPPED, FAILED -> EnumSet.of(QUEUED, FAILED);
        };
    }
}
