/**
 * Job lifecycle inside the daemon: the registry and queue ({@link org.orbitrl.daemon.jobs.JobManager}),
 * device allocation ({@link org.orbitrl.daemon.jobs.DevicePool}), one thread per active job running
 * its runner ({@link org.orbitrl.daemon.jobs.JobLoop}), and the handling of job files appearing,
 * changing and disappearing ({@link org.orbitrl.daemon.jobs.JobFileEvents}).
 *
 * <pre>
 * queued → planning → loading → running ⇄ paused → completed | stopped | failed
 * </pre>
 * A failed or stopped job is queued again when its file changes or reappears (it resumes from its
 * last checkpoint); a completed job stays completed.
 */
package org.orbitrl.daemon.jobs;
