package org.orbitrl.scheduler.report;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.TreeMap;

/**
 * What a {@code metrics.jsonl} file holds, read leniently: a job that died may have left a torn
 * last line, and a resumed job writes some steps twice. Unreadable lines are skipped and named in
 * {@link #notes}; of a step or evaluation written more than once, the latest line counts.
 *
 * @param steps step records, ascending step, one per step
 * @param evals evaluation records, ascending step, one per step
 * @param end   the job's end record, if it wrote one and no step or evaluation follows it
 * @param notes what was skipped or replaced, with line numbers
 */
public record MetricsHistory(List<StepRecord> steps, List<EvalRecord> evals, Optional<EndRecord> end,
                             List<String> notes) {

    public MetricsHistory {
        steps = List.copyOf(steps);
        evals = List.copyOf(evals);
        notes = List.copyOf(notes);
    }

    /**
     * Reads {@code file}.
     *
     * @throws java.nio.file.NoSuchFileException if it does not exist
     */
    public static MetricsHistory read(Path file) throws IOException {
        List<String> lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        TreeMap<Long, StepRecord> steps = new TreeMap<>();
        TreeMap<Long, EvalRecord> evals = new TreeMap<>();
        EndRecord end = null;
        List<String> notes = new ArrayList<>();
        int rewritten = 0;
        for (int i = 0; i < lines.size(); i++) {
            String line = lines.get(i);
            int no = i + 1;
            if (line.isBlank()) {
                continue;
            }
            JsonNode o;
            try {
                o = MetricsJson.MAPPER.readTree(line);
            } catch (JsonProcessingException e) {
                notes.add("line " + no + " skipped: not valid JSON" + (no == lines.size()
                        ? " (a torn last line: the job stopped while writing it)" : ""));
                continue;
            }
            String type = o.path("type").asText("");
            if (end != null && (type.equals("step") || type.equals("eval"))) {
                notes.add("the job ended at step " + end.step() + " (" + end.status() + ") and was resumed at line " + no);
                end = null;
            }
            try {
                switch (type) {
                    case "step" -> rewritten += steps.put(o.path("step").asLong(), MetricsJson.step(o)) != null ? 1 : 0;
                    case "eval" -> rewritten += evals.put(o.path("step").asLong(), MetricsJson.eval(o)) != null ? 1 : 0;
                    case "end" -> end = MetricsJson.end(o);
                    default -> notes.add("line " + no + " skipped: unknown type \"" + type + "\"");
                }
            } catch (IllegalArgumentException e) {
                notes.add("line " + no + " skipped: " + e.getMessage());
            }
        }
        if (rewritten > 0) {
            notes.add(rewritten + " records were written again for a step already recorded (a resumed run); the"
                    + " later ones are shown");
        }
        return new MetricsHistory(new ArrayList<>(steps.values()), new ArrayList<>(evals.values()),
                Optional.ofNullable(end), notes);
    }
}
