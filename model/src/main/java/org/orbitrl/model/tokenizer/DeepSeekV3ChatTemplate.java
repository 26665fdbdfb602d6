package org.orbitrl.model.tokenizer;

import java.util.List;

/**
 * DeepSeek-V3's template (the {@code chat_template} of DeepSeek-V3's tokenizer_config.json), for
 * system, user and assistant messages:
 *
 * <pre>
 * {bos}{system prompts joined by "\n\n"}&lt;｜User｜&gt;{user}&lt;｜Assistant｜&gt;{answer}&lt;｜end▁of▁sentence｜&gt;...&lt;｜User｜&gt;{user}&lt;｜Assistant｜&gt;
 * </pre>
 *
 * The BOS token is written by the template, so the rendered prompt is encoded without adding
 * special tokens.
 */
final class DeepSeekV3ChatTemplate implements ChatTemplate {
    static final String DEFAULT_BOS = "<｜begin▁of▁sentence｜>";
    private static final String EOS = "<｜end▁of▁sentence｜>";

    private final String bosToken;

    DeepSeekV3ChatTemplate(String bosToken) {
        this.bosToken = bosToken;
    }

    @Override
    public String name() {
        return "deepseek_v3";
    }

    @Override
    public String render(List<ChatMessage> messages, ChatOptions options) {
        StringBuilder out = new StringBuilder(bosToken);
        boolean firstSystem = true;
        for (ChatMessage m : messages) {
            if (m.role().equals("system")) {
                out.append(firstSystem ? "" : "\n\n").append(m.content());
                firstSystem = false;
            }
        }
        for (ChatMessage m : messages) {
            switch (m.role()) {
                case "user" -> out.append("<｜User｜>").append(m.content());
                case "assistant" -> out.append("<｜Assistant｜>").append(m.content()).append(EOS);
                default -> {
                    // system prompts were written before the turns
                }
            }
        }
        if (options.addGenerationPrompt()) {
            out.append("<｜Assistant｜>");
        }
        return out.toString();
    }
}
