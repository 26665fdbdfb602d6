package org.orbitrl.scheduler.task;

import java.util.List;

/**
 * Where the answer of a built-in task's response ends. A response is the answer followed by the
 * end marker {@value #END_MARKER} (a single byte, cheap for a byte-level vocabulary); the answer
 * is the text before the first end marker or newline, stripped of surrounding whitespace, and
 * anything after it is ignored. A response with neither (cut off by the token limit) is judged as
 * a whole.
 */
public final class AnswerText {

    /** The marker a model writes after its answer. */
    public static final String END_MARKER = ";";

    /** The strings that end a built-in task's response: the end marker and a newline. */
    public static final List<String> STOP_STRINGS = List.of(END_MARKER, "\n");

    private AnswerText() {
    }

    /** The answer part of {@code response}: up to the first end marker or newline, stripped. */
    public static String extract(String response) {
        int end = response.length();
        for (String stop : STOP_STRINGS) {
            int i = response.indexOf(stop);
            if (i >= 0 && i < end) {
                end = i;
            }
        }
        return response.substring(0, end).strip();
    }
}
