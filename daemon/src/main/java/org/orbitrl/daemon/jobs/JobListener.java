package org.orbitrl.daemon.jobs;

import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.StepMetrics;

/** Receives what happens to jobs (JMX notifications, tests). Called on the thread where it happened; must not block. */
public interface JobListener {
    /** A job was registered (its JMX bean appears). */
    default void added(Job job) {
    }

    /** A job was forgotten (its JMX bean goes). */
    default void removed(Job job) {
    }

    /** A job changed state. */
    default void stateChanged(Job job, JobState from, JobState to, String reason) {
    }

    /** A step completed. */
    default void stepped(Job job, StepMetrics metrics) {
    }

    /** An evaluation completed. */
    default void evaluated(Job job, EvalResult result) {
    }

    /**
     * Something a user must hear about that did not change the job's state: an invalid job file,
     * a refused change to a fixed field, a corrupt checkpoint set aside.
     *
     * @param job  the job's name
     * @param kind a short kind ({@code invalid-file}, {@code refused-change}, {@code checkpoint-warning}, ...)
     */
    default void notice(String job, String kind, String message) {
    }
}
