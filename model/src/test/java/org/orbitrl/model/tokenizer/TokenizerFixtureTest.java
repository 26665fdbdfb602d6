package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every string recorded with Hugging Face {@code tokenizers} encodes to exactly the recorded ids
 * (with and without the post-processor's special tokens, with special tokens parsed and read as
 * text) and the recorded ids decode to exactly the recorded text (special tokens kept and
 * skipped). No tolerance: token ids and text must be identical.
 */
class TokenizerFixtureTest {

    static List<String> variants() {
        return TokenizerFixtures.VARIANTS;
    }

    @ParameterizedTest
    @MethodSource("variants")
    void encodesAndDecodesLikeHuggingFace(String variant) {
        Tokenizer tok = TokenizerFixtures.tokenizer(variant);
        List<TokenizerFixtures.Case> cases = TokenizerFixtures.cases(variant);
        assertTrue(cases.size() > 400, "expected a few hundred cases, found " + cases.size());
        List<String> mismatches = new ArrayList<>();
        for (TokenizerFixtures.Case c : cases) {
            check(mismatches, c, "encode", c.ids(), tok.encode(c.text(), false, true));
            check(mismatches, c, "encode+special", c.idsSpecial(), tok.encode(c.text(), true, true));
            check(mismatches, c, "encode special-as-text", c.idsAsText(), tok.encode(c.text(), false, false));
            String decoded = tok.decode(c.ids(), false);
            if (!decoded.equals(c.decoded())) {
                mismatches.add("case " + c.index() + " decode: expected " + TokenizerFixtures.show(c.decoded()) + " got "
                        + TokenizerFixtures.show(decoded));
            }
            String skipped = tok.decode(c.ids(), true);
            if (!skipped.equals(c.decodedSkip())) {
                mismatches.add("case " + c.index() + " decode skipping special: expected "
                        + TokenizerFixtures.show(c.decodedSkip()) + " got " + TokenizerFixtures.show(skipped));
            }
        }
        if (!mismatches.isEmpty()) {
            fail(variant + ": " + mismatches.size() + " mismatches of " + cases.size() * 5 + " checks; first ones:\n"
                    + String.join("\n", mismatches.subList(0, Math.min(12, mismatches.size()))));
        }
    }

    static List<String> byteLevelVariants() {
        // Byte-level tokens never contain a space, so their merges can be written as "left right".
        return List.of("qwen3", "deepseek_v3", "o200k");
    }

    @ParameterizedTest
    @MethodSource("byteLevelVariants")
    void mergesInTheLegacyStringFormGiveTheSameIds(String variant) throws Exception {
        // tokenizers before 0.20 wrote merges as "left right"; both forms must load the same.
        var mapper = new com.fasterxml.jackson.databind.ObjectMapper();
        var root = (com.fasterxml.jackson.databind.node.ObjectNode) TokenizerFixtures.json(variant + "/tokenizer.json");
        var merges = (com.fasterxml.jackson.databind.node.ArrayNode) root.get("model").get("merges");
        var legacy = mapper.createArrayNode();
        for (var m : merges) {
            assertTrue(m.isArray(), "fixture merges are expected in the [left, right] form");
            legacy.add(m.get(0).asText() + " " + m.get(1).asText());
        }
        ((com.fasterxml.jackson.databind.node.ObjectNode) root.get("model")).set("merges", legacy);
        Tokenizer legacyTok = Tokenizer.fromJson(mapper.writeValueAsString(root), variant + " (legacy merges)");
        int checked = 0;
        for (TokenizerFixtures.Case c : TokenizerFixtures.cases(variant)) {
            assertEquals(Arrays.toString(c.ids()), Arrays.toString(legacyTok.encode(c.text(), false, true)),
                    "case " + c.index() + " " + TokenizerFixtures.show(c.text()));
            checked++;
        }
        assertTrue(checked > 200, "checked " + checked);
    }

    private static void check(List<String> mismatches, TokenizerFixtures.Case c, String what, int[] expected, int[] got) {
        if (!Arrays.equals(expected, got)) {
            int at = Arrays.mismatch(expected, got);
            mismatches.add("case " + c.index() + " " + what + " of " + TokenizerFixtures.show(c.text()) + ": first difference at "
                    + at + "\n  expected " + Arrays.toString(expected) + "\n  got      " + Arrays.toString(got));
        }
    }
}
