package org.orbitrl.scheduler.task;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * One verifiable problem: the prompt the model continues and the reference answer its response is
 * judged against.
 *
 * @param id       stable identity of the problem: for generated tasks {@code <task>:<canonical form>}
 *                 (the same problem always has the same id, and a training batch may hold a problem
 *                 twice), for datasets {@code <file name>:<line>}
 * @param prompt   the exact text given to the model, ending where the answer should begin
 * @param answer   the reference answer, in the form the task's verifier compares against
 * @param metadata task-specific details (operands, the given numbers, the source line, ...), in a
 *                 stable order
 */
public record Problem(String id, String prompt, String answer, Map<String, String> metadata) {

    public Problem {
        Objects.requireNonNull(id, "id");
        Objects.requireNonNull(prompt, "prompt");
        Objects.requireNonNull(answer, "answer");
        if (id.isEmpty()) {
            throw new IllegalArgumentException("a problem needs a non-empty id");
        }
        if (prompt.isEmpty()) {
            throw new IllegalArgumentException("problem " + id + ": empty prompt");
        }
        metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata == null ? Map.of() : metadata));
    }

    /** A problem without metadata. */
    public static Problem of(String id, String prompt, String answer) {
        return new Problem(id, prompt, answer, Map.of());
    }
}
