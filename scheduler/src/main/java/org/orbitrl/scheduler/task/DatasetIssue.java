package org.orbitrl.scheduler.task;

import java.nio.file.Path;

/**
 * A dataset line that was skipped, and why.
 *
 * @param file    the dataset file
 * @param line    1-based line number
 * @param kind    the class of problem, for counting
 * @param message what is wrong and what was expected
 */
public record DatasetIssue(Path file, long line, Kind kind, String message) {

    /** Classes of skipped lines. */
    public enum Kind {
        /** Not valid UTF-8. */
        BAD_ENCODING,
        /** Not valid JSON, or more than one value on the line. */
        BAD_JSON,
        /** Valid JSON but not an object. */
        NOT_AN_OBJECT,
        /** {@code prompt} or {@code answer} absent. */
        MISSING_KEY,
        /** {@code prompt} not a string, or {@code answer} neither a string nor a number. */
        WRONG_TYPE,
        /** An empty prompt, or no answer where the answer format expects one. */
        NO_ANSWER,
        /** A training line whose prompt is also in the evaluation set. */
        IN_EVAL_SET
    }

    /** {@code file:line: message}. */
    @Override
    public String toString() {
        return file + ":" + line + ": " + message;
    }
}
