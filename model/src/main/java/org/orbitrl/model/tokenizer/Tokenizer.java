package org.orbitrl.model.tokenizer;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.OptionalInt;
import org.orbitrl.model.tokenizer.internal.AddedVocabulary;
import org.orbitrl.model.tokenizer.internal.IntList;
import org.orbitrl.model.tokenizer.internal.TokenDecoder;
import org.orbitrl.model.tokenizer.internal.TokenizerJson;

/**
 * A byte-level BPE tokenizer read from a Hugging Face {@code tokenizer.json} (the format of Qwen3,
 * DeepSeek-V3 and gpt-oss; Kimi-K2 ships a tiktoken file instead). Encoding and decoding give the
 * ids and text that the {@code tokenizers} library (0.23) gives for the same file, with two
 * deliberate differences: decoding an id outside the vocabulary throws instead of skipping it,
 * and Unicode normalization uses the JDK's (newer) Unicode tables.
 *
 * <p>Encoding: added tokens are cut out of the text first (longest match at the leftmost
 * position); the text between them is normalized, pre-tokenized (regex split, then bytes written
 * in the byte-level alphabet) and each piece merged by BPE. Decoding maps ids back to token
 * strings and runs the decoder (byte-level: token characters back to bytes, then UTF-8 with
 * U+FFFD for ill-formed bytes). An added token marked {@code normalized} decodes from its
 * normalized content, as {@code tokenizers} 0.23 does.
 *
 * <p>Instances are immutable apart from an internal per-word cache, and safe to share between
 * threads.
 */
public final class Tokenizer {
    private final String source;
    private final TokenizerJson parts;
    private final int vocabSize;

    private Tokenizer(String source, TokenizerJson parts) {
        this.source = source;
        this.parts = parts;
        int size = parts.model().size();
        for (AddedToken t : parts.added().tokens()) {
            size = Math.max(size, t.id() + 1);
        }
        this.vocabSize = size;
    }

    /** Reads {@code path}: a {@code tokenizer.json}, or a model directory that contains one. */
    public static Tokenizer load(Path path) {
        Path file = Files.isDirectory(path) ? path.resolve("tokenizer.json") : path;
        String json;
        try {
            json = Files.readString(file, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new TokenizerFormatException(file.toString(), null, "cannot read: " + e, e);
        }
        return fromJson(json, file.toString());
    }

    /** Parses tokenizer.json text; {@code source} names it in error messages. */
    public static Tokenizer fromJson(String json, String source) {
        return new Tokenizer(source, TokenizerJson.parse(json, source));
    }

    /** Where this tokenizer was read from. */
    public String source() {
        return source;
    }

    /**
     * Token ids of {@code text}, with special tokens in the text recognised and none added
     * around it. This is what a rendered chat prompt needs: the template already wrote its BOS.
     */
    public int[] encode(String text) {
        return encode(text, false, true);
    }

    /** Token ids of {@code text}; {@code addSpecialTokens} applies the post-processor (e.g. a BOS). */
    public int[] encode(String text, boolean addSpecialTokens) {
        return encode(text, addSpecialTokens, true);
    }

    /**
     * Token ids of {@code text}.
     *
     * @param addSpecialTokens   add the post-processor's special tokens (DeepSeek-V3: BOS first)
     * @param parseSpecialTokens recognise special tokens written in the text; when false they are
     *                           tokenized as plain text, so untrusted text cannot inject control
     *                           tokens ({@code tokenizers}' {@code encode_special_tokens})
     */
    public int[] encode(String text, boolean addSpecialTokens, boolean parseSpecialTokens) {
        AddedVocabulary added = parts.added();
        List<AddedVocabulary.Segment> rawSegments = new ArrayList<>();
        added.split(text, false, parseSpecialTokens, rawSegments);
        IntList ids = new IntList(Math.max(16, text.length() / 3));
        List<AddedVocabulary.Segment> normSegments = new ArrayList<>();
        List<String> words = new ArrayList<>();
        for (AddedVocabulary.Segment raw : rawSegments) {
            if (raw.id() >= 0) {
                ids.add(raw.id());
                continue;
            }
            normSegments.clear();
            added.split(parts.normalizer().apply(raw.text()), true, parseSpecialTokens, normSegments);
            for (AddedVocabulary.Segment seg : normSegments) {
                if (seg.id() >= 0) {
                    ids.add(seg.id());
                    continue;
                }
                words.clear();
                if (parts.preTokenizer() == null) {
                    words.add(seg.text());
                } else {
                    parts.preTokenizer().split(seg.text(), words);
                }
                for (String w : words) {
                    parts.model().encodeWord(w, ids);
                }
            }
        }
        int[] out = ids.toArray();
        return addSpecialTokens ? parts.postProcessor().apply(out) : out;
    }

    /** The text of {@code ids}, special tokens included. */
    public String decode(int[] ids) {
        return decode(ids, false);
    }

    /**
     * The text of {@code ids}.
     *
     * @throws IllegalArgumentException for an id outside the vocabulary ({@code tokenizers} would
     *                                  silently drop it; here it is a caller's bug)
     */
    public String decode(int[] ids, boolean skipSpecialTokens) {
        List<String> tokens = new ArrayList<>(ids.length);
        for (int id : ids) {
            if (!(skipSpecialTokens && isSpecial(id))) {
                tokens.add(tokenString(id));
            }
        }
        return parts.decoder().decode(tokens);
    }

    /** A decoder for a stream of generated ids; see {@link IncrementalDecoder}. */
    public IncrementalDecoder incrementalDecoder(boolean skipSpecialTokens) {
        return new IncrementalDecoder(this, skipSpecialTokens);
    }

    /** Ids span {@code [0, vocabSize())}: the model vocabulary and the added tokens. */
    public int vocabSize() {
        return vocabSize;
    }

    /** The id of a token string (an added token's content, or a model vocabulary entry). */
    public OptionalInt tokenId(String token) {
        AddedToken t = parts.added().byContent(token);
        if (t != null) {
            return OptionalInt.of(t.id());
        }
        Integer id = parts.model().tokenToId(token);
        return id == null ? OptionalInt.empty() : OptionalInt.of(id);
    }

    /**
     * The token string of {@code id} as decoding sees it: the vocabulary entry (byte-level
     * alphabet, 'Ġ' for a space), or the added token's content (normalized when the token is).
     */
    public String tokenString(int id) {
        String s = parts.added().decodeContent(id);
        if (s == null) {
            s = parts.model().idToToken(id);
        }
        if (s == null) {
            throw new IllegalArgumentException("token id " + id + " is not in the vocabulary of " + source
                    + " (ids 0.." + (vocabSize - 1) + ", with gaps where no token is defined)");
        }
        return s;
    }

    /** True for an added token marked special. */
    public boolean isSpecial(int id) {
        AddedToken t = parts.added().byId(id);
        return t != null && t.special();
    }

    /** The added tokens, by id. */
    public List<AddedToken> addedTokens() {
        return parts.added().tokens();
    }

    TokenDecoder decoder() {
        return parts.decoder();
    }
}
