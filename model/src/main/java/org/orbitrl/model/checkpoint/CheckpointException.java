package org.orbitrl.model.checkpoint;

import java.nio.file.Path;

/**
 * A checkpoint file that cannot be read as Orbit needs it: truncated or corrupt, a header that
 * lies about offsets, an unknown dtype, a tensor missing, unexpected or of the wrong shape. The
 * message names the file and, where there is one, the tensor, and says what was expected.
 */
public final class CheckpointException extends RuntimeException {
    private final Path file;
    private final String tensor;

    public CheckpointException(Path file, String tensor, String message) {
        this(file, tensor, message, null);
    }

    public CheckpointException(Path file, String tensor, String message, Throwable cause) {
        super(file + (tensor == null ? "" : ": tensor '" + tensor + "'") + ": " + message, cause);
        this.file = file;
        this.tensor = tensor;
    }

    /** The file at fault. */
    public Path file() {
        return file;
    }

    /** The tensor at fault, or null. */
    public String tensor() {
        return tensor;
    }
}
