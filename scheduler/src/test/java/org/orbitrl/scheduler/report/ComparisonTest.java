package org.orbitrl.scheduler.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Two synthetic runs (seeded noise, known first and last evaluations) in one comparison: every
 * chart shows a line of each run in its own colour, and the table gives each run's first and
 * last accuracy and pass@k and the samples it trained on and dropped as stale.
 */
class ComparisonTest {

    @TempDir
    Path dir;

    private static final Instant T0 = Instant.parse("2026-03-01T10:00:00Z");

    /** 20 steps evaluated every 5; accuracy rises linearly from 0.2 by {@code slope} per step. */
    private static Path run(Path jobDir, double slope, double droppedPerStep, long seed) throws IOException {
        SplittableRandom rng = new SplittableRandom(seed);
        try (MetricsLog log = MetricsLog.open(jobDir)) {
            for (int s = 0; s <= 20; s++) {
                if (s > 0) {
                    log.step(StepRecord.of(s, T0.plusSeconds(2L * s), 0.3 + slope * s + 0.02 * rng.nextDouble(), 0.5,
                            1e-6, 1e-5, 500, 1.0 + 0.3 * rng.nextDouble(), s, droppedPerStep == 0 ? Map.of("dropped_stale", 0.0)
                                    : Map.of("dropped_stale", droppedPerStep, "train_samples", 64 - droppedPerStep),
                            Map.of("weights", 1L << 20)));
                }
                if (s % 5 == 0) {
                    double acc = 0.2 + slope * s;
                    TreeMap<Integer, Double> pass = new TreeMap<>(Map.of(1, acc / 2, 8, Math.min(1, acc * 1.5)));
                    log.eval(new EvalRecord(s, T0.plusSeconds(2L * s + 1), acc, pass));
                }
            }
            log.end(new EndRecord(20, T0.plusSeconds(50), "completed", ""));
        }
        return jobDir.resolve(MetricsLog.FILE_NAME);
    }

    @Test
    void overlaysTheRunsAndTabulatesTheirEvaluations() throws IOException {
        Path sync = run(dir.resolve("sync"), 0.02, 0, 1);
        Path async = run(dir.resolve("async"), 0.015, 8, 2);
        Report.Written w = Comparison.write(List.of(new Comparison.Run("sync", sync), new Comparison.Run("async", async)),
                dir.resolve("compare"));
        List<String> files = w.charts().stream().map(c -> c.file().getFileName().toString()).toList();
        assertEquals(List.of("compare_eval_accuracy.png", "compare_pass_at_k.png", "compare_reward.png",
                "compare_step_time.png"), files);
        assertEquals(List.of(), w.notes());
        for (Report.Chart c : w.charts()) {
            int[] colours = c.title().equals("Eval pass@k") ? new int[]{0x1f77b4, 0xd62728, 0x2ca02c, 0xff7f0e}
                    : new int[]{0x1f77b4, 0xd62728};        // one line per run (and per k), each its palette colour
            for (int colour : colours) {
                int n = pixels(c.file(), colour);
                assertTrue(n > 200, c.file().getFileName() + ": " + n + " pixels of line colour "
                        + Integer.toHexString(colour));
            }
        }
        String html = Files.readString(w.index());
        // sync: 0.2 -> 0.2 + 0.02*20 = 0.6, pass@1 half, pass@8 1.5x; async: 0.2 -> 0.5, 8 dropped and 56 trained a step
        for (String cell : List.of("<td>sync</td><td>20</td>", "<td>-</td><td>0</td><td>0.200 → 0.600</td><td>0.100 → 0.300</td><td>0.300 → 0.900</td>",
                "<td>async</td><td>20</td>", "<td>1120</td><td>160</td><td>0.200 → 0.500</td><td>0.100 → 0.250</td><td>0.300 → 0.750</td>")) {
            assertTrue(html.contains(cell), "index.html has " + cell + ":\n" + html);
        }
    }

    @Test
    void refusesOneRunAndRepeatedNames() throws IOException {
        Path a = run(dir.resolve("a"), 0.01, 0, 3);
        Path out = dir.resolve("x");
        assertThrows(IllegalArgumentException.class, () -> Comparison.write(List.of(new Comparison.Run("a", a)), out));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Comparison.write(
                List.of(new Comparison.Run("a", a), new Comparison.Run("a", a)), out));
        assertTrue(e.getMessage().contains("distinct names"), e.getMessage());
    }

    /** Pixels of {@code png} within 30 (sum over R, G, B) of {@code rgb}. */
    private static int pixels(Path png, int rgb) throws IOException {
        BufferedImage img = ImageIO.read(png.toFile());
        assertNotNull(img, png + " does not decode as an image");
        int n = 0;
        for (int y = 0; y < img.getHeight(); y++) {
            for (int x = 0; x < img.getWidth(); x++) {
                int p = img.getRGB(x, y);
                int d = Math.abs((p >> 16 & 255) - (rgb >> 16 & 255)) + Math.abs((p >> 8 & 255) - (rgb >> 8 & 255))
                        + Math.abs((p & 255) - (rgb & 255));
                n += d <= 30 ? 1 : 0;           // the line colour, or close to it where antialiasing blends

            }
        }
        return n;
    }
}
