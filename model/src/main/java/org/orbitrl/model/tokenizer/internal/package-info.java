/**
 * The parts behind {@link org.orbitrl.model.tokenizer.Tokenizer}: the {@code tokenizer.json}
 * reader, normalizers, pre-tokenizers, the BPE model, added-token matching, post-processors and
 * decoders. Not API.
 */
package org.orbitrl.model.tokenizer.internal;
