package org.orbitrl.model.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Renders a conversation into the prompt text a chat model was trained on, for the templates of
 * the supported model families, without a Jinja engine: {@code qwen3} (Qwen3's ChatML with the
 * thinking switch), {@code deepseek_v3} (DeepSeek-V3, also Kimi-K2's family), and {@code raw}
 * (contents only, for base models). The output equals what Hugging Face's
 * {@code apply_chat_template} renders from the upstream template for system, user and assistant
 * messages; tool calls are not supported.
 *
 * <p>A template is chosen by name or recognised in a model's {@code chat_template} by
 * distinctive parts of the upstream template; anything else is refused with the list of
 * supported templates, rather than rendered in a format the model was not trained on.
 */
public sealed interface ChatTemplate permits Qwen3ChatTemplate, DeepSeekV3ChatTemplate, RawChatTemplate {

    /** The names {@link #byName} accepts. */
    List<String> SUPPORTED = List.of("qwen3", "deepseek_v3", "raw");

    /** This template's name. */
    String name();

    /** The prompt text of {@code messages}. */
    String render(List<ChatMessage> messages, ChatOptions options);

    /** The prompt text of {@code messages}, ending with an opened assistant turn. */
    default String render(List<ChatMessage> messages) {
        return render(messages, ChatOptions.GENERATION);
    }

    /** The template called {@code name} (see {@link #SUPPORTED}); DeepSeek's BOS is its standard one. */
    static ChatTemplate byName(String name) {
        return switch (name) {
            case "qwen3" -> new Qwen3ChatTemplate();
            case "deepseek_v3" -> new DeepSeekV3ChatTemplate(DeepSeekV3ChatTemplate.DEFAULT_BOS);
            case "raw" -> new RawChatTemplate();
            default -> throw new IllegalArgumentException("unknown chat template '" + name + "' (supported: "
                    + String.join(", ", SUPPORTED) + ")");
        };
    }

    /**
     * The supported template that a Jinja {@code chat_template} source is, recognised by parts
     * only that template has.
     *
     * @param bosToken the model's BOS token, which DeepSeek's template writes; null for the default
     * @throws IllegalArgumentException when the source is none of the supported templates
     */
    static ChatTemplate detect(String jinjaSource, String bosToken) {
        if (jinjaSource.contains("<|im_start|>") && jinjaSource.contains("last_query_index")
                && jinjaSource.contains("enable_thinking is defined and enable_thinking is false")
                && jinjaSource.contains("<think>\\n\\n</think>\\n\\n")) {
            return new Qwen3ChatTemplate();
        }
        if (jinjaSource.contains("<｜User｜>") && jinjaSource.contains("ns.system_prompt")
                && jinjaSource.contains("{{'<｜Assistant｜>'}}") && !jinjaSource.contains("</think>")) {
            return new DeepSeekV3ChatTemplate(bosToken == null ? DeepSeekV3ChatTemplate.DEFAULT_BOS : bosToken);
        }
        String looksLike;
        if (jinjaSource.contains("<|im_start|>")) {
            looksLike = "a ChatML template other than Qwen3's hybrid-thinking one";
        } else if (jinjaSource.contains("<｜User｜>")) {
            looksLike = "a DeepSeek template other than DeepSeek-V3's (an R1-style one that strips or opens <think>?)";
        } else {
            looksLike = "not a template of a supported family";
        }
        throw new IllegalArgumentException("chat template not recognised: " + looksLike + " (supported: qwen3 = Qwen3's"
                + " chat_template, deepseek_v3 = DeepSeek-V3's chat_template, raw = contents only; choose one by name)");
    }

    /**
     * The template of a model directory: its {@code chat_template.jinja} if present, else the
     * {@code chat_template} of its {@code tokenizer_config.json} (whose {@code bos_token} is used
     * too).
     */
    static ChatTemplate fromModelDirectory(Path dir) {
        Path config = dir.resolve("tokenizer_config.json");
        Path jinja = dir.resolve("chat_template.jinja");
        if (Files.isRegularFile(jinja)) {
            String bos = Files.isRegularFile(config) ? bosToken(readJson(config), config) : null;
            try {
                return detectIn(Files.readString(jinja, StandardCharsets.UTF_8), bos, jinja, null);
            } catch (IOException e) {
                throw new TokenizerFormatException(jinja.toString(), null, "cannot read: " + e, e);
            }
        }
        return fromTokenizerConfig(config);
    }

    /** The template in a {@code tokenizer_config.json}'s {@code chat_template}. */
    static ChatTemplate fromTokenizerConfig(Path tokenizerConfig) {
        JsonNode root = readJson(tokenizerConfig);
        JsonNode t = root.get("chat_template");
        String source;
        String key = "chat_template";
        if (t == null || t.isNull()) {
            throw new TokenizerFormatException(tokenizerConfig.toString(), key, "missing: the model has no chat template"
                    + " (choose one by name: " + String.join(", ", SUPPORTED) + ")");
        } else if (t.isTextual()) {
            source = t.asText();
        } else if (t.isArray()) {
            source = null;
            for (JsonNode named : t) {
                if ("default".equals(named.path("name").asText())) {
                    source = named.path("template").asText();
                }
            }
            if (source == null) {
                throw new TokenizerFormatException(tokenizerConfig.toString(), key, "a list of templates without one named 'default'");
            }
        } else {
            throw new TokenizerFormatException(tokenizerConfig.toString(), key, "expected a string or a list of named templates");
        }
        return detectIn(source, bosToken(root, tokenizerConfig), tokenizerConfig, key);
    }

    private static ChatTemplate detectIn(String source, String bos, Path file, String key) {
        try {
            return detect(source, bos);
        } catch (IllegalArgumentException e) {
            throw new TokenizerFormatException(file.toString(), key, e.getMessage(), e);
        }
    }

    private static String bosToken(JsonNode root, Path file) {
        JsonNode bos = root.get("bos_token");
        if (bos == null || bos.isNull()) {
            return null;
        }
        if (bos.isTextual()) {
            return bos.asText();
        }
        if (bos.isObject() && bos.path("content").isTextual()) {
            return bos.get("content").asText();
        }
        throw new TokenizerFormatException(file.toString(), "bos_token", "expected a string or an object with content");
    }

    private static JsonNode readJson(Path file) {
        try {
            JsonNode root = new ObjectMapper().readTree(Files.readString(file, StandardCharsets.UTF_8));
            if (root == null || !root.isObject()) {
                throw new TokenizerFormatException(file.toString(), null, "expected a JSON object");
            }
            return root;
        } catch (IOException e) {
            throw new TokenizerFormatException(file.toString(), null, "cannot read as JSON: " + e.getMessage(), e);
        }
    }
}
