package org.orbitrl.scheduler.task;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** JSONL datasets: good lines become problems, every bad line is reported with its line number. */
class JsonlDatasetTest {

    @TempDir
    Path dir;

    @Test
    void goodAndBadLines() throws IOException {
        Path file = dir.resolve("mixed.jsonl");
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        String[] lines = {
            /* 1 */ "{\"prompt\": \"Natalia sold 48 clips. How many?\", \"answer\": \"48/2 = 24\\n#### 72\", \"id\": 7}",
            /* 2 */ "",
            /* 3 */ "{\"prompt\": \"x\", \"answer\": ",
            /* 4 */ "[1, 2]",
            /* 5 */ "{\"prompt\": \"no answer here\"}",
            /* 6 */ "{\"prompt\": 12, \"answer\": \"#### 1\"}",
            /* 7 */ "{\"prompt\": \"p\", \"answer\": {\"value\": 1}}",
            /* 8 */ "{\"prompt\": \"What is 6*7?\", \"answer\": 42}",
            /* 9 */ "{\"prompt\": \"p\", \"answer\": \"forty-two, no marker\"}",
            /* 10 */ null, // invalid UTF-8
            /* 11 */ "{\"prompt\": \"a\", \"answer\": \"#### 1\"} {\"prompt\": \"b\", \"answer\": \"#### 2\"}",
            /* 12 */ "{\"prompt\": \"a\", \"prompt\": \"b\", \"answer\": \"#### 2\"}",
            /* 13 */ "{\"prompt\": \"CRLF line\", \"answer\": \"#### 1,000\"}\r",
            /* 14 */ "   ",
            /* 15 */ "{\"prompt\": \"   \", \"answer\": \"#### 3\"}",
            /* 16 */ "{\"answer\": \"#### 3\"}",
            /* 17 */ "{\"prompt\": \"last line, no newline\", \"answer\": \"\\\\boxed{3/4}\"}",
        };
        for (int i = 0; i < lines.length; i++) {
            if (lines[i] == null) {
                bytes.write(new byte[] {'{', '"', (byte) 0xc3, (byte) 0x28, '"', '}'});
            } else {
                bytes.write(lines[i].getBytes(StandardCharsets.UTF_8));
            }
            if (i < lines.length - 1) {
                bytes.write('\n');
            }
        }
        Files.write(file, bytes.toByteArray());

        JsonlDataset d = JsonlDataset.load(file, ReferenceFormat.AUTO);

        assertEquals(List.of("mixed.jsonl:1", "mixed.jsonl:8", "mixed.jsonl:9", "mixed.jsonl:13", "mixed.jsonl:17"),
                d.problems().stream().map(Problem::id).toList());
        assertEquals(List.of("72", "42", "forty-two, no marker", "1,000", "3/4"), d.problems().stream().map(Problem::answer).toList());
        assertEquals("Natalia sold 48 clips. How many?", d.problems().getFirst().prompt());
        assertEquals("7", d.problems().getFirst().metadata().get("id"));
        assertEquals("48/2 = 24\n#### 72", d.problems().getFirst().metadata().get("answer_field"));
        assertEquals("CRLF line", d.problems().get(3).prompt());

        List<String> issues = d.issues().stream().map(i -> i.line() + " " + i.kind()).toList();
        assertEquals(List.of("3 BAD_JSON", "4 NOT_AN_OBJECT", "5 MISSING_KEY", "6 WRONG_TYPE", "7 WRONG_TYPE",
                "10 BAD_ENCODING", "11 BAD_JSON", "12 BAD_JSON", "15 NO_ANSWER", "16 MISSING_KEY"), issues);
        DatasetIssue missing = d.issues().get(2);
        assertEquals(file + ":5: missing key \"answer\"", missing.toString());
        assertTrue(d.issues().get(3).message().contains("\"prompt\" must be a string, got number"),
                d.issues().get(3).message());
        assertTrue(d.issues().get(4).message().contains("got object"), d.issues().get(4).message());
        assertTrue(d.issues().get(7).message().toLowerCase().contains("duplicate"), d.issues().get(7).message());

        // every line is accounted for: a problem, an issue, or blank
        Set<Long> seen = new HashSet<>();
        d.problems().forEach(p -> seen.add(Long.parseLong(p.metadata().get("line"))));
        d.issues().forEach(i -> seen.add(i.line()));
        seen.add(2L);
        seen.add(14L);
        assertEquals(lines.length, seen.size());

        // line 9 has no #### and no \boxed{}: auto takes the whole field; gsm8k reports it
        JsonlDataset strict = JsonlDataset.load(file, ReferenceFormat.GSM8K);
        assertEquals(List.of("mixed.jsonl:1", "mixed.jsonl:13"), strict.problems().stream().map(Problem::id).toList());
        assertTrue(strict.issues().stream().anyMatch(i -> i.line() == 9 && i.kind() == DatasetIssue.Kind.NO_ANSWER
                && i.message().contains("gsm8k")), strict.issues().toString());
        assertTrue(strict.issues().stream().anyMatch(i -> i.line() == 8 && i.kind() == DatasetIssue.Kind.NO_ANSWER),
                strict.issues().toString());
    }

    @Test
    void aMissingFileIsAnError() {
        UncheckedIOException e = assertThrows(UncheckedIOException.class,
                () -> JsonlDataset.load(dir.resolve("absent.jsonl"), ReferenceFormat.AUTO));
        assertTrue(e.getMessage().contains("absent.jsonl"), e.getMessage());
    }

    @Test
    void longFilesSpanReadBuffers() throws IOException {
        // lines longer than the 64 KiB read buffer and many lines
        StringBuilder sb = new StringBuilder();
        String longPrompt = "x".repeat(100_000);
        sb.append("{\"prompt\": \"").append(longPrompt).append("\", \"answer\": \"#### 1\"}\n");
        for (int i = 0; i < 3000; i++) {
            sb.append("{\"prompt\": \"q").append(i).append("\", \"answer\": \"#### ").append(i).append("\"}\n");
        }
        sb.append("not json\n");
        Path file = dir.resolve("long.jsonl");
        Files.writeString(file, sb);
        JsonlDataset d = JsonlDataset.load(file, ReferenceFormat.GSM8K);
        assertEquals(3001, d.problems().size());
        assertEquals(longPrompt, d.problems().getFirst().prompt());
        assertEquals("q2999", d.problems().getLast().prompt());
        assertEquals("long.jsonl:3001", d.problems().getLast().id());
        assertEquals(1, d.issues().size());
        assertEquals(3002, d.issues().getFirst().line());
    }
}
