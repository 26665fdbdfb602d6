package org.orbitrl.scheduler.log;

import java.util.Objects;

/**
 * An adapter version was published to the rollout engines.
 *
 * @param schemaVersion       the sample-log schema version it was read from
 * @param version             the adapter version (0 is the initial adapter)
 * @param step                the optimizer step that produced it
 * @param checksum            checksum of the adapter's bytes, with its algorithm ({@code sha256:ab12...})
 * @param file                where the published adapter was written (empty if it was not written)
 * @param bytes               size of the adapter in bytes
 * @param publishedEpochNanos wall-clock time of the switch
 */
public record AdapterVersionEvent(int schemaVersion, long version, long step, String checksum, String file, long bytes,
                                  long publishedEpochNanos) {
    public AdapterVersionEvent {
        Objects.requireNonNull(checksum, "checksum");
        Objects.requireNonNull(file, "file");
        if (schemaVersion < 1 || schemaVersion > SampleRecord.CURRENT_SCHEMA) {
            throw new IllegalArgumentException("schema version " + schemaVersion + " is not one this code knows");
        }
        if (version < 0 || step < 0 || bytes < 0) {
            throw new IllegalArgumentException("version, step and bytes must not be negative: " + version + ", " + step
                    + ", " + bytes);
        }
    }

    /** An event made now, in the current schema. */
    public static AdapterVersionEvent of(long version, long step, String checksum, String file, long bytes,
                                         long publishedEpochNanos) {
        return new AdapterVersionEvent(SampleRecord.CURRENT_SCHEMA, version, step, checksum, file, bytes,
                publishedEpochNanos);
    }
}
