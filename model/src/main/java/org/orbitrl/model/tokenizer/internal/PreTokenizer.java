package org.orbitrl.model.tokenizer.internal;

import java.util.List;

/**
 * One stage of pre-tokenization: cuts a piece of text into smaller pieces (a regex split) or
 * rewrites it (byte-level mapping). BPE then runs on each final piece separately.
 */
public interface PreTokenizer {

    /** Appends the pieces {@code piece} becomes to {@code out}; never appends empty pieces. */
    void split(String piece, List<String> out);
}
