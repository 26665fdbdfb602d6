package org.orbitrl.scheduler.job.yaml;

/**
 * One problem found in a configuration file.
 *
 * @param source  the file (or other source) the text came from
 * @param line    1-based line, 0 when the problem is not tied to a position (an empty file)
 * @param column  1-based column, 0 when unknown
 * @param key     the dotted key path ({@code sampling.temperature}), empty for the whole document
 * @param message what is wrong and what was expected
 */
public record ConfigProblem(String source, int line, int column, String key, String message) {

    /** {@code file:line:column: key: message}, the form compilers use so editors can jump to it. */
    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder(source);
        if (line > 0) {
            sb.append(':').append(line);
            if (column > 0) {
                sb.append(':').append(column);
            }
        }
        sb.append(": ");
        if (!key.isEmpty()) {
            sb.append(key).append(": ");
        }
        return sb.append(message).toString();
    }
}
