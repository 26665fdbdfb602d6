package org.orbitrl.model.tokenizer;

/**
 * How to render a conversation.
 *
 * @param addGenerationPrompt end with the opening of an assistant turn, for the model to continue
 * @param enableThinking      Qwen3: when false, the assistant turn opens with an empty
 *                            {@code <think>\n\n</think>\n\n} block so the model answers directly;
 *                            other templates ignore it
 */
public record ChatOptions(boolean addGenerationPrompt, boolean enableThinking) {
    /** A prompt for generation, thinking allowed (the templates' own default). */
    public static final ChatOptions GENERATION = new ChatOptions(true, true);
    /** A prompt for generation that asks Qwen3 to answer without thinking. */
    public static final ChatOptions GENERATION_NO_THINKING = new ChatOptions(true, false);
    /** A finished conversation, without an opened assistant turn. */
    public static final ChatOptions TRANSCRIPT = new ChatOptions(false, true);
}
