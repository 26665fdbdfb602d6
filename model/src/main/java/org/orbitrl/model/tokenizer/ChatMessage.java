package org.orbitrl.model.tokenizer;

/**
 * One message of a conversation to render with a {@link ChatTemplate}.
 *
 * @param role             {@code system}, {@code user} or {@code assistant}
 * @param content          the text (may contain {@code <think>...</think>} for an assistant)
 * @param reasoningContent an assistant's reasoning kept apart from {@code content}, or null
 */
public record ChatMessage(String role, String content, String reasoningContent) {

    public ChatMessage {
        if (!role.equals("system") && !role.equals("user") && !role.equals("assistant")) {
            throw new IllegalArgumentException("unsupported chat role '" + role
                    + "' (supported: system, user, assistant; tool calls and tool results are not rendered)");
        }
        if (content == null) {
            throw new IllegalArgumentException("a " + role + " message needs content");
        }
        if (reasoningContent != null && !role.equals("assistant")) {
            throw new IllegalArgumentException("only assistant messages carry reasoning content");
        }
    }

    public static ChatMessage system(String content) {
        return new ChatMessage("system", content, null);
    }

    public static ChatMessage user(String content) {
        return new ChatMessage("user", content, null);
    }

    public static ChatMessage assistant(String content) {
        return new ChatMessage("assistant", content, null);
    }

    public static ChatMessage assistant(String content, String reasoningContent) {
        return new ChatMessage("assistant", content, reasoningContent);
    }
}
