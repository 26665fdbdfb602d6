package org.orbitrl.scheduler.job;

import java.util.Map;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * A section whose keys depend on a choice in it ({@code task.kind}, {@code adapter.type},
 * {@code optimizer.schedule}). Keys that do not apply to the choice are refused when a file
 * sets them, and left out when a job is written.
 */
interface Scoped {
    /** The keys that do not apply to this section's choice, each with the reason. */
    Map<String, String> unusedKeys();

    /** The key of this section's choice ({@code kind}, {@code type}, {@code schedule}). */
    String choiceKey();

    /**
     * Adds a problem for every key the file sets that does not apply; returns the record. Where the
     * file's choice itself was refused (the record then holds the default), nothing more is said: the
     * keys were written for the choice the file meant, not for the default.
     */
    static <T extends Scoped> T check(Section s, T built) {
        if (built != null && !s.refused(built.choiceKey())) {
            built.unusedKeys().forEach((key, why) -> {
                if (s.has(key)) {
                    s.problemAt(key, why);
                }
            });
        }
        return built;
    }
}
