package org.orbitrl.scheduler.loop;

import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.tokenizer.Tokenizer;
import org.orbitrl.model.tokenizer.TokenizerFormatException;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.OptionalInt;

/**
 * A Hugging Face {@code tokenizer.json} (byte-level BPE with merges: Qwen3, DeepSeek-V3, gpt-oss)
 * as the RL loop's codec. Prompts are encoded as {@link Tokenizer#encode(String)} does (special
 * tokens in the text recognised, none added); responses are decoded without special tokens, and
 * ids the tokenizer does not define (a model's embedding rows past the tokenizer's vocabulary,
 * which a sampler may still pick) decode to nothing, as the {@code tokenizers} library skips them.
 * Responses end at the model's {@code eos_token_id}s, or, when the config names none, at the
 * tokenizer's end-of-text tokens.
 */
final class HfTextCodec implements TextCodec {
    /** End-of-text tokens of the supported families, used when config.json names no eos id. */
    static final List<String> END_TOKENS = List.of("<|im_end|>", "<|endoftext|>", "<｜end▁of▁sentence｜>", "<|return|>");

    private final Tokenizer tokenizer;
    private final boolean[] known;      // [vocabSize]: ids with a token string
    private final List<Integer> stop;

    private HfTextCodec(Tokenizer tokenizer, List<Integer> stop) {
        this.tokenizer = tokenizer;
        this.stop = List.copyOf(stop);
        this.known = new boolean[tokenizer.vocabSize()];
        for (int id = 0; id < known.length; id++) {
            known[id] = defined(tokenizer, id);
        }
    }

    static TextCodec load(Path tokenizerJson, ModelSpec spec) throws IOException {
        Tokenizer t;
        try {
            t = Tokenizer.load(tokenizerJson);
        } catch (TokenizerFormatException e) {
            throw new IOException(tokenizerJson + ": " + e.getMessage(), e);
        }
        List<Integer> stop = new ArrayList<>(spec.eosTokenIds());
        if (stop.isEmpty()) {
            for (String s : END_TOKENS) {
                OptionalInt id = t.tokenId(s);
                id.ifPresent(stop::add);
            }
        }
        if (stop.isEmpty()) {
            throw new IOException(tokenizerJson + ": the model's config.json has no eos_token_id and the tokenizer has"
                    + " none of the end-of-text tokens " + END_TOKENS + ": responses would have no end");
        }
        return new HfTextCodec(t, stop);
    }

    private static boolean defined(Tokenizer t, int id) {
        try {
            t.tokenString(id);
            return true;
        } catch (IllegalArgumentException gap) {
            return false;        // an id between the vocabulary and the added tokens that names no token
        }
    }

    @Override
    public int[] encode(String text) {
        return tokenizer.encode(text);
    }

    @Override
    public String decode(int[] ids) {
        int n = 0;
        int[] kept = new int[ids.length];
        for (int id : ids) {
            if (id >= 0 && id < known.length && known[id]) {
                kept[n++] = id;
            }
        }
        return tokenizer.decode(n == ids.length ? ids : java.util.Arrays.copyOf(kept, n), true);
    }

    @Override
    public List<Integer> stopTokens() {
        return stop;
    }
}
