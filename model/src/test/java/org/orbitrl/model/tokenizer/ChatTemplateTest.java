package org.orbitrl.model.tokenizer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Chat templates against the upstream templates: {@code chat/chat_cases.json} holds what jinja2
 * rendered from Qwen3's and DeepSeek-V3's own {@code chat_template} (as transformers'
 * {@code apply_chat_template} runs it) for system, user and assistant conversations; the renderer
 * must give the same text, character for character. The templates are also recognised from
 * their Jinja source, and anything else is refused.
 */
class ChatTemplateTest {
    private static final String BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>";

    @TempDir
    Path dir;

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "deepseek_v3"})
    void rendersLikeTheUpstreamTemplate(String name) throws Exception {
        String source = Files.readString(TokenizerFixtures.resource("chat/" + name + ".jinja"));
        JsonNode spec = TokenizerFixtures.json("chat/chat_cases.json").get("templates").get(name);
        String bos = spec.get("bos_token").isNull() ? null : spec.get("bos_token").asText();
        ChatTemplate template = ChatTemplate.detect(source, bos);
        assertEquals(name, template.name());
        List<String> mismatches = new ArrayList<>();
        JsonNode cases = spec.get("cases");
        for (int i = 0; i < cases.size(); i++) {
            JsonNode c = cases.get(i);
            List<ChatMessage> messages = new ArrayList<>();
            for (JsonNode m : c.get("messages")) {
                JsonNode r = m.get("reasoning_content");
                messages.add(new ChatMessage(m.get("role").asText(), m.get("content").asText(), r == null ? null : r.asText()));
            }
            JsonNode thinking = c.get("enable_thinking");
            ChatOptions options = new ChatOptions(c.get("add_generation_prompt").asBoolean(),
                    thinking.isNull() || thinking.asBoolean());
            String expected = c.get("rendered").asText();
            String got = template.render(messages, options);
            if (!expected.equals(got)) {
                mismatches.add("case " + i + " " + options + "\n  expected " + TokenizerFixtures.show(expected) + "\n  got      "
                        + TokenizerFixtures.show(got));
            }
        }
        assertTrue(cases.size() >= 60, "cases: " + cases.size());
        assertTrue(mismatches.isEmpty(), mismatches.size() + " of " + cases.size() + " differ:\n"
                + String.join("\n", mismatches.subList(0, Math.min(6, mismatches.size()))));
    }

    @Test
    void handWrittenPromptsFromTheTemplates() {
        List<ChatMessage> prompt = List.of(ChatMessage.system("You are a calculator."), ChatMessage.user("123+456="));
        ChatTemplate qwen = ChatTemplate.byName("qwen3");
        assertEquals("<|im_start|>system\nYou are a calculator.<|im_end|>\n<|im_start|>user\n123+456=<|im_end|>\n"
                + "<|im_start|>assistant\n", qwen.render(prompt));
        assertEquals("<|im_start|>system\nYou are a calculator.<|im_end|>\n<|im_start|>user\n123+456=<|im_end|>\n"
                + "<|im_start|>assistant\n<think>\n\n</think>\n\n", qwen.render(prompt, ChatOptions.GENERATION_NO_THINKING));
        assertEquals(BOS + "You are a calculator.<\uff5cUser\uff5c>123+456=<\uff5cAssistant\uff5c>",
                ChatTemplate.byName("deepseek_v3").render(prompt));
        assertEquals(BOS + "You are a calculator.<\uff5cUser\uff5c>123+456=<\uff5cAssistant\uff5c>579"
                        + "<\uff5cend\u2581of\u2581sentence\uff5c><\uff5cUser\uff5c>x",
                ChatTemplate.byName("deepseek_v3").render(List.of(prompt.get(0), prompt.get(1),
                        ChatMessage.assistant("579"), ChatMessage.user("x")), ChatOptions.TRANSCRIPT));
        assertEquals("You are a calculator.123+456=", ChatTemplate.byName("raw").render(prompt));
    }

    @Test
    void renderedPromptEncodesWithTheControlTokensAsSingleIds() {
        Tokenizer tok = TokenizerFixtures.tokenizer("qwen3");
        String prompt = ChatTemplate.byName("qwen3").render(List.of(ChatMessage.user("What is 2+3?")),
                ChatOptions.GENERATION_NO_THINKING);
        int[] ids = tok.encode(prompt);
        int start = tok.tokenId("<|im_start|>").orElseThrow();
        int end = tok.tokenId("<|im_end|>").orElseThrow();
        assertEquals(start, ids[0]);
        assertEquals(2, java.util.Arrays.stream(ids).filter(i -> i == start).count());
        assertEquals(1, java.util.Arrays.stream(ids).filter(i -> i == end).count());
        assertEquals(tok.tokenId("</think>").orElseThrow(), ids[ids.length - 2]);
        assertEquals(prompt, tok.decode(ids));
    }

    @Test
    void otherTemplatesAreRefusedWithTheSupportedList() {
        String chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
                + " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ChatTemplate.detect(chatml, null));
        assertTrue(e.getMessage().contains("ChatML template other than Qwen3") && e.getMessage().contains("deepseek_v3"),
                e.getMessage());
        String r1 = "{{ bos_token }}{{ ns.system_prompt }}{{'<｜User｜>' + message['content']}}{% set content ="
                + " content.split('</think>')[-1] %}{{'<｜Assistant｜><think>\\n'}}";
        e = assertThrows(IllegalArgumentException.class, () -> ChatTemplate.detect(r1, null));
        assertTrue(e.getMessage().contains("DeepSeek template other than DeepSeek-V3"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> ChatTemplate.byName("llama3"));
        assertTrue(e.getMessage().contains("qwen3, deepseek_v3, raw"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new ChatMessage("tool", "x", null));
    }

    @Test
    void templateAndBosTokenComeFromTokenizerConfig() throws Exception {
        var mapper = new com.fasterxml.jackson.databind.ObjectMapper();
        var config = mapper.createObjectNode();
        config.put("chat_template", Files.readString(TokenizerFixtures.resource("chat/deepseek_v3.jinja")));
        config.putObject("bos_token").put("__type", "AddedToken").put("content", "<B>");
        Path file = dir.resolve("tokenizer_config.json");
        Files.writeString(file, mapper.writeValueAsString(config));
        ChatTemplate t = ChatTemplate.fromModelDirectory(dir);
        assertEquals("deepseek_v3", t.name());
        assertEquals("<B><\uff5cUser\uff5c>hi<\uff5cAssistant\uff5c>", t.render(List.of(ChatMessage.user("hi"))));

        config.put("chat_template", Files.readString(TokenizerFixtures.resource("chat/qwen3.jinja")));
        Files.writeString(file, mapper.writeValueAsString(config));
        assertEquals("qwen3", ChatTemplate.fromTokenizerConfig(file).name());

        config.remove("chat_template");
        Files.writeString(file, mapper.writeValueAsString(config));
        TokenizerFormatException e = assertThrows(TokenizerFormatException.class, () -> ChatTemplate.fromTokenizerConfig(file));
        assertEquals("chat_template", e.key());
        assertTrue(e.getMessage().startsWith(file.toString()), e.getMessage());

        config.put("chat_template", "{{ messages }}");
        Files.writeString(file, mapper.writeValueAsString(config));
        e = assertThrows(TokenizerFormatException.class, () -> ChatTemplate.fromTokenizerConfig(file));
        assertTrue(e.getMessage().contains("not recognised") && e.getMessage().contains("supported"), e.getMessage());
    }
}
