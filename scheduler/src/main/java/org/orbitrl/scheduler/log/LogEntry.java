package org.orbitrl.scheduler.log;

/** An entry read from the sample log, with its queue index. */
public sealed interface LogEntry {
    /** The entry's queue index: what the trainer stores as consumed. */
    long index();

    /** A complete rollout group. */
    record Group(long index, SampleGroup group) implements LogEntry {
    }

    /** An adapter version published. */
    record AdapterVersion(long index, AdapterVersionEvent event) implements LogEntry {
    }
}
