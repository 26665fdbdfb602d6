package org.orbitrl.model.tokenizer;

import java.util.List;

/**
 * No chat format: the contents of the messages, concatenated as they are. For base models that
 * are prompted with plain text (a task prompt given as one user message renders to itself).
 */
final class RawChatTemplate implements ChatTemplate {

    @Override
    public String name() {
        return "raw";
    }

    @Override
    public String render(List<ChatMessage> messages, ChatOptions options) {
        StringBuilder out = new StringBuilder();
        for (ChatMessage m : messages) {
            out.append(m.content());
        }
        return out.toString();
    }
}
