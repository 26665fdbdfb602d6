package org.orbitrl.model.tokenizer;

/**
 * A token of a tokenizer.json's {@code added_tokens}: matched in the text as a whole before
 * pre-tokenization, so that it is never cut by BPE.
 *
 * @param id         its id
 * @param content    the text it stands for
 * @param special    a control token ({@code <|im_end|>}): left out by decoding that skips special
 *                   tokens, and read as plain text when special tokens are not parsed
 * @param singleWord matched only when not inside a word (the characters on both sides are not
 *                   letters, digits or '_')
 * @param lstrip     a match also takes the whitespace before it
 * @param rstrip     a match also takes the whitespace after it
 * @param normalized matched in the normalized text (its content normalized too) rather than the raw text
 */
public record AddedToken(int id, String content, boolean special, boolean singleWord, boolean lstrip,
                         boolean rstrip, boolean normalized) {

    public AddedToken {
        if (content == null || content.isEmpty()) {
            throw new IllegalArgumentException("added token " + id + " has empty content");
        }
    }
}
