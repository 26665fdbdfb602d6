package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Stop strings found in streamed text: across token boundaries (stop strings cut out of recorded
 * decodes so that they start inside one token's text and end inside another's), independently of
 * how the text is chunked, earliest-ending first, and with the output held back only while it can
 * still become a stop string.
 */
class StopStringMatcherTest {

    @Test
    void stopStringsSpanningTokensAreFoundAtTheTokenThatCompletesThem() {
        Tokenizer tok = TokenizerFixtures.tokenizer("qwen3");
        Random rng = new Random(20240607);
        int tried = 0;
        for (TokenizerFixtures.Case c : TokenizerFixtures.cases("qwen3")) {
            // Character offsets where the recorded DecodeStream emitted text: token boundaries.
            List<Integer> boundaries = new ArrayList<>();
            int offset = 0;
            for (String piece : c.stream()) {
                if (piece != null && !piece.isEmpty()) {
                    offset += piece.length();
                    boundaries.add(offset);
                }
            }
            String text = c.decoded();
            if (boundaries.size() < 3 || text.contains("\uFFFD")) {
                continue;
            }
            // A stop string from inside one piece to inside a later one.
            int cut = boundaries.get(rng.nextInt(boundaries.size() - 1));
            int start = Math.max(0, cut - 1 - rng.nextInt(3));
            int end = Math.min(text.length(), cut + 1 + rng.nextInt(3));
            if (Character.isLowSurrogate(text.charAt(start)) || (end < text.length() && Character.isLowSurrogate(text.charAt(end)))) {
                continue;
            }
            String stop = text.substring(start, end);
            int expectedStart = text.indexOf(stop);
            // The first id after which the decoded text contains the stop string.
            int expectedToken = -1;
            for (int k = 1; k <= c.ids().length && expectedToken < 0; k++) {
                if (tok.decode(java.util.Arrays.copyOf(c.ids(), k)).contains(stop)) {
                    expectedToken = k - 1;
                }
            }
            IncrementalDecoder dec = tok.incrementalDecoder(false);
            StopStringMatcher stops = new StopStringMatcher(List.of("\u0000never", stop));
            int foundAt = -1;
            Optional<StopStringMatcher.Match> match = Optional.empty();
            for (int k = 0; k < c.ids().length && match.isEmpty(); k++) {
                match = stops.append(dec.push(c.ids()[k]));
                foundAt = k;
            }
            String where = "case " + c.index() + " stop " + TokenizerFixtures.show(stop) + " in " + TokenizerFixtures.show(text);
            assertTrue(match.isPresent(), where);
            assertEquals(expectedStart, match.get().start(), where);
            assertEquals(expectedStart + stop.length(), match.get().end(), where);
            assertEquals(expectedToken, foundAt, where);
            assertEquals(text.substring(0, expectedStart), stops.text().substring(0, stops.safeLength()), where);
            tried++;
        }
        assertTrue(tried > 100, "stop strings tried: " + tried);
    }

    @Test
    void theMatchDoesNotDependOnHowTheTextIsChunked() {
        String text = "The answer is 42.<|im_end|>\n<|im_start|>user\nmore";
        List<String> stopList = List.of("<|im_start|>", "<|im_end|>", "\n<|im", "answer is 43");
        Random rng = new Random(7);
        for (int trial = 0; trial < 200; trial++) {
            StopStringMatcher m = new StopStringMatcher(stopList);
            Optional<StopStringMatcher.Match> found = Optional.empty();
            int i = 0;
            while (i < text.length() && found.isEmpty()) {
                int j = Math.min(text.length(), i + 1 + rng.nextInt(6));
                found = m.append(text.substring(i, j));
                i = j;
            }
            // "<|im_end|>" ends at 27, before "\n<|im" (ends at 32) and "<|im_start|>" (ends at 40).
            assertEquals(new StopStringMatcher.Match("<|im_end|>", 17, 27), found.orElseThrow(), "trial " + trial);
            assertEquals(17, m.safeLength());
            assertTrue(m.append("anything").isEmpty(), "no second match");
        }
    }

    @Test
    void amongMatchesEndingTogetherTheLongestWins() {
        StopStringMatcher m = new StopStringMatcher(List.of("end", "the end"));
        assertEquals(new StopStringMatcher.Match("the end", 4, 11), m.append("and the end!").orElseThrow());
    }

    @Test
    void textIsHeldBackOnlyWhileItCanStillBecomeAStopString() {
        StopStringMatcher m = new StopStringMatcher(List.of("</answer>", "\n\n"));
        assertTrue(m.append("42</ans").isEmpty());
        assertEquals(2, m.safeLength(), "'</ans' may still become '</answer>'");
        assertTrue(m.append("wer").isEmpty());
        assertEquals(2, m.safeLength());
        assertTrue(m.append("x").isEmpty());
        assertEquals(m.text().length(), m.safeLength(), "'</answerx' can no longer match");
        assertTrue(m.append("\n").isEmpty());
        assertEquals(m.text().length() - 1, m.safeLength(), "a newline may start '\\n\\n'");
        assertEquals(new StopStringMatcher.Match("\n\n", 11, 13), m.append("\nrest").orElseThrow());
        assertEquals(11, m.safeLength());
        assertFalse(new StopStringMatcher(List.of()).append("anything").isPresent());
        assertThrows(IllegalArgumentException.class, () -> new StopStringMatcher(List.of("")));
    }
}
