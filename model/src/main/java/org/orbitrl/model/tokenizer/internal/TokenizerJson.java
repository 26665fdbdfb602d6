package org.orbitrl.model.tokenizer.internal;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.UnaryOperator;
import org.orbitrl.model.tokenizer.AddedToken;
import org.orbitrl.model.tokenizer.TokenizerFormatException;

/**
 * Reads a Hugging Face {@code tokenizer.json} into its parts. Only the BPE model is supported;
 * {@code truncation} and {@code padding} are ignored (Orbit never pads token lists).
 *
 * @param normalizer    text normalization, applied between added-token matching passes
 * @param preTokenizer  the pre-tokenizer, or null (each text segment is one word)
 * @param model         vocabulary and merges
 * @param added         the added tokens
 * @param postProcessor special tokens added around an encoding on request
 * @param decoder       token strings to text
 */
public record TokenizerJson(UnaryOperator<String> normalizer, PreTokenizer preTokenizer, BpeModel model,
                            AddedVocabulary added, PostProcessor postProcessor, TokenDecoder decoder) {

    private static final ObjectMapper MAPPER = new ObjectMapper();

    /** Parses {@code json}; {@code file} names the source in error messages. */
    public static TokenizerJson parse(String json, String file) {
        JsonNode root;
        try {
            root = MAPPER.readTree(json);
        } catch (JsonProcessingException e) {
            throw new TokenizerFormatException(file, null, "not valid JSON: " + e.getOriginalMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new TokenizerFormatException(file, null, "expected a JSON object at the top level");
        }
        JsonNodeReader r = new JsonNodeReader(file, "", root);
        UnaryOperator<String> normalizer = Normalizers.parse(r.child("normalizer"));
        PreTokenizer pre = PreTokenizers.parse(r.child("pre_tokenizer"));
        BpeModel model = model(r.object("model"));
        AddedVocabulary added = new AddedVocabulary(addedTokens(r), normalizer);
        PostProcessor post = PostProcessor.parse(r.child("post_processor"));
        TokenDecoder decoder = TokenDecoder.parse(r.child("decoder"));
        return new TokenizerJson(normalizer, pre, model, added, post, decoder);
    }

    private static BpeModel model(JsonNodeReader m) {
        String type = m.has("type") ? m.type() : (m.has("merges") ? "BPE" : null);
        if (type == null) {
            throw m.error("type", "missing, and the model has no merges to tell it is BPE");
        }
        if (!type.equals("BPE")) {
            throw m.error("type", "unsupported model type '" + type + "' (supported: BPE)");
        }
        JsonNodeReader vocabNode = m.object("vocab");
        List<Map.Entry<String, JsonNodeReader>> entries = vocabNode.fields();
        Map<String, Integer> vocab = BpeModel.newVocab(entries.size());
        for (Map.Entry<String, JsonNodeReader> e : entries) {
            vocab.put(e.getKey(), e.getValue().asInt());
        }
        List<String[]> merges = new ArrayList<>();
        List<JsonNodeReader> mergeNodes = new ArrayList<>();
        for (JsonNodeReader merge : m.array("merges")) {
            String[] pair = mergePair(merge);
            if (pair != null) {
                merges.add(pair);
                mergeNodes.add(merge);
            }
        }
        return BpeModel.create(vocab, merges, mergeNodes, m);
    }

    /** A merge written as "a b" or as ["a", "b"]; null for a "#version" line of old files. */
    private static String[] mergePair(JsonNodeReader merge) {
        JsonNode n = merge.node();
        if (n.isTextual()) {
            String line = n.asText();
            if (line.startsWith("#version")) {
                return null;
            }
            String[] parts = line.split(" ", -1);
            if (parts.length != 2) {
                throw merge.error("expected a merge \"left right\" (two tokens separated by one space), found \""
                        + line + "\"");
            }
            return parts;
        }
        if (n.isArray() && n.size() == 2 && n.get(0).isTextual() && n.get(1).isTextual()) {
            return new String[] {n.get(0).asText(), n.get(1).asText()};
        }
        throw merge.error("expected a merge as \"left right\" or [\"left\", \"right\"], found "
                + JsonNodeReader.describe(n));
    }

    private static List<AddedToken> addedTokens(JsonNodeReader r) {
        List<AddedToken> out = new ArrayList<>();
        if (!r.has("added_tokens")) {
            return out;
        }
        Set<Integer> ids = new HashSet<>();
        for (JsonNodeReader t : r.array("added_tokens")) {
            int id = t.integer("id");
            String content = t.string("content");
            if (content.isEmpty()) {
                throw t.error("content", "an added token cannot be empty");
            }
            if (!ids.add(id)) {
                throw t.error("id", "id " + id + " is used by two added tokens");
            }
            boolean special = t.bool("special", false);
            out.add(new AddedToken(id, content, special, t.bool("single_word", false), t.bool("lstrip", false),
                    t.bool("rstrip", false), t.bool("normalized", !special)));
        }
        return out;
    }
}
