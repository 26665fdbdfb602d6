package org.orbitrl.scheduler.job.checkpoint;

import java.io.IOException;
import java.nio.file.Path;

/** A checkpoint file fails its checks: truncated, wrong magic, index or section checksum mismatch. */
public final class CheckpointCorruptException extends IOException {
    private final transient Path file;

    public CheckpointCorruptException(Path file, String reason) {
        super("checkpoint " + file + " is corrupt: " + reason);
        this.file = file;
    }

    /** The file that failed. */
    public Path file() {
        return file;
    }
}
