package org.orbitrl.model.tokenizer.internal;

import java.util.ArrayList;
import java.util.List;
import java.util.function.IntPredicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The {@code pre_tokenizer} of a tokenizer.json: {@code Split} (regex or literal, with the five
 * delimiter behaviours and {@code invert}), {@code ByteLevel} ({@code add_prefix_space},
 * {@code use_regex}), {@code Digits} and {@code Sequence}. Splitting follows {@code tokenizers}'
 * {@code NormalizedString::split}: the matches and the gaps between them cover the text, the
 * behaviour decides which become pieces, and empty pieces are dropped.
 */
public final class PreTokenizers {
    /** The regex GPT-2's ByteLevel pre-tokenizer splits with when {@code use_regex} is true. */
    static final String GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

    private static final Pattern GPT2 = OnigurumaRegex.compile(GPT2_PATTERN, null);

    /** How matched delimiters turn into pieces. */
    enum Behavior { REMOVED, ISOLATED, MERGED_WITH_PREVIOUS, MERGED_WITH_NEXT, CONTIGUOUS }

    private PreTokenizers() {
    }

    /** The pre-tokenizer at {@code node}, or null when it is absent (the whole text is one piece). */
    public static PreTokenizer parse(JsonNodeReader node) {
        if (node == null) {
            return null;
        }
        String type = node.type();
        return switch (type) {
            case "Split" -> {
                Pattern p = Normalizers.pattern(node.object("pattern"));
                Behavior b = behavior(node);
                boolean invert = node.bool("invert", false);
                yield (piece, out) -> split(piece, regexMatches(p, piece), b, invert, out);
            }
            case "Digits" -> {
                Behavior b = node.bool("individual_digits", false) ? Behavior.ISOLATED : Behavior.CONTIGUOUS;
                yield (piece, out) -> split(piece, charMatches(piece, UnicodeChars::isNumeric), b, false, out);
            }
            case "ByteLevel" -> byteLevel(node.bool("add_prefix_space", true), node.bool("use_regex", true));
            case "Sequence" -> {
                List<PreTokenizer> stages = new ArrayList<>();
                for (JsonNodeReader n : node.array("pretokenizers")) {
                    stages.add(parse(n));
                }
                yield sequence(stages);
            }
            default -> throw node.error("type", "unsupported pre-tokenizer type '" + type
                    + "' (supported: Split, ByteLevel, Digits, Sequence)");
        };
    }

    private static Behavior behavior(JsonNodeReader node) {
        String b = node.string("behavior");
        return switch (b) {
            case "Removed" -> Behavior.REMOVED;
            case "Isolated" -> Behavior.ISOLATED;
            case "MergedWithPrevious" -> Behavior.MERGED_WITH_PREVIOUS;
            case "MergedWithNext" -> Behavior.MERGED_WITH_NEXT;
            case "Contiguous" -> Behavior.CONTIGUOUS;
            default -> throw node.error("behavior", "unknown split behavior '" + b
                    + "' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
        };
    }

    /**
     * Byte-level: optionally prefix a space, optionally split with GPT-2's regex, then write each
     * piece's UTF-8 bytes in the byte-level alphabet.
     */
    static PreTokenizer byteLevel(boolean addPrefixSpace, boolean useRegex) {
        return (piece, out) -> {
            if (piece.isEmpty()) {
                return;
            }
            String s = addPrefixSpace && !piece.startsWith(" ") ? " " + piece : piece;
            if (!useRegex) {
                out.add(ByteLevelAlphabet.encode(s));
                return;
            }
            List<String> parts = new ArrayList<>();
            split(s, regexMatches(GPT2, s), Behavior.ISOLATED, false, parts);
            for (String p : parts) {
                out.add(ByteLevelAlphabet.encode(p));
            }
        };
    }

    private static PreTokenizer sequence(List<PreTokenizer> stages) {
        return (piece, out) -> {
            List<String> current = new ArrayList<>();
            current.add(piece);
            for (PreTokenizer stage : stages) {
                List<String> next = new ArrayList<>(current.size() * 2);
                for (String p : current) {
                    stage.split(p, next);
                }
                current = next;
            }
            for (String p : current) {
                if (!p.isEmpty()) {
                    out.add(p);
                }
            }
        };
    }

    /**
     * Match spans of {@code p} in {@code s} as [start0, end0, start1, end1, ...]. An empty match
     * right where the previous match ended is skipped, as Oniguruma's iterator in
     * {@code tokenizers} does.
     */
    static int[] regexMatches(Pattern p, String s) {
        IntList spans = new IntList();
        Matcher m = p.matcher(s);
        int lastEnd = -1;
        while (m.find()) {
            if (m.start() == m.end() && m.end() == lastEnd) {
                continue;
            }
            spans.add(m.start());
            spans.add(m.end());
            lastEnd = m.end();
        }
        return spans.toArray();
    }

    /** Every code point satisfying {@code test} is one match. */
    static int[] charMatches(String s, IntPredicate test) {
        IntList spans = new IntList();
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            int next = i + Character.charCount(cp);
            if (test.test(cp)) {
                spans.add(i);
                spans.add(next);
            }
            i = next;
        }
        return spans.toArray();
    }

