package org.orbitrl.model.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The reference fixtures under {@code src/test/resources/tokenizer}, made by
 * {@code make_tokenizer_fixture.py} with Hugging Face {@code tokenizers}: per variant a trained
 * {@code tokenizer.json} and {@code cases.json} with what {@code tokenizers} returned.
 */
final class TokenizerFixtures {
    /** Variants, each a tokenizer.json whose pipeline blocks are copied from a released model. */
    static final List<String> VARIANTS = List.of("qwen3", "deepseek_v3", "o200k", "byte_fallback");

    private static final ObjectMapper MAPPER = new ObjectMapper();

    /** One recorded string. {@code stream} holds null where DecodeStream held the text back. */
    record Case(int index, String text, int[] ids, int[] idsSpecial, int[] idsAsText, String decoded,
                String decodedSkip, List<String> stream) {
    }

    private TokenizerFixtures() {
    }

    static Path resource(String name) {
        URL url = TokenizerFixtures.class.getResource("/tokenizer/" + name);
        if (url == null) {
            throw new IllegalStateException("test resource tokenizer/" + name + " is missing");
        }
        try {
            return Path.of(url.toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    static Tokenizer tokenizer(String variant) {
        return Tokenizer.load(resource(variant + "/tokenizer.json"));
    }

    static JsonNode json(String name) {
        try {
            return MAPPER.readTree(resource(name).toFile());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static List<Case> cases(String variant) {
        List<Case> out = new ArrayList<>();
        JsonNode cases = json(variant + "/cases.json").get("cases");
        for (int i = 0; i < cases.size(); i++) {
            JsonNode c = cases.get(i);
            List<String> stream = new ArrayList<>();
            for (JsonNode s : c.get("stream")) {
                stream.add(s.isNull() ? null : s.asText());
            }
            out.add(new Case(i, c.get("text").asText(), ints(c.get("ids")), ints(c.get("ids_special")),
                    ints(c.get("ids_as_text")), c.get("decoded").asText(), c.get("decoded_skip").asText(), stream));
        }
        return out;
    }

    static int[] ints(JsonNode array) {
        int[] out = new int[array.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = array.get(i).asInt();
        }
        return out;
    }

    /** A string with non-ASCII and control characters escaped, for failure messages. */
    static String show(String s) {
        StringBuilder b = new StringBuilder("\"");
        s.codePoints().forEach(cp -> {
            if (cp >= 0x20 && cp < 0x7F && cp != '"' && cp != '\\') {
                b.append((char) cp);
            } else {
                b.append(String.format(cp > 0xFFFF ? "\\U%08X" : "\\u%04X", cp));
            }
        });
        return b.append('"').toString();
    }
}
