package org.orbitrl.scheduler.job.checkpoint;

import java.io.IOException;
import java.io.OutputStream;

/**
 * Where a job writes its state into a checkpoint, as named sections ({@code adapter},
 * {@code optimizer}, {@code rng}, {@code trainer}, ...). Sections are streamed: a section's
 * stream is valid until the next section starts or the writer finishes. Names are unique,
 * 1..255 UTF-8 bytes.
 */
public interface CheckpointWriter {
    /** Starts a section and returns the stream its bytes go to. */
    OutputStream section(String name) throws IOException;

    /** Writes a whole section. */
    default void section(String name, byte[] bytes) throws IOException {
        section(name).write(bytes);
    }
}
