package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A broken tokenizer.json fails on load with an error that names the file, the key (its dotted
 * path from the root) and what was expected.
 */
class MalformedTokenizerTest {
    /** A small valid byte-level file: 'a', 'b', 'Ġ' and the merge a+b. */
    private static final String VALID = """
            {"version": "1.0", "added_tokens": [
               {"id": 4, "content": "<|end|>", "special": true, "lstrip": false, "rstrip": false,
                "normalized": false, "single_word": false}],
             "normalizer": {"type": "NFC"},
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
             "post_processor": null,
             "decoder": {"type": "ByteLevel"},
             "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "\u0120": 2, "ab": 3}, "merges": [["a", "b"]]}}
            """;

    @TempDir
    Path dir;

    @Test
    void validFileLoads() {
        Tokenizer tok = Tokenizer.fromJson(VALID, "valid.json");
        assertEquals("[3, 2, 0, 4]", java.util.Arrays.toString(tok.encode("ab a<|end|>")));
        assertEquals("ab a<|end|>", tok.decode(new int[] {3, 2, 0, 4}));
        assertEquals(5, tok.vocabSize());
    }

    @Test
    void missingModel() throws Exception {
        TokenizerFormatException e = load(VALID.replace("\"model\":", "\"not_model\":"));
        assertKey(e, "model", "missing");
    }

    @Test
    void unsupportedModelType() throws Exception {
        TokenizerFormatException e = load(VALID.replace("\"type\": \"BPE\"", "\"type\": \"WordPiece\""));
        assertKey(e, "model.type", "unsupported model type 'WordPiece' (supported: BPE)");
    }

    @Test
    void mergeWithUnknownToken() throws Exception {
        TokenizerFormatException e = load(VALID.replace("[[\"a\", \"b\"]]", "[[\"a\", \"b\"], [\"a\", \"zz\"]]"));
        assertKey(e, "model.merges[1]", "merge token 'zz' is not in model.vocab");
    }

    @Test
    void mergeWhoseResultIsNotInTheVocabulary() throws Exception {
        TokenizerFormatException e = load(VALID.replace("[[\"a\", \"b\"]]", "[[\"a\", \"b\"], \"b a\"]"));
        assertKey(e, "model.merges[1]", "merged token 'ba' is not in model.vocab");
    }

    @Test
    void mergeInABadShape() throws Exception {
        assertKey(load(VALID.replace("[[\"a\", \"b\"]]", "[\"a b c\"]")), "model.merges[0]",
                "expected a merge \"left right\"");
        assertKey(load(VALID.replace("[[\"a\", \"b\"]]", "[[\"a\"]]")), "model.merges[0]",
                "expected a merge as \"left right\" or [\"left\", \"right\"]");
        assertKey(load(VALID.replace("\"merges\": [[\"a\", \"b\"]]", "\"merges\": 7")), "model.merges",
                "expected an array");
    }

    @Test
    void badVocabularyIds() throws Exception {
        assertKey(load(VALID.replace("\"ab\": 3", "\"ab\": -3")), "model.vocab.ab", "non-negative integer");
        assertKey(load(VALID.replace("\"ab\": 3", "\"ab\": 2")), "model.vocab", "id 2 is given to both");
    }

    @Test
    void unsupportedComponents() throws Exception {
        assertKey(load(VALID.replace("{\"type\": \"NFC\"}", "{\"type\": \"Precompiled\"}")), "normalizer.type",
                "unsupported normalizer type 'Precompiled'");
        assertKey(load(VALID.replace("{\"type\": \"ByteLevel\", \"add_prefix_space\"", "{\"type\": \"Metaspace\", \"x\"")),
                "pre_tokenizer.type", "unsupported pre-tokenizer type 'Metaspace'");
        assertKey(load(VALID.replace("\"decoder\": {\"type\": \"ByteLevel\"}", "\"decoder\": {\"type\": \"CTC\"}")),
                "decoder.type", "unsupported decoder type 'CTC'");
    }

    @Test
    void regexThatCannotBeTranslated() throws Exception {
        String split = "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\\\\Kb\"}, \"behavior\": \"Isolated\"}";
        TokenizerFormatException e = load(VALID.replace(
                "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}", split));
        assertKey(e, "pre_tokenizer.pattern.Regex", "\\K (keep) is not supported");
        String badBehavior = split.replace("\\\\K", "").replace("Isolated", "Sideways");
        assertKey(load(VALID.replace("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true}",
                badBehavior)), "pre_tokenizer.behavior", "unknown split behavior 'Sideways'");
    }

    @Test
    void duplicateAddedTokenIdAndNotJson() throws Exception {
        String dup = VALID.replace("\"added_tokens\": [", "\"added_tokens\": [{\"id\": 4, \"content\": \"x\"}, ");
        assertKey(load(dup), "added_tokens[1].id", "id 4 is used by two added tokens");
        TokenizerFormatException e = load("{\"model\": ");
        assertTrue(e.getMessage().contains("not valid JSON"), e.getMessage());
        assertTrue(e.getMessage().startsWith(dir.resolve("tokenizer.json").toString()), e.getMessage());
    }

    @Test
    void missingFileNamesThePath() {
        TokenizerFormatException e = assertThrows(TokenizerFormatException.class,
                () -> Tokenizer.load(dir.resolve("nowhere")));
        assertTrue(e.getMessage().contains("nowhere") && e.getMessage().contains("cannot read"), e.getMessage());
    }

    @Test
    void idsOutsideTheVocabularyAreRejected() {
        Tokenizer tok = Tokenizer.fromJson(VALID, "valid.json");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> tok.decode(new int[] {0, 9}));
        assertTrue(e.getMessage().contains("token id 9") && e.getMessage().contains("valid.json"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> tok.incrementalDecoder(false).push(-1));
    }

    private TokenizerFormatException load(String json) throws Exception {
        Path file = dir.resolve("tokenizer.json");
        Files.writeString(file, json);
        return assertThrows(TokenizerFormatException.class, () -> Tokenizer.load(dir));
    }

    private void assertKey(TokenizerFormatException e, String key, String messagePart) {
        String file = dir.resolve("tokenizer.json").toString();
        assertEquals(file, e.file(), e.getMessage());
        assertEquals(key, e.key(), e.getMessage());
        assertTrue(e.getMessage().startsWith(file + ": key '" + key + "': "), e.getMessage());
        assertTrue(e.getMessage().contains(messagePart), "expected '" + messagePart + "' in: " + e.getMessage());
    }
}
