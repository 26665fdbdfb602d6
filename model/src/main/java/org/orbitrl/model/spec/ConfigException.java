package org.orbitrl.model.spec;

import java.nio.file.Path;

/**
 * A {@code config.json} that Orbit cannot turn into a {@link ModelSpec}: unreadable, not JSON, an
 * unsupported {@code model_type}, a missing key, a value of the wrong type or an inconsistent
 * combination of values. The message always names the file, and the key where there is one.
 */
public final class ConfigException extends RuntimeException {
    private final Path file;
    private final String key;

    public ConfigException(Path file, String key, String message) {
        super(file + (key == null ? "" : ": key '" + key + "'") + ": " + message);
        this.file = file;
        this.key = key;
    }

    public ConfigException(Path file, String key, String message, Throwable cause) {
        super(file + (key == null ? "" : ": key '" + key + "'") + ": " + message, cause);
        this.file = file;
        this.key = key;
    }

    /** The config file. */
    public Path file() {
        return file;
    }

    /** The key (dotted path from the file's root), or null when the error is not about one key. */
    public String key() {
        return key;
    }
}
