package org.orbitrl.scheduler.loop;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The RL loop's codec on a Hugging Face tokenizer.json with merges (the Qwen3-style fixture of the
 * model module, trained and recorded with {@code tokenizers} 0.23): encoding gives the ids
 * {@code tokenizers} gave, decoding without special tokens gives its {@code decoded_skip} text
 * (also with ids past the vocabulary mixed in, which decode to nothing), and responses stop at
 * the config's eos id, or at the tokenizer's end-of-text tokens when the config names none.
 */
class HfTextCodecTest {
    private static final Path REPO = Path.of(System.getProperty("orbit.repo", ".."));
    private static final Path FIXTURE = REPO.resolve("model/src/test/resources/tokenizer/qwen3");
    private static final Path MODELS = Path.of(System.getProperty("orbit.models", "../../shared/models"));
    private static final Path HF = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures")).resolve("hf");

    /** A model folder with the fixture tokenizer and the given config.json. */
    private static Path model(Path dir, Path config) throws Exception {
        Files.copy(FIXTURE.resolve("tokenizer.json"), dir.resolve("tokenizer.json"));
        Files.copy(config, dir.resolve("config.json"));
        return dir;
    }

    @Test
    void encodesAndDecodesAsHuggingFaceTokenizers(@TempDir Path dir) throws Exception {
        Path m = model(dir, MODELS.resolve("qwen3-4b/config.json"));
        ModelSpec spec = ConfigLoader.load(m);
        TextCodec codec = TextCodec.forModel(m, spec);
        JsonNode cases = new ObjectMapper().readTree(FIXTURE.resolve("cases.json").toFile()).get("cases");
        List<String> mismatches = new ArrayList<>();
        int checked = 0;
        for (JsonNode c : cases) {
            String text = c.get("text").asText();
            int[] want = ints(c.get("ids"));
            int[] got = codec.encode(text);
            if (!Arrays.equals(want, got)) {
                mismatches.add("case " + checked + " encode " + text + ": want " + Arrays.toString(want) + ", got "
                        + Arrays.toString(got));
            }
            String decoded = codec.decode(want);
            if (!decoded.equals(c.get("decoded_skip").asText())) {
                mismatches.add("case " + checked + " decode " + Arrays.toString(want) + ": want \""
                        + c.get("decoded_skip").asText() + "\", got \"" + decoded + "\"");
            }
            // an id past the tokenizer's vocabulary (the model's vocabulary is larger) decodes to nothing
            int[] withUnknown = Arrays.copyOf(want, want.length + 1);
            withUnknown[want.length] = 151_000 + checked;
            if (!codec.decode(withUnknown).equals(c.get("decoded_skip").asText())) {
                mismatches.add("case " + checked + " decode with an unknown id: got \"" + codec.decode(withUnknown) + "\"");
            }
            checked++;
        }
        assertTrue(checked > 100, "the fixture holds " + checked + " cases");
        assertTrue(mismatches.isEmpty(), mismatches.size() + " of " + checked + " cases differ; first: "
                + mismatches.subList(0, Math.min(5, mismatches.size())));
        assertEquals(List.of(151645), codec.stopTokens(), "qwen3-4b's config.json names eos_token_id 151645");
    }

    @Test
    void withoutAnEosIdTheTokenizersEndOfTextTokensStop(@TempDir Path dir) throws Exception {
        Path m = model(dir, HF.resolve("qwen3/config.json"));
        ModelSpec spec = ConfigLoader.load(m);
        assertTrue(spec.eosTokenIds().isEmpty(), "the fixture config has eos_token_id null");
        List<Integer> want = new ArrayList<>();
        JsonNode added = new ObjectMapper().readTree(FIXTURE.resolve("tokenizer.json").toFile()).get("added_tokens");
        for (String end : HfTextCodec.END_TOKENS) {
            for (JsonNode t : added) {
                if (t.get("content").asText().equals(end)) {
                    want.add(t.get("id").asInt());
                }
            }
        }
        assertEquals(2, want.size(), "the fixture defines <|im_end|> and <|endoftext|>");
        assertEquals(want, TextCodec.forModel(m, spec).stopTokens());
    }

    private static int[] ints(JsonNode a) {
        int[] out = new int[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.get(i).asInt();
        }
        return out;
    }
}
