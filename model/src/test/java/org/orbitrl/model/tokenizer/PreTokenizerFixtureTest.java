package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.orbitrl.model.tokenizer.internal.JsonNodeReader;
import org.orbitrl.model.tokenizer.internal.PreTokenizer;
import org.orbitrl.model.tokenizer.internal.PreTokenizers;

/**
 * The pre-tokenizer blocks of released tokenizers (Qwen3, DeepSeek-V3, o200k/gpt-oss, and others
 * chosen for their regex constructs: Kimi's {@code \p{Han}} with class intersection, possessive
 * quantifiers, a nested class, {@code Removed} with {@code invert}, {@code MergedWithNext},
 * {@code Digits}, GPT-2's ByteLevel regex with {@code add_prefix_space}) cut every recorded string
 * into exactly the pieces {@code tokenizers}' {@code pre_tokenize_str} returned.
 */
class PreTokenizerFixtureTest {

    static Stream<Arguments> blocks() {
        JsonNode root = TokenizerFixtures.json("pretokenizers.json");
        List<Arguments> out = new ArrayList<>();
        for (JsonNode b : root.get("pre_tokenizers")) {
            out.add(Arguments.of(b.get("name").asText(), b));
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("blocks")
    void splitsLikeHuggingFace(String name, JsonNode block) {
        PreTokenizer pre = PreTokenizers.parse(new JsonNodeReader("pretokenizers.json", name, block.get("pre_tokenizer")));
        List<String> mismatches = new ArrayList<>();
        JsonNode cases = block.get("cases");
        assertTrue(cases.size() > 250, "cases: " + cases.size());
        for (int i = 0; i < cases.size(); i++) {
            String text = cases.get(i).get("text").asText();
            List<String> expected = new ArrayList<>();
            cases.get(i).get("pieces").forEach(p -> expected.add(p.asText()));
            List<String> got = new ArrayList<>();
            pre.split(text, got);
            if (!expected.equals(got)) {
                mismatches.add("case " + i + " " + TokenizerFixtures.show(text) + "\n  expected " + shown(expected)
                        + "\n  got      " + shown(got));
            }
        }
        if (!mismatches.isEmpty()) {
            fail(name + ": " + mismatches.size() + " of " + cases.size() + " strings split differently; first ones:\n"
                    + String.join("\n", mismatches.subList(0, Math.min(8, mismatches.size()))));
        }
    }

    private static String shown(List<String> pieces) {
        return pieces.stream().map(TokenizerFixtures::show).toList().toString();
    }
}
