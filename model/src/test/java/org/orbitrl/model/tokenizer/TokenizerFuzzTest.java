package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * Damaged {@code tokenizer.json} files: seeded edits of three real tokenizers (a ByteLevel BPE with a regex
 * pre-tokenizer, a byte-fallback one, o200k's), each a value somewhere in the tree replaced by another type or an odd
 * value, a key removed, or an array entry dropped. Each either loads and then encodes and decodes text (special
 * tokens included) without failing, or is refused with a {@link TokenizerFormatException} that names the file. No
 * other exception escapes, at load or at use.
 */
class TokenizerFuzzTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String[] VALUES = {
        "0", "-1", "1", "999999999", "2147483648", "0.5", "\"\"", "\"x\"", "\"BPE\"", "\"ByteLevel\"", "\"Split\"",
        "\"Sequence\"", "\"(\"", "\"\\\\p{L}+\"", "null", "true", "false", "[]", "[\"a b\"]", "[[\"a\", \"b\"]]", "{}",
        "{\"type\": \"Nope\"}",
    };
    private static final String[] TEXTS = {
        "Hello, world! 12345 tokens", "  spaces\tand\nnewlines  ", "ünïcödé 中文 🙂", "<|endoftext|>x<|im_start|>", "",
    };

    @Test
    void everyEditedTokenizerLoadsAndWorksOrNamesItsFile() throws Exception {
        Random rnd = new Random(20261204);
        int loaded = 0;
        int refused = 0;
        for (String variant : List.of("deepseek_v3", "byte_fallback", "o200k")) {
            var path = TokenizerFixtures.resource(variant + "/tokenizer.json");
            JsonNode original = JSON.readTree(Files.readString(path));
            for (int trial = 0; trial < 150; trial++) {
                JsonNode edited = original.deepCopy();
                for (int e = 1 + rnd.nextInt(2); e > 0; e--) {
                    edit(edited, rnd);
                }
                String source = "edited-" + variant + "-" + trial + "/tokenizer.json";
                Tokenizer t;
                try {
                    t = Tokenizer.fromJson(JSON.writeValueAsString(edited), source);
                } catch (TokenizerFormatException e) {
                    assertTrue(e.getMessage().contains(source), "names the file: " + e.getMessage());
                    refused++;
                    continue;
                } catch (RuntimeException | StackOverflowError e) {
                    fail(variant + ", edit " + trial + " threw " + e + " at load", e);
                    return;
                }
                try {
                    for (String text : TEXTS) {
                        int[] ids = t.encode(text, true);
                        t.decode(ids);
                        t.decode(ids, true);
                    }
                    loaded++;
                } catch (TokenizerFormatException e) {
                    assertTrue(e.getMessage().contains(source), "names the file: " + e.getMessage());
                    refused++;
                } catch (RuntimeException | StackOverflowError e) {
                    fail(variant + ", edit " + trial + " loaded but threw " + e + " in use", e);
                }
            }
        }
        assertTrue(loaded >= 50 && refused >= 50, "loaded " + loaded + ", refused " + refused);
    }

    /** Replaces, removes or drops one value at a random place of the tree (not inside the large vocab and merges). */
    private static void edit(JsonNode root, Random rnd) throws Exception {
        JsonNode node = root;
        for (int depth = 0; depth < 4; depth++) {
            List<JsonNode> children = new ArrayList<>();
            if (node.isObject()) {
                for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
                    String k = it.next();
                    if (!k.equals("vocab") && !k.equals("merges") && node.get(k).isContainerNode()) {
                        children.add(node.get(k));
                    }
                }
            } else if (node.isArray() && node.size() > 0) {
                children.add(node.get(rnd.nextInt(node.size())));
            }
            if (children.isEmpty() || rnd.nextInt(3) == 0) {
                break;
            }
            node = children.get(rnd.nextInt(children.size()));
        }
        JsonNode value = JSON.readTree(VALUES[rnd.nextInt(VALUES.length)]);
        if (node instanceof ObjectNode o && o.size() > 0) {
            List<String> keys = new ArrayList<>();
            o.fieldNames().forEachRemaining(keys::add);
            String k = keys.get(rnd.nextInt(keys.size()));
            if (rnd.nextInt(4) == 0) {
                o.remove(k);
            } else {
                o.set(k, value);
            }
        } else if (node instanceof ArrayNode a && a.size() > 0) {
            if (rnd.nextBoolean()) {
                a.remove(rnd.nextInt(a.size()));
            } else {
                a.set(rnd.nextInt(a.size()), value);
            }
        }
    }
}