    /** Cuts {@code s} at the match spans according to {@code behavior}; appends non-empty pieces. */
    static void split(String s, int[] spans, Behavior behavior, boolean invert, List<String> out) {
        // The matches and the gaps between them: [start, end, isMatch] triples covering s.
        IntList parts = new IntList();
        int prev = 0;
        for (int k = 0; k < spans.length; k += 2) {
            if (prev != spans[k]) {
                parts.add(prev).add(spans[k]).add(invert ? 1 : 0);
            }
            parts.add(spans[k]).add(spans[k + 1]).add(invert ? 0 : 1);
            prev = spans[k + 1];
        }
        if (prev != s.length() || s.isEmpty()) {
            parts.add(prev).add(s.length()).add(invert ? 1 : 0);
        }
        int[] p = parts.toArray();
        int n = p.length / 3;
        switch (behavior) {
            case ISOLATED -> {
                for (int k = 0; k < n; k++) {
                    emit(s, p[3 * k], p[3 * k + 1], out);
                }
            }
            case REMOVED -> {
                for (int k = 0; k < n; k++) {
                    if (p[3 * k + 2] == 0) {
                        emit(s, p[3 * k], p[3 * k + 1], out);
                    }
                }
            }
            case MERGED_WITH_PREVIOUS, CONTIGUOUS -> {
                IntList acc = new IntList();
                boolean previousMatch = false;
                for (int k = 0; k < n; k++) {
                    boolean isMatch = p[3 * k + 2] == 1;
                    boolean merge = behavior == Behavior.CONTIGUOUS ? isMatch == previousMatch : isMatch && !previousMatch;
                    if (merge && acc.size() > 0) {
                        acc.set(acc.size() - 1, p[3 * k + 1]);
                    } else {
                        acc.add(p[3 * k]).add(p[3 * k + 1]);
                    }
                    previousMatch = isMatch;
                }
                for (int k = 0; k < acc.size(); k += 2) {
                    emit(s, acc.get(k), acc.get(k + 1), out);
                }
            }
            case MERGED_WITH_NEXT -> {
                IntList acc = new IntList(); // built back to front
                boolean previousMatch = false;
                for (int k = n - 1; k >= 0; k--) {
                    boolean isMatch = p[3 * k + 2] == 1;
                    if (isMatch && !previousMatch && acc.size() > 0) {
                        acc.set(acc.size() - 2, p[3 * k]);
                    } else {
                        acc.add(p[3 * k]).add(p[3 * k + 1]);
                    }
                    previousMatch = isMatch;
                }
                for (int k = acc.size() - 2; k >= 0; k -= 2) {
                    emit(s, acc.get(k), acc.get(k + 1), out);
                }
            }
        }
    }

    private static void emit(String s, int start, int end, List<String> out) {
        if (end > start) {
            out.add(s.substring(start, end));
        }
    }
}
