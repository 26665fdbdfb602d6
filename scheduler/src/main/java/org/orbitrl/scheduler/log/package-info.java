/**
 * The sample log: one Chronicle Queue per job holding every rollout group the trainer may train
 * on ({@link org.orbitrl.scheduler.log.SampleGroup} of immutable, versioned
 * {@link org.orbitrl.scheduler.log.SampleRecord}s) and every adapter version published
 * ({@link org.orbitrl.scheduler.log.AdapterVersionEvent}).
 *
 * <p>Entries are addressed by their queue index. The trainer stores the index of the last entry
 * it consumed in its checkpoint, together with the state that consumed it; after a crash it
 * resumes with {@link org.orbitrl.scheduler.log.SampleLogReader#startAfter(long)} from the
 * checkpoint's index, so each logged sample is trained exactly once. The rollout side resumes
 * after the last group in the log ({@link org.orbitrl.scheduler.log.SampleLogReader#lastGroup()}).
 * A group is one queue document, so it is logged whole or not at all.
 *
 * <p>The byte layout is {@link org.orbitrl.scheduler.log.SampleCodec}'s; every released schema
 * version stays readable, and a golden file of each is kept in the tests.
 */
package org.orbitrl.scheduler.log;
