package org.orbitrl.model.tokenizer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.orbitrl.model.tokenizer.internal.ByteLevelAlphabet;
import org.orbitrl.model.tokenizer.internal.Utf8;

/**
 * Turns the ids of one generated sequence, pushed one at a time, into text that only ever grows
 * by complete characters: the concatenation of everything {@link #push} and {@link #finish}
 * return equals {@link Tokenizer#decode} of all the ids.
 *
 * <p>For byte-level decoders (Qwen3, DeepSeek-V3, gpt-oss) the decoder keeps the bytes of the
 * last, unfinished UTF-8 character (at most 3) and emits every completed character at once; an
 * emoji split over four tokens appears with the fourth. Bytes that can never complete a character
 * become U+FFFD as soon as that is certain, exactly as full decoding replaces them. For other
 * decoders it works as {@code tokenizers}' {@code DecodeStream}: it re-decodes a short window of
 * recent ids and emits the new text when it does not end in U+FFFD.
 *
 * <p>One instance follows one sequence; not thread-safe.
 */
public final class IncrementalDecoder {
    private final Tokenizer tokenizer;
    private final boolean skipSpecialTokens;
    private final boolean byteLevel;
    private final StringBuilder text = new StringBuilder();
    private int tokens;
    /** Byte-level: bytes of an unfinished character. */
    private byte[] pending = new byte[0];
    /** Other decoders: ids since the window start, the text of its first part, where that part ends. */
    private final List<Integer> window = new ArrayList<>();
    private String windowPrefix = "";
    private int windowPrefixIds;

    IncrementalDecoder(Tokenizer tokenizer, boolean skipSpecialTokens) {
        this.tokenizer = tokenizer;
        this.skipSpecialTokens = skipSpecialTokens;
        this.byteLevel = tokenizer.decoder().isByteLevel();
    }

    /** Adds one id; returns the text it completes (often empty while a character is unfinished). */
    public String push(int id) {
        tokens++;
        String out = byteLevel ? pushBytes(id) : pushWindow(id);
        text.append(out);
        return out;
    }

    /** Ends the sequence: returns what was held back, unfinished bytes as U+FFFD. */
    public String finish() {
        String out;
        if (byteLevel) {
            out = Utf8.decodeLossy(pending, pending.length);
            pending = new byte[0];
        } else {
            String all = decodeWindow();
            out = all.length() > windowPrefix.length() && all.startsWith(windowPrefix)
                    ? all.substring(windowPrefix.length()) : "";
            window.clear();
            windowPrefix = "";
            windowPrefixIds = 0;
        }
        text.append(out);
        return out;
    }

    /** Everything emitted so far. */
    public String text() {
        return text.toString();
    }

    /** Ids pushed so far. */
    public int tokenCount() {
        return tokens;
    }

    /** True when bytes or ids are held back waiting for more. */
    public boolean hasPending() {
        return byteLevel ? pending.length > 0 : window.size() > windowPrefixIds;
    }

    private String pushBytes(int id) {
        if (skipSpecialTokens && tokenizer.isSpecial(id)) {
            return "";
        }
        byte[] add = ByteLevelAlphabet.tokenBytes(tokenizer.tokenString(id));
        byte[] buf = Arrays.copyOf(pending, pending.length + add.length);
        System.arraycopy(add, 0, buf, pending.length, add.length);
        int tail = Utf8.incompleteTail(buf, buf.length);
        pending = Arrays.copyOfRange(buf, buf.length - tail, buf.length);
        return Utf8.decodeLossy(buf, buf.length - tail);
    }

    private String pushWindow(int id) {
        tokenizer.tokenString(id); // rejects an id outside the vocabulary now rather than later
        window.add(id);
        String all = decodeWindow();
        if (all.length() <= windowPrefix.length() || all.endsWith("\uFFFD")) {
            return "";
        }
        if (!all.startsWith(windowPrefix)) {
            throw new IllegalStateException("decoding ids " + window + " of " + tokenizer.source()
                    + " changed text already emitted (\"" + windowPrefix + "\")");
        }
        String out = all.substring(windowPrefix.length());
        int newPrefixIds = window.size() - windowPrefixIds;
        window.subList(0, windowPrefixIds).clear();
        windowPrefixIds = newPrefixIds;
        windowPrefix = decodeWindow();
        return out;
    }

    private String decodeWindow() {
        int[] ids = new int[window.size()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = window.get(i);
        }
        return tokenizer.decode(ids, skipSpecialTokens);
    }
}
