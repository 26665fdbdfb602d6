package org.orbitrl.model.tokenizer;

import java.util.List;

/**
 * Qwen3's hybrid-thinking ChatML template (the {@code chat_template} of Qwen3's
 * tokenizer_config.json), for system, user and assistant messages:
 *
 * <pre>
 * &lt;|im_start|&gt;system\n{system}&lt;|im_end|&gt;\n&lt;|im_start|&gt;user\n{user}&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n
 * </pre>
 *
 * followed by {@code <think>\n\n</think>\n\n} when thinking is disabled. Assistant turns before
 * the last user query lose their reasoning; turns after it are written as
 * {@code <think>\n{reasoning}\n</think>\n\n{answer}} (the last one always, others when they have
 * reasoning), with reasoning taken from {@link ChatMessage#reasoningContent()} or split out of
 * {@code <think>...</think>} in the content, exactly as the template does.
 */
final class Qwen3ChatTemplate implements ChatTemplate {

    @Override
    public String name() {
        return "qwen3";
    }

    @Override
    public String render(List<ChatMessage> messages, ChatOptions options) {
        StringBuilder out = new StringBuilder();
        if (!messages.isEmpty() && messages.get(0).role().equals("system")) {
            out.append("<|im_start|>system\n").append(messages.get(0).content()).append("<|im_end|>\n");
        }
        // The last user message that is a real query (not a wrapped tool response).
        int lastQuery = messages.size() - 1;
        for (int i = messages.size() - 1; i >= 0; i--) {
            ChatMessage m = messages.get(i);
            if (m.role().equals("user")
                    && !(m.content().startsWith("<tool_response>") && m.content().endsWith("</tool_response>"))) {
                lastQuery = i;
                break;
            }
        }
        for (int i = 0; i < messages.size(); i++) {
            ChatMessage m = messages.get(i);
            switch (m.role()) {
                case "user" -> turn(out, "user", m.content());
                case "system" -> {
                    if (i > 0) {
                        turn(out, "system", m.content());
                    }
                }
                default -> assistant(out, m, i > lastQuery, i == messages.size() - 1);
            }
        }
        if (options.addGenerationPrompt()) {
            out.append("<|im_start|>assistant\n");
            if (!options.enableThinking()) {
                out.append("<think>\n\n</think>\n\n");
            }
        }
        return out.toString();
    }

    private static void turn(StringBuilder out, String role, String content) {
        out.append("<|im_start|>").append(role).append('\n').append(content).append("<|im_end|>\n");
    }

    private static void assistant(StringBuilder out, ChatMessage m, boolean afterLastQuery, boolean last) {
        String content = m.content();
        String reasoning = "";
        if (m.reasoningContent() != null) {
            reasoning = m.reasoningContent();
        } else if (content.contains("</think>")) {
            String before = content.substring(0, content.indexOf("</think>"));
            before = stripTrailingNewlines(before);
            int open = before.lastIndexOf("<think>");
            reasoning = stripLeadingNewlines(open >= 0 ? before.substring(open + "<think>".length()) : before);
            content = stripLeadingNewlines(content.substring(content.lastIndexOf("</think>") + "</think>".length()));
        }
        out.append("<|im_start|>assistant\n");
        if (afterLastQuery && (last || !reasoning.isEmpty())) {
            out.append("<think>\n").append(stripTrailingNewlines(stripLeadingNewlines(reasoning))).append("\n</think>\n\n")
                    .append(stripLeadingNewlines(content));
        } else {
            out.append(content);
        }
        out.append("<|im_end|>\n");
    }

    private static String stripLeadingNewlines(String s) {
        int i = 0;
        while (i < s.length() && s.charAt(i) == '\n') {
            i++;
        }
        return s.substring(i);
    }

    private static String stripTrailingNewlines(String s) {
        int e = s.length();
        while (e > 0 && s.charAt(e - 1) == '\n') {
            e--;
        }
        return s.substring(0, e);
    }
}
