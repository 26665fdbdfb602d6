package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HexFormat;
import org.junit.jupiter.api.Test;
import org.orbitrl.model.tokenizer.internal.Utf8;

/**
 * Lossy UTF-8 decoding against the worked examples of the Unicode Standard, chapter 3, "U+FFFD
 * Substitution of Maximal Subparts" (Tables 3-8 to 3-11), which Rust's {@code from_utf8_lossy}
 * and so the {@code tokenizers} decoders follow; and the held-back tail of a stream.
 */
class Utf8Test {

    @Test
    void maximalSubpartsBecomeOneReplacementEach() {
        // Table 3-8: a truncated 4-byte and 3-byte sequence, a lone lead byte, lone continuations.
        assertDecodes("61 F1 80 80 E1 80 C2 62 80 63 80 BF 64", "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd");
        // Table 3-9: non-shortest forms, every byte replaced.
        assertDecodes("C0 AF E0 80 BF F0 81 82 41", "\uFFFD".repeat(8) + "A");
        // Table 3-10: encoded surrogates.
        assertDecodes("ED A0 80 ED BF BF ED AF 41", "\uFFFD".repeat(8) + "A");
        // Table 3-11: past U+10FFFF, and bytes that never occur.
        assertDecodes("F4 91 92 93 FF 41 80 BF 42", "\uFFFD".repeat(5) + "A\uFFFD\uFFFDB");
        // Well-formed input is unchanged; an incomplete sequence at the very end is one U+FFFD.
        assertDecodes("E4 B8 AD F0 9F 98 80 7A", "\u4E2D\uD83D\uDE00z");
        assertDecodes("7A F0 9F 98", "z\uFFFD");
    }

    @Test
    void onlyAValidUnfinishedCharacterIsHeldBack() {
        assertEquals(0, tail("61 62"));
        assertEquals(1, tail("61 E4"));
        assertEquals(2, tail("61 E4 B8"));
        assertEquals(0, tail("61 E4 B8 AD"), "complete");
        assertEquals(3, tail("F0 9F 98"));
        assertEquals(0, tail("E0 80"), "E0 80 can never become a character");
        assertEquals(0, tail("ED A0"), "a surrogate can never become a character");
        assertEquals(0, tail("80 80 80"), "continuation bytes without a lead byte");
        assertEquals(0, tail("F5"), "F5 never starts a character");
        assertTrue(Utf8.isValid(bytes("E4 B8 AD"), 3));
        assertFalse(Utf8.isValid(bytes("E4 B8"), 2));
    }

    private static void assertDecodes(String hex, String expected) {
        byte[] b = bytes(hex);
        assertEquals(TokenizerFixtures.show(expected), TokenizerFixtures.show(Utf8.decodeLossy(b, b.length)), hex);
    }

    private static int tail(String hex) {
        byte[] b = bytes(hex);
        return Utf8.incompleteTail(b, b.length);
    }

    private static byte[] bytes(String hex) {
        return HexFormat.of().parseHex(hex.replace(" ", ""));
    }
}
