package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Streaming decode over every recorded id sequence: for byte-level tokenizers the text emitted
 * after each id is the full decode of the ids so far, less the U+FFFD of an unfinished character;
 * wherever Hugging Face's {@code DecodeStream} (recorded in the fixture) emitted text, the
 * streamed text is the same (for the byte-fallback tokenizer, step for step); after
 * {@code finish} it equals the recorded decode.
 */
class IncrementalDecoderTest {

    static List<String> variants() {
        return TokenizerFixtures.VARIANTS;
    }

    @ParameterizedTest
    @MethodSource("variants")
    void streamedTextMatchesFullDecodeAtEveryStep(String variant) {
        Tokenizer tok = TokenizerFixtures.tokenizer(variant);
        List<String> mismatches = new ArrayList<>();
        int heldSteps = 0;
        for (TokenizerFixtures.Case c : TokenizerFixtures.cases(variant)) {
            IncrementalDecoder dec = tok.incrementalDecoder(false);
            StringBuilder reference = new StringBuilder(); // DecodeStream's text so far
            for (int k = 0; k < c.ids().length; k++) {
                String piece = dec.push(c.ids()[k]);
                String streamed = dec.text();
                String full = tok.decode(Arrays.copyOf(c.ids(), k + 1));
                boolean prefixOk;
                if (variant.equals("byte_fallback")) {
                    // A run of <0xXX> tokens decodes as a whole (all U+FFFD while unfinished), so
                    // the streamed text can only be compared where the full decode is complete.
                    prefixOk = full.endsWith("\uFFFD") || full.equals(streamed);
                } else {
                    // Byte-level: at most one unfinished character is held back, shown as one U+FFFD.
                    String held = full.startsWith(streamed) ? full.substring(streamed.length()) : null;
                    prefixOk = held != null && (held.isEmpty() || held.equals("\uFFFD"));
                }
                if (!prefixOk) {
                    mismatches.add("case " + c.index() + " step " + k + ": streamed " + TokenizerFixtures.show(streamed)
                            + " vs full decode " + TokenizerFixtures.show(full));
                }
                if (!full.equals(streamed)) {
                    heldSteps++;
                }
                String ref = c.stream().get(k);
                if (ref != null) {
                    reference.append(ref);
                    if (!streamed.contentEquals(reference)) {
                        mismatches.add("case " + c.index() + " step " + k + ": streamed " + TokenizerFixtures.show(streamed)
                                + " but DecodeStream had " + TokenizerFixtures.show(reference.toString()));
                    }
                }
                if (variant.equals("byte_fallback") && !piece.equals(ref == null ? "" : ref)) {
                    // Not byte-level: the decoder works as DecodeStream does, step for step.
                    mismatches.add("case " + c.index() + " step " + k + ": emitted " + TokenizerFixtures.show(piece)
                            + ", DecodeStream " + (ref == null ? "held" : TokenizerFixtures.show(ref)));
                }
            }
            dec.finish();
            if (!dec.text().equals(c.decoded())) {
                mismatches.add("case " + c.index() + " after finish: " + TokenizerFixtures.show(dec.text()) + " vs "
                        + TokenizerFixtures.show(c.decoded()));
            }
        }
        if (!mismatches.isEmpty()) {
            fail(variant + ": " + mismatches.size() + " mismatches; first ones:\n"
                    + String.join("\n", mismatches.subList(0, Math.min(10, mismatches.size()))));
        }
        if (!variant.equals("byte_fallback")) {
            assertTrue(heldSteps > 20, "the fixtures should split characters across tokens; held " + heldSteps);
        }
    }

    @ParameterizedTest
    @MethodSource("variants")
    void skippingSpecialTokensStreamsTheSkippedDecode(String variant) {
        Tokenizer tok = TokenizerFixtures.tokenizer(variant);
        int withSpecial = 0;
        for (TokenizerFixtures.Case c : TokenizerFixtures.cases(variant)) {
            IncrementalDecoder dec = tok.incrementalDecoder(true);
            for (int id : c.ids()) {
                dec.push(id);
                withSpecial += tok.isSpecial(id) ? 1 : 0;
            }
            dec.finish();
            assertEquals(c.decodedSkip(), dec.text(), "case " + c.index() + " " + TokenizerFixtures.show(c.text()));
        }
        assertTrue(withSpecial > 10, "cases with special tokens: " + withSpecial);
    }

    @Test
    void unfinishedCharacterIsHeldBackAndFlushedAsReplacement() {
        Tokenizer tok = TokenizerFixtures.tokenizer("qwen3");
        int[] ids = tok.encode("ok \uD83E\uDD80"); // a crab, absent from the training corpus
        // Find a prefix that ends inside the emoji's four bytes.
        int cut = -1;
        for (int k = 1; k < ids.length; k++) {
            if (tok.decode(Arrays.copyOf(ids, k)).endsWith("\uFFFD")) {
                cut = k;
                break;
            }
        }
        assertTrue(cut > 0, "the emoji should span several tokens: " + Arrays.toString(ids));
        IncrementalDecoder dec = tok.incrementalDecoder(false);
        for (int k = 0; k < cut; k++) {
            dec.push(ids[k]);
        }
        assertEquals("ok ", dec.text());
        assertTrue(dec.hasPending());
        assertEquals("\uFFFD", dec.finish());
        assertEquals(tok.decode(Arrays.copyOf(ids, cut)), dec.text());
    }
}
