package org.orbitrl.scheduler.task;

import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Finding the answer in a dataset's reference field and in a model's free-form response.
 *
 * <p>A response's answer is, in this order of preference:
 * <ol>
 *   <li>GSM8K style: the rest of the line after the last {@code ####} (if that text is not a
 *       number but contains one, the first number in it);</li>
 *   <li>the content of the last {@code \boxed{...}} (braces balanced);</li>
 *   <li>the last number in the response ({@link Numbers} spelling: {@code -1,234.5}, {@code 3/4},
 *       {@code $5}).</li>
 * </ol>
 * The first two are explicit answers and earn the format reward; the third is a fallback that can
 * still be correct.
 */
public final class Answers {

    private static final String GSM8K_MARK = "####";
    private static final String BOXED = "\\boxed{";
    private static final Pattern NUMBER = Pattern.compile(
            "[-+\u2212]?\\$?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\\.[0-9]+)?(?:\\s*/\\s*[0-9]+(?:\\.[0-9]+)?)?");

    private Answers() {
    }

    /**
     * An answer found in a response.
     *
     * @param text     the answer text
     * @param explicit whether it was marked ({@code ####} or {@code \boxed{}}) rather than the
     *                 last number
     */
    public record Extracted(String text, boolean explicit) {
    }

    /** The answer of {@code response}, or empty if it has no marker and no number. */
    public static Optional<Extracted> fromResponse(String response) {
        Optional<String> marked = afterMark(response).or(() -> lastBoxed(response));
        if (marked.isPresent() && !marked.get().isEmpty()) {
            return Optional.of(new Extracted(marked.get(), true));
        }
        return lastNumber(response).map(n -> new Extracted(n, false));
    }

    /**
     * The reference answer written in a dataset's {@code answer} field.
     *
     * @return empty if {@code format} needs a marker the field lacks, or the answer is empty
     */
    public static Optional<String> reference(String field, ReferenceFormat format) {
        Optional<String> answer = switch (format) {
            case GSM8K -> afterMark(field);
            case BOXED -> lastBoxed(field);
            case PLAIN -> Optional.of(field.strip());
            case AUTO -> afterMark(field).or(() -> lastBoxed(field)).or(() -> Optional.of(field.strip()));
        };
        return answer.filter(a -> !a.isEmpty());
    }

    /** The rest of the line after the last {@code ####}, stripped. */
    static Optional<String> afterMark(String s) {
        int i = s.lastIndexOf(GSM8K_MARK);
        if (i < 0) {
            return Optional.empty();
        }
        String rest = s.substring(i + GSM8K_MARK.length());
        int nl = rest.indexOf('\n');
        String line = (nl >= 0 ? rest.substring(0, nl) : rest).strip();
        if (Numbers.parse(line).isEmpty()) {
            Matcher m = NUMBER.matcher(line);
            if (m.find()) {
                return Optional.of(m.group());
            }
        }
        return Optional.of(line);
    }

    /** The content of the last {@code \boxed{...}}, stripped; empty if none or unbalanced. */
    static Optional<String> lastBoxed(String s) {
        int start = s.lastIndexOf(BOXED);
        if (start < 0) {
            return Optional.empty();
        }
        int depth = 1;
        int from = start + BOXED.length();
        for (int i = from; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '{') {
                depth++;
            } else if (c == '}' && --depth == 0) {
                return Optional.of(s.substring(from, i).strip());
            }
        }
        return Optional.empty();
    }

    /** The last number in {@code s}. */
    static Optional<String> lastNumber(String s) {
        Matcher m = NUMBER.matcher(s);
        String last = null;
        while (m.find()) {
            last = m.group();
        }
        return Optional.ofNullable(last);
    }
}
