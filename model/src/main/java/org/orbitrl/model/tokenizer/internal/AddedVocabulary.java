package org.orbitrl.model.tokenizer.internal;

import java.util.ArrayList;
import java.util.BitSet;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.UnaryOperator;
import org.orbitrl.model.tokenizer.AddedToken;

/**
 * Finds added tokens in text before pre-tokenization, as {@code tokenizers}' AddedVocabulary does.
 * Tokens with {@code normalized: false} are matched in the raw text first; the text between them
 * is normalized and then searched for the {@code normalized: true} tokens, whose contents are
 * normalized the same way. Matching is leftmost-longest (at the leftmost position where some token
 * matches, the longest one wins) and resumes after the match; then {@code single_word},
 * {@code lstrip} and {@code rstrip} apply to each match.
 */
public final class AddedVocabulary {
    /** A stretch of plain text ({@code id < 0}) or one added token. */
    public record Segment(String text, int id) {
    }

    private final Map<Integer, AddedToken> byId = new HashMap<>();
    private final Map<String, AddedToken> byContent = new HashMap<>();
    /** The string each token decodes from: normalized tokens use their normalized content. */
    private final Map<Integer, String> decodeContent = new HashMap<>();
    private final Matcher raw;
    private final Matcher normalized;

    public AddedVocabulary(List<AddedToken> tokens, UnaryOperator<String> normalizer) {
        List<Pattern> rawPatterns = new ArrayList<>();
        List<Pattern> normPatterns = new ArrayList<>();
        for (AddedToken t : tokens) {
            byId.put(t.id(), t);
            byContent.putIfAbsent(t.content(), t);
            if (t.normalized()) {
                String n = normalizer.apply(t.content());
                decodeContent.put(t.id(), n);
                if (!n.isEmpty()) {
                    normPatterns.add(new Pattern(n, t));
                }
            } else {
                decodeContent.put(t.id(), t.content());
                rawPatterns.add(new Pattern(t.content(), t));
            }
        }
        raw = new Matcher(rawPatterns);
        normalized = new Matcher(normPatterns);
    }

    public AddedToken byId(int id) {
        return byId.get(id);
    }

    public AddedToken byContent(String content) {
        return byContent.get(content);
    }

    /** The token string decoding starts from, or null if {@code id} is not an added token. */
    public String decodeContent(int id) {
        return decodeContent.get(id);
    }

    public List<AddedToken> tokens() {
        List<AddedToken> out = new ArrayList<>(byId.values());
        out.sort(Comparator.comparingInt(AddedToken::id));
        return out;
    }

    /**
     * Splits {@code text} into plain segments and added tokens: the raw-text tokens when
     * {@code normalizedTokens} is false, the normalized ones when true. With {@code parseSpecial}
     * false, special tokens are not recognised (their text stays plain).
     */
    public void split(String text, boolean normalizedTokens, boolean parseSpecial, List<Segment> out) {
        Matcher m = normalizedTokens ? normalized : raw;
        int len = text.length();
        int startOffset = 0;
        int pos = 0;
        while (pos < len) {
            int[] found = m.leftmostLongest(text, pos);
            if (found == null) {
                break;
            }
            AddedToken token = m.patterns.get(found[1]).token;
            int start = found[0];
            int stop = start + m.patterns.get(found[1]).text.length();
            pos = stop;
            if (!parseSpecial && token.special()) {
                continue;
            }
            if (token.singleWord()) {
                boolean startSpace = start == 0 || !UnicodeChars.isWordChar(text.codePointBefore(start));
                boolean stopSpace = stop == len || !UnicodeChars.isWordChar(text.codePointAt(stop));
                if (!startSpace || !stopSpace) {
                    continue;
                }
            }
            if (token.lstrip()) {
                int s = start;
                while (s > 0 && UnicodeChars.isWhiteSpace(text.codePointBefore(s))) {
                    s -= Character.charCount(text.codePointBefore(s));
                }
                start = Math.max(s, startOffset); // spaces a previous match took stay with it
            }
            if (token.rstrip()) {
                while (stop < len && UnicodeChars.isWhiteSpace(text.codePointAt(stop))) {
                    stop += Character.charCount(text.codePointAt(stop));
                }
            }
            if (startOffset < start) {
                out.add(new Segment(text.substring(startOffset, start), -1));
            }
            out.add(new Segment(null, token.id()));
            startOffset = stop;
        }
        if (startOffset < len) {
            out.add(new Segment(text.substring(startOffset), -1));
        }
    }

    private record Pattern(String text, AddedToken token) {
    }

    /** Leftmost-longest search over a set of literal patterns, indexed by first character. */
    private static final class Matcher {
        final List<Pattern> patterns;
        /** first char -> indices into patterns, longest first. */
        final Map<Character, int[]> byFirst = new HashMap<>();
        final BitSet firstChars = new BitSet(1 << 16);

        Matcher(List<Pattern> patterns) {
            this.patterns = patterns;
            Map<Character, List<Integer>> groups = new HashMap<>();
            for (int i = 0; i < patterns.size(); i++) {
                groups.computeIfAbsent(patterns.get(i).text.charAt(0), k -> new ArrayList<>()).add(i);
            }
            for (Map.Entry<Character, List<Integer>> e : groups.entrySet()) {
                List<Integer> idx = e.getValue();
                idx.sort(Comparator.comparingInt((Integer i) -> -patterns.get(i).text.length()).thenComparingInt(i -> i));
                byFirst.put(e.getKey(), idx.stream().mapToInt(Integer::intValue).toArray());
                firstChars.set(e.getKey());
            }
        }

        /** [start, pattern index] of the leftmost-longest match at or after {@code from}, or null. */
        int[] leftmostLongest(String text, int from) {
            if (patterns.isEmpty()) {
                return null;
            }
            for (int p = from; p < text.length(); p++) {
                char c = text.charAt(p);
                if (!firstChars.get(c)) {
                    continue;
                }
                for (int i : byFirst.get(c)) {
                    if (text.startsWith(patterns.get(i).text, p)) {
                        return new int[] {p, i};
                    }
                }
            }
            return null;
        }
    }
}
