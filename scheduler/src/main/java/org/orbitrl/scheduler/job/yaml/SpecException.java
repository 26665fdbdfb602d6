package org.orbitrl.scheduler.job.yaml;

import java.util.List;

/**
 * Thrown by a configuration record's compact constructor when values are out of range or
 * inconsistent. Carries every violation of the record with the key it concerns (relative to the
 * record, dotted for nested keys), so a reader can point at the line in the file.
 */
public final class SpecException extends IllegalArgumentException {
    /** One rule broken by one key. */
    public record Violation(String key, String message) {
        @Override
        public String toString() {
            return key + ": " + message;
        }
    }

    private final transient List<Violation> violations;

    public SpecException(List<Violation> violations) {
        super(String.join("; ", violations.stream().map(Violation::toString).toList()));
        this.violations = List.copyOf(violations);
    }

    public List<Violation> violations() {
        return violations;
    }
}
