/**
 * Hugging Face {@code tokenizer.json} byte-level BPE tokenizers (Qwen3, DeepSeek-V3, gpt-oss style)
 * and chat templates for prompts.
 *
 * <p>{@link org.orbitrl.model.tokenizer.Tokenizer} encodes text to token ids and decodes them back
 * exactly as the Hugging Face {@code tokenizers} library does; {@link
 * org.orbitrl.model.tokenizer.IncrementalDecoder} turns a stream of generated ids into text one
 * complete character at a time, and {@link org.orbitrl.model.tokenizer.StopStringMatcher} finds
 * stop strings in that text across token boundaries. {@link
 * org.orbitrl.model.tokenizer.ChatTemplate} renders the chat formats of the supported model
 * families without a template engine.
 */
package org.orbitrl.model.tokenizer;
