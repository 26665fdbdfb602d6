package org.orbitrl.tools;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.scheduler.report.EvalRecord;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.StepRecord;

/** {@code orbit report DIR --compare OTHER}: one page with both runs' evaluations; a folder without metrics is named. */
class ReportCommandTest {
    private static final Instant T0 = Instant.parse("2026-03-01T10:00:00Z");

    /** Evaluations at steps 0 and 4 with accuracy {@code first} then {@code last}; pass@1 is 0.8x accuracy. */
    private static Path job(Path dir, double first, double last) throws Exception {
        try (MetricsLog log = MetricsLog.open(dir)) {
            log.eval(new EvalRecord(0, T0, first, new TreeMap<>(Map.of(1, 0.8 * first))));
            for (int s = 1; s <= 4; s++) {
                log.step(StepRecord.of(s, T0.plusSeconds(s), 0.1 * s, 0.1 * s, 0, 0, 100, 1.0 + 0.1 * s, s, Map.of(),
                        Map.of()));
            }
            log.eval(new EvalRecord(4, T0.plusSeconds(5), last, new TreeMap<>(Map.of(1, 0.8 * last))));
        }
        return dir;
    }

    @Test
    void comparesTwoRuns(@TempDir Path tmp) throws Exception {
        Path sync = job(tmp.resolve("sync"), 0.25, 0.5);
        Path async = job(tmp.resolve("async"), 0.25, 0.45);
        CommandRun r = CommandRun.orbit("report", sync.toString(), "--compare", async.toString());
        assertEquals(0, r.code(), r.err());
        Path index = sync.resolve("compare").resolve("index.html");
        assertEquals(index.toString(), r.out().strip());
        String html = Files.readString(index);
        for (String cell : List.of("<td>sync</td><td>4</td>", "<td>0.250 → 0.500</td><td>0.200 → 0.400</td>",
                "<td>async</td><td>4</td>", "<td>0.250 → 0.450</td><td>0.200 → 0.360</td>")) {
            assertTrue(html.contains(cell), "the page has " + cell + ":\n" + html);
        }
        assertTrue(Files.size(sync.resolve("compare").resolve("compare_eval_accuracy.png")) > 5_000);
    }

    @Test
    void aFolderWithoutMetricsIsNamed(@TempDir Path tmp) throws Exception {
        Path sync = job(tmp.resolve("sync"), 0.25, 0.5);
        Path empty = Files.createDirectories(tmp.resolve("empty"));
        CommandRun r = CommandRun.orbit("report", sync.toString(), "--compare", empty.toString());
        assertEquals(1, r.code());
        assertTrue(r.err().contains(empty.resolve(MetricsLog.FILE_NAME) + " does not exist"), r.err());
    }
}
