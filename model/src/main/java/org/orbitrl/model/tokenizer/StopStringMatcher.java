package org.orbitrl.model.tokenizer;

import java.util.List;
import java.util.Optional;

/**
 * Finds the first stop string in a stream of generated text that arrives in pieces (typically one
 * {@link IncrementalDecoder#push} result per token), also when a stop string is split across
 * pieces.
 *
 * <p>"First" is the match that is complete earliest in the stream (smallest end offset; among
 * matches ending at the same offset, the longest). This depends only on the text, not on how it
 * was cut into pieces. After a match the matcher is done: the caller ends the sequence with
 * finish reason "stop" and keeps the text up to {@link Match#start()}.
 *
 * <p>While no stop string has matched, {@link #safeLength()} tells how much of the text can be
 * shown to a user: the end of the text is held back while it could still be the beginning of a
 * stop string.
 */
public final class StopStringMatcher {
    /**
     * A stop string found in the stream.
     *
     * @param stop  the stop string
     * @param start offset of its first character in the stream (where to cut the output)
     * @param end   offset just after its last character
     */
    public record Match(String stop, int start, int end) {
    }

    private final List<String> stops;
    private final int maxLength;
    private final StringBuilder text = new StringBuilder();
    private Match match;

    /** @param stops the stop strings; none may be empty (an empty list never matches) */
    public StopStringMatcher(List<String> stops) {
        this.stops = List.copyOf(stops);
        int max = 0;
        for (String s : this.stops) {
            if (s.isEmpty()) {
                throw new IllegalArgumentException("a stop string cannot be empty");
            }
            max = Math.max(max, s.length());
        }
        this.maxLength = max;
    }

    /**
     * Appends the next piece of text. Returns the match when this piece completes the first stop
     * string; empty otherwise, and always empty once a match was reported.
     */
    public Optional<Match> append(String piece) {
        if (match != null) {
            return Optional.empty();
        }
        int oldLength = text.length();
        text.append(piece);
        if (piece.isEmpty() || stops.isEmpty()) {
            return Optional.empty();
        }
        // Any new match ends after oldLength, so it starts no earlier than this.
        int from = Math.max(0, oldLength - maxLength + 1);
        Match best = null;
        for (String stop : stops) {
            int at = text.indexOf(stop, from);
            if (at >= 0) {
                Match m = new Match(stop, at, at + stop.length());
                if (best == null || m.end() < best.end() || (m.end() == best.end() && m.start() < best.start())) {
                    best = m;
                }
            }
        }
        match = best;
        return Optional.ofNullable(best);
    }

    /** The match, once one was found. */
    public Optional<Match> match() {
        return Optional.ofNullable(match);
    }

    /** All text appended so far (including any text after a match within the same piece). */
    public String text() {
        return text.toString();
    }

    /**
     * How many leading characters of {@link #text()} are final output: up to the match's start
     * after a match; otherwise all but the longest suffix that is a proper prefix of a stop string.
     */
    public int safeLength() {
        if (match != null) {
            return match.start();
        }
        int len = text.length();
        for (int k = Math.min(maxLength - 1, len); k > 0; k--) {
            for (String stop : stops) {
                if (stop.length() > k && endsWithPrefix(len - k, stop, k)) {
                    return len - k;
                }
            }
        }
        return len;
    }

    /** True when text[at, at + k) equals the first k characters of stop. */
    private boolean endsWithPrefix(int at, String stop, int k) {
        for (int i = 0; i < k; i++) {
            if (text.charAt(at + i) != stop.charAt(i)) {
                return false;
            }
        }
        return true;
    }
}
