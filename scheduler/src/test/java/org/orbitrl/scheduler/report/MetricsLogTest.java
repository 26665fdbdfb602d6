package org.orbitrl.scheduler.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** metrics.jsonl: the line format, the round trip, torn lines and resumed runs. */
class MetricsLogTest {

    @TempDir
    Path dir;

    private static final Instant T0 = Instant.parse("2026-03-01T10:00:00Z");

    static StepRecord step(long s, double reward) {
        return StepRecord.of(s, T0.plusSeconds(2 * s), reward, reward / 2, 1.5e-6 * s, 4e-5 * s, 640, 2.0, s,
                Map.of("loss", 0.5 / s, "lr", 1e-5), Map.of("weights", 3L << 20, "kv_cache", 1000L * s));
    }

    @Test
    void lineFormat() throws IOException {
        try (MetricsLog log = MetricsLog.open(dir.resolve("job"))) {
            log.step(StepRecord.of(3, T0, 0.25, 0.125, Double.NaN, Double.NaN, 512, 2.0, 3, Map.of("kl", 0.01),
                    Map.of("weights", 1048576L)));
            log.eval(new EvalRecord(0, T0, 0.2, new TreeMap<>(Map.of(1, 0.21, 4, 0.45))));
            log.end(new EndRecord(3, T0, "completed", ""));
        }
        List<String> lines = Files.readAllLines(dir.resolve("job").resolve("metrics.jsonl"));
        ObjectMapper json = new ObjectMapper();
        assertEquals(json.readTree("""
                {"type":"step","step":3,"time":"2026-03-01T10:00:00Z","reward_mean":0.25,"accuracy":0.125,
                 "logprob_gap_mean":null,"logprob_gap_max":null,"tokens":512,"tokens_per_s":256.0,
                 "step_seconds":2.0,"adapter_version":3,"extras":{"kl":0.01},"memory_bytes":{"weights":1048576}}"""),
                json.readTree(lines.get(0)));
        assertEquals(json.readTree("""
                {"type":"eval","step":0,"time":"2026-03-01T10:00:00Z","accuracy":0.2,"pass_at_k":{"1":0.21,"4":0.45}}"""),
                json.readTree(lines.get(1)));
        assertEquals(json.readTree("""
                {"type":"end","step":3,"time":"2026-03-01T10:00:00Z","status":"completed","message":""}"""),
                json.readTree(lines.get(2)));
        assertEquals(3, lines.size());
    }

    @Test
    void roundTrip() throws IOException {
        List<StepRecord> steps = List.of(step(1, 0.1), step(2, 0.3), step(3, 0.2));
        EvalRecord e0 = new EvalRecord(0, T0, 0.1, new TreeMap<>(Map.of(1, 0.12, 8, 0.5)));
        EvalRecord e3 = new EvalRecord(3, T0.plusSeconds(7), Double.NaN, new TreeMap<>(Map.of(1, 0.2, 8, 0.6)));
        EndRecord end = new EndRecord(3, T0.plusSeconds(8), "stopped", "by orbitctl");
        try (MetricsLog log = MetricsLog.open(dir)) {
            log.eval(e0);
            steps.forEach(log::step);
            log.eval(e3);
            log.end(end);
        }
        MetricsHistory h = MetricsHistory.read(dir.resolve(MetricsLog.FILE_NAME));
        assertEquals(steps, h.steps());
        assertEquals(List.of(e0, e3), h.evals());
        assertEquals(Optional.of(end), h.end());
        assertEquals(List.of(), h.notes());
    }

    @Test
    void tornLineAndResume() throws IOException {
        Path file = dir.resolve(MetricsLog.FILE_NAME);
        try (MetricsLog log = MetricsLog.open(dir)) {
            log.step(step(1, 0.1));
            log.step(step(2, 0.2));
            log.end(new EndRecord(2, T0, "completed", ""));
        }
        // a second run died in the middle of writing a line
        Files.writeString(file, "{\"type\":\"step\",\"step\":3,\"rew", StandardCharsets.UTF_8, StandardOpenOption.APPEND);
        MetricsHistory died = MetricsHistory.read(file);
        assertEquals(List.of(1L, 2L), died.steps().stream().map(StepRecord::step).toList());
        assertTrue(died.notes().getLast().contains("line 4 skipped: not valid JSON (a torn last line"), died.notes().toString());

        // a third run resumed from the checkpoint of step 1: steps 2 and 3 again
        try (MetricsLog log = MetricsLog.open(dir)) {
            log.step(step(2, 0.9));
            log.step(step(3, 0.8));
        }
        MetricsHistory h = MetricsHistory.read(file);
        assertEquals(List.of(step(1, 0.1), step(2, 0.9), step(3, 0.8)), h.steps());
        assertEquals(Optional.empty(), h.end(), "steps follow the end record: the job was resumed");
        String notes = String.join("\n", h.notes());
        assertTrue(notes.contains("line 4 skipped: not valid JSON"), notes);
        assertTrue(!notes.contains("torn"), "line 4 is no longer the last line: " + notes);
        assertTrue(notes.contains("ended at step 2 (completed) and was resumed at line 5"), notes);
        assertTrue(notes.contains("1 records were written again"), notes);
        assertEquals(6, Files.readAllLines(file).size(), "the torn line was terminated, not glued to the next");
    }

    @Test
    void unknownAndBadLinesAreNamed() throws IOException {
        Path file = dir.resolve(MetricsLog.FILE_NAME);
        Files.writeString(file, """
                {"type":"step","step":1,"reward_mean":0.5}
                {"type":"sample","step":1}
                [1,2]
                {"type":"eval","step":1,"pass_at_k":{"one":0.5}}
                {"type":"step","step":2,"time":"yesterday"}

                {"type":"eval","step":1,"accuracy":0.5}
                """);
        MetricsHistory h = MetricsHistory.read(file);
        assertEquals(1, h.steps().size());
        assertEquals(0.5, h.steps().getFirst().rewardMean());
        assertTrue(Double.isNaN(h.steps().getFirst().accuracy()), "a missing value reads as NaN");
        assertEquals(1, h.evals().size());
        assertEquals(List.of("line 2 skipped: unknown type \"sample\"", "line 3 skipped: unknown type \"\"",
                "line 4 skipped: pass_at_k key \"one\" is not an integer k",
                "line 5 skipped: time \"yesterday\" is not an ISO-8601 instant"), h.notes());
    }
}
