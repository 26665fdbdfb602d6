package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.orbitrl.model.tokenizer.internal.JsonNodeReader;
import org.orbitrl.model.tokenizer.internal.OnigurumaRegex;

/**
 * The Oniguruma-to-Java regex translation, construct by construct: what Java reads differently is
 * rewritten (the expected Java text and the matches are written out by hand from Oniguruma's
 * documented meaning), what both read alike passes unchanged, and what Java cannot do is refused.
 */
class OnigurumaRegexTest {
    private static final JsonNodeReader AT = new JsonNodeReader("test.json", "pattern.Regex",
            com.fasterxml.jackson.databind.node.TextNode.valueOf("x"));

    @Test
    void constructsJavaReadsDifferentlyAreRewritten() {
        assertEquals("[0-9a-fA-F]+", OnigurumaRegex.translate("\\h+"));
        assertEquals("[x0-9a-fA-F]", OnigurumaRegex.translate("[x\\h]"));
        assertEquals("[^0-9a-fA-F]", OnigurumaRegex.translate("\\H"));
        assertEquals("\\x0B", OnigurumaRegex.translate("\\v"));
        assertEquals("\\P{L}\\p{N}", OnigurumaRegex.translate("\\p{^L}\\P{^N}"));
        assertEquals("[\\p{IsHan}]+", OnigurumaRegex.translate("[\\p{Han}]+"));
        assertEquals("[\\]a]", OnigurumaRegex.translate("[]a]"));
        assertEquals("[^\\]a]", OnigurumaRegex.translate("[^]a]"));
        assertEquals("a\\{b}", OnigurumaRegex.translate("a{b}"));
        assertEquals("a{0,3}", OnigurumaRegex.translate("a{,3}"));
        assertEquals("(?s:.)", OnigurumaRegex.translate("(?m:.)"));
        assertEquals("\\x{4e00}{2}", OnigurumaRegex.translate("\\x{4e00}{2}"));
    }

    @Test
    void constructsBothReadAlikePassUnchanged() {
        String qwen = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                + "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        assertEquals(qwen, OnigurumaRegex.translate(qwen));
        String possessive = "[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|(?>ab|a)c|\\p{N}{1,3}|[\\p{L}&&[^\\p{Lu}]]+";
        assertEquals(possessive, OnigurumaRegex.translate(possessive));
    }

    @Test
    void translatedPatternsMatchAsOnigurumaDoes() {
        // \s is Unicode White_Space (NBSP, ideographic space), (?i:) folds 'ſ' and 'S' to 's'.
        assertEquals(List.of("a", "\u00a0\u3000", "b"), matches("\\S+|\\s+", "a\u00a0\u3000b"));
        assertEquals(List.of("'S", "'\u017f", "'s"), matches("(?i:'s)", "'S '\u017f 's"));
        // Once the atomic group took 'a' in "abc" it does not retry 'ab': only "ac" matches.
        assertEquals(List.of("ac"), matches("(?>a|ab)c", "abc ac"));
        assertEquals(List.of("abc", "ac"), matches("(?:a|ab)c", "abc ac"));
        assertEquals(List.of("]", "a"), matches("[]a]", "]xa"));
        assertEquals(List.of("{b}"), matches("\\{b}", "a{b}"));
        // $ is a line anchor, and only '\n' ends a line.
        assertEquals(List.of("x", "y"), matches("\\w$", "ax\nby"));
        assertEquals(List.of("y"), matches("\\w$", "ax\rby"));
    }

    @Test
    void unsupportedConstructsAreRefusedWithTheKey() {
        TokenizerFormatException e = assertThrows(TokenizerFormatException.class, () -> OnigurumaRegex.compile("a\\Kb", AT));
        assertEquals("pattern.Regex", e.key());
        assertTrue(e.getMessage().contains("\\K"), e.getMessage());
        assertTrue(assertThrows(TokenizerFormatException.class, () -> OnigurumaRegex.compile("(?~ab)", AT))
                .getMessage().contains("absent operator"));
        assertTrue(assertThrows(TokenizerFormatException.class, () -> OnigurumaRegex.compile("[a", AT))
                .getMessage().contains("unclosed character class"));
        assertTrue(assertThrows(TokenizerFormatException.class, () -> OnigurumaRegex.compile("(a", AT))
                .getMessage().contains("does not compile"));
    }

    private static List<String> matches(String onig, String text) {
        Pattern p = OnigurumaRegex.compile(onig, AT);
        List<String> out = new ArrayList<>();
        Matcher m = p.matcher(text);
        while (m.find()) {
            out.add(m.group());
        }
        return out;
    }
}
