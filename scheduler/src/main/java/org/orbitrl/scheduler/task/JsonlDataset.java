package org.orbitrl.scheduler.task;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A JSONL dataset: one {@code {"prompt": "...", "answer": "..."}} object per line. {@code answer}
 * may be a string or a number; the reference answer is read from it by a {@link ReferenceFormat}.
 * Other keys with scalar values are kept in the problem's metadata, as are {@code file},
 * {@code line} and the whole {@code answer_field} (a GSM8K worked solution, say).
 *
 * <p>Blank lines are ignored. Every other line that cannot be used is skipped and reported: the
 * loader returns the problems together with a {@link DatasetIssue} per skipped line (file and
 * line number), and logs a warning per issue and a summary with counts by kind.
 *
 * @param file     the file read
 * @param problems the usable lines, in file order; ids are {@code <file name>:<line>}
 * @param issues   the skipped lines, in file order
 */
public record JsonlDataset(Path file, List<Problem> problems, List<DatasetIssue> issues) {

    private static final Logger LOG = LoggerFactory.getLogger(JsonlDataset.class);
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);

    public JsonlDataset {
        problems = List.copyOf(problems);
        issues = List.copyOf(issues);
    }

    /**
     * Reads {@code file}.
     *
     * @throws UncheckedIOException if the file cannot be read (an unreadable line is an issue, not
     *                              an exception)
     */
    public static JsonlDataset load(Path file, ReferenceFormat format) {
        List<Problem> problems = new ArrayList<>();
        List<DatasetIssue> issues = new ArrayList<>();
        String name = file.getFileName().toString();
        try (InputStream in = Files.newInputStream(file)) {
            byte[] chunk = new byte[1 << 16];
            ByteArrayOutputStream pending = new ByteArrayOutputStream(); // the current line's bytes so far
            long lineNo = 0;
            for (int n = in.read(chunk); n >= 0; n = in.read(chunk)) {
                int from = 0;
                for (int i = 0; i < n; i++) {
                    if (chunk[i] == '\n') {
                        pending.write(chunk, from, i - from);
                        line(file, name, ++lineNo, pending.toByteArray(), format, problems, issues);
                        pending.reset();
                        from = i + 1;
                    }
                }
                pending.write(chunk, from, n - from);
            }
            if (pending.size() > 0) {
                line(file, name, ++lineNo, pending.toByteArray(), format, problems, issues);
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read dataset " + file + ": " + e.getMessage(), e);
        }
        JsonlDataset d = new JsonlDataset(file, problems, issues);
        d.logIssues();
        return d;
    }

    /** Logs a warning per issue and one summary line with counts by kind; nothing if none. */
    void logIssues() {
        if (issues.isEmpty()) {
            return;
        }
        Map<DatasetIssue.Kind, Integer> counts = new EnumMap<>(DatasetIssue.Kind.class);
        for (DatasetIssue i : issues) {
            LOG.warn("skipped {}", i);
            counts.merge(i.kind(), 1, Integer::sum);
        }
        LOG.warn("{}: {} problems loaded, {} lines skipped {}", file, problems.size(), issues.size(), counts);
    }

    private static void line(Path file, String name, long lineNo, byte[] bytes, ReferenceFormat format,
                             List<Problem> problems, List<DatasetIssue> issues) {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            issues.add(new DatasetIssue(file, lineNo, DatasetIssue.Kind.BAD_ENCODING, "not valid UTF-8"));
            return;
        }
        if (lineNo == 1 && text.startsWith("\uFEFF")) {
            text = text.substring(1);
        }
        if (text.endsWith("\r")) {
            text = text.substring(0, text.length() - 1);
        }
        if (text.isBlank()) {
            return;
        }
        JsonNode node;
        try {
            node = JSON.readTree(text);
        } catch (JsonProcessingException e) {
            issues.add(new DatasetIssue(file, lineNo, DatasetIssue.Kind.BAD_JSON, "not valid JSON: "
                    + e.getOriginalMessage()));
            return;
        }
        if (!node.isObject()) {
            issues.add(new DatasetIssue(file, lineNo, DatasetIssue.Kind.NOT_AN_OBJECT, "expected a JSON object"
                    + " {\"prompt\": ..., \"answer\": ...}, got " + node.getNodeType().name().toLowerCase()));
            return;
        }
        JsonNode prompt = node.get("prompt");
        JsonNode answer = node.get("answer");
        if (prompt == null || answer == null) {
            String missing = prompt == null && answer == null ? "\"prompt\" and \"answer\""
                    : prompt == null ? "\"prompt\"" : "\"answer\"";
            issues.add(new DatasetIssue(file, lineNo, DatasetIssue.Kind.MISSING_KEY, "missing key " + missing));
            return;
        }
        if (!prompt.isTextual()) {
            issues.add(new DatasetIssue(file, lineNo, DatasetIssue.Kind.WRONG_TYPE, "\"prompt\" must be a string, got "
                    + prompt.getNodeType().name().toLowerCase()));
            return;
        }
        if (!answer.isTextual() && !answer.isNumber()) {
            issues.add(new DatasetIssue(file, lineNo, DatasetIssue.Kind.WRONG_TYPE,
                    "\"answer\" must be a string or a number, got " + answer.getNodeType().name().toLowerCase()));
            return;
        }
        if (prompt.asText().isBlank()) {
            issues.add(new DatasetIssue(file, lineNo, DatasetIssue.Kind.NO_ANSWER, "empty \"prompt\""));
            return;
        }
        String field = answer.asText();
        Optional<String> reference = Answers.reference(field, format);
        if (reference.isEmpty()) {
            issues.add(new DatasetIssue(file, lineNo, DatasetIssue.Kind.NO_ANSWER, "no answer in \"answer\" "
                    + abbreviate(field) + " (answer format " + format.name().toLowerCase() + ")"));
            return;
        }
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("file", name);
        meta.put("line", Long.toString(lineNo));
        meta.put("answer_field", field);
        for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> e = it.next();
            if (!e.getKey().equals("prompt") && !e.getKey().equals("answer") && e.getValue().isValueNode()
                    && !meta.containsKey(e.getKey())) {
                meta.put(e.getKey(), e.getValue().asText());
            }
        }
        problems.add(new Problem(name + ":" + lineNo, prompt.asText(), reference.get(), meta));
    }

    private static String abbreviate(String s) {
        String one = s.replace("\n", "\\n");
        return "\"" + (one.length() > 60 ? one.substring(0, 57) + "..." : one) + "\"";
    }
}
