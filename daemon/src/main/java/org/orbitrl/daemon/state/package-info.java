/**
 * Persisted job state: a Chronicle Map under {@code <data_dir>/state/} holding one
 * {@link org.orbitrl.daemon.state.JobRecord} per job (status, step, adapter version, the sample-log
 * index the trainer consumed, the last checkpoint, a metrics summary, the effective job file).
 * The record is what JMX and {@code orbitctl} show after a restart; the checkpoint is what a job
 * resumes from.
 */
package org.orbitrl.daemon.state;
