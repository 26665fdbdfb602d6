package org.orbitrl.model.tokenizer;

/**
 * A {@code tokenizer.json} (or {@code tokenizer_config.json}) that Orbit cannot use: unreadable,
 * not JSON, a missing or mistyped key, an unsupported component type, or inconsistent contents
 * such as a merge whose parts are not in the vocabulary. The message names the file and the
 * key's path from the file's root ({@code model.merges[17]}) and says what was expected.
 */
public final class TokenizerFormatException extends RuntimeException {
    private final String file;
    private final String key;

    public TokenizerFormatException(String file, String key, String message) {
        this(file, key, message, null);
    }

    public TokenizerFormatException(String file, String key, String message, Throwable cause) {
        super(file + (key == null ? "" : ": key '" + key + "'") + ": " + message, cause);
        this.file = file;
        this.key = key;
    }

    /** The file (its path, or the name given when the JSON came from memory). */
    public String file() {
        return file;
    }

    /** The key's dotted path from the file's root, or null when the error is about the whole file. */
    public String key() {
        return key;
    }
}
