package org.orbitrl.scheduler.report;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Instant;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.TreeMap;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The report from synthetic metrics: complete, partial (a job that died) and empty. */
class ReportTest {

    @TempDir
    Path dir;

    private static final Instant T0 = Instant.parse("2026-03-01T10:00:00Z");

    /** A 40-step job, evaluated every 10 steps, with seeded noise. */
    private static Path fullJob(Path jobDir) throws IOException {
        SplittableRandom rng = new SplittableRandom(7);
        try (MetricsLog log = MetricsLog.open(jobDir)) {
            log.eval(new EvalRecord(0, T0, 0.18, passAtK(0.2, rng)));
            for (int s = 1; s <= 40; s++) {
                double reward = 0.3 + 0.015 * s + 0.05 * rng.nextDouble();
                double seconds = 2 + 0.4 * rng.nextDouble();
                log.step(StepRecord.of(s, T0.plusSeconds(3L * s), reward, reward / 1.1, 2e-6 * rng.nextDouble(),
                        5e-5 * rng.nextDouble(), 600 + rng.nextInt(100), seconds, s,
                        Map.of("loss", 1.0 / s, "kl", 0.001 * s, "lr", 1e-5),
                        Map.of("weights", 48L << 20, "kv_cache", (8L << 20) + rng.nextInt(1 << 20),
                                "activations", (20L << 20) + rng.nextInt(4 << 20))));
                if (s % 10 == 0) {
                    double acc = 0.18 + 0.012 * s;
                    log.eval(new EvalRecord(s, T0.plusSeconds(3L * s + 1), acc, passAtK(acc, rng)));
                }
            }
            log.end(new EndRecord(40, T0.plusSeconds(125), "completed", ""));
        }
        return jobDir.resolve(MetricsLog.FILE_NAME);
    }

    private static TreeMap<Integer, Double> passAtK(double p1, SplittableRandom rng) {
        TreeMap<Integer, Double> m = new TreeMap<>();
        m.put(1, p1 + 0.01 * rng.nextDouble());
        m.put(4, Math.min(1, 1.8 * p1));
        m.put(8, Math.min(1, 2.3 * p1));
        return m;
    }

    @Test
    void completeJob() throws IOException {
        Path metrics = fullJob(dir.resolve("job"));
        Path out = dir.resolve("report");
        Report.Written w = Report.write(metrics, out);

        List<String> files = w.charts().stream().map(c -> c.file().getFileName().toString()).toList();
        assertEquals(List.of("eval_accuracy.png", "pass_at_k.png", "reward.png", "logprob_gap.png", "step_time.png",
                "tokens_per_s.png", "memory.png", "extra_kl.png", "extra_loss.png", "extra_lr.png"), files);
        assertEquals(List.of(), w.notes());
        String html = Files.readString(w.index());
        for (String f : files) {
            assertTrue(html.contains("<img src=\"" + f + "\""), "index.html shows " + f);
            checkImage(out.resolve(f));
        }
        // summary: first and last evaluation with their pass@k, and the change
        assertTrue(html.contains("<tr><td>first</td><td>0</td><td>0.180</td>"), html);
        assertTrue(html.contains("<tr><td>last</td><td>40</td><td>0.660</td>"), html);
        assertTrue(html.contains("<td>change</td><td></td><td>+0.480</td>"), html);
        assertTrue(html.contains("<th>pass@1</th><th>pass@4</th><th>pass@8</th>"), html);
        assertTrue(html.contains("<tr><th>steps recorded</th><td>40 (step 1 to 40)</td></tr>"), html);
        assertTrue(html.contains("<tr><th>status</th><td>completed</td></tr>"), html);
        assertTrue(html.contains("<tr><th>wall time, first to last step</th><td>1m 57s</td></tr>"), html);
        assertFalse(html.contains("Missing or skipped"), html);
    }

    @Test
    void jobThatDied() throws IOException {
        Path jobDir = dir.resolve("died");
        try (MetricsLog log = MetricsLog.open(jobDir)) {
            for (int s = 1; s <= 7; s++) {
                log.step(StepRecord.of(s, T0.plusSeconds(s), 0.1 * s, 0.05 * s, Double.NaN, Double.NaN, 100 * s, 1.0,
                        s, Map.of(), Map.of()));
            }
        }
        Path metrics = jobDir.resolve(MetricsLog.FILE_NAME);
        Files.writeString(metrics, "{\"type\":\"step\",\"st", StandardOpenOption.APPEND);
        Report.Written w = Report.write(metrics, dir.resolve("r"));

        assertEquals(List.of("reward.png", "step_time.png", "tokens_per_s.png"),
                w.charts().stream().map(c -> c.file().getFileName().toString()).toList());
        for (Report.Chart c : w.charts()) {
            checkImage(c.file());
        }
        String notes = String.join("\n", w.notes());
        for (String expected : new String[] {"line 8 skipped: not valid JSON (a torn last line",
            "Train/rollout log-prob gap: not recorded (mean, max)", "Device memory by category: not recorded",
            "no evaluation was recorded", "the job wrote no end record", "the last step recorded is 7"}) {
            assertTrue(notes.contains(expected), "notes mention \"" + expected + "\":\n" + notes);
        }
        String html = Files.readString(w.index());
        assertTrue(html.contains("Missing or skipped"), html);
        assertTrue(html.contains("no evaluation was recorded"), html);
        assertTrue(html.contains("no end record (running, or stopped without finishing)"), html);
        assertFalse(Files.exists(dir.resolve("r").resolve("pass_at_k.png")));
    }

    @Test
    void emptyAndMissingFiles() throws IOException {
        Path empty = dir.resolve(MetricsLog.FILE_NAME);
        Files.writeString(empty, "");
        Report.Written w = Report.write(empty, dir.resolve("r"));
        assertEquals(List.of(), w.charts());
        String html = Files.readString(w.index());
        assertTrue(html.contains("no training step was recorded"), html);
        assertTrue(html.contains("no evaluation was recorded"), html);
        assertTrue(html.contains("<tr><th>steps recorded</th><td>0</td></tr>"), html);
        assertThrows(NoSuchFileException.class, () -> Report.write(dir.resolve("absent.jsonl"), dir.resolve("r2")));
    }

    @Test
    void axisLabelsStayShort() {
        String[][] cases = {{"0", "0"}, {"0.30000000000000004", "0.3"}, {"25951", "25951"}, {"1.0E-5", "1e-5"},
            {"4.5E-5", "4.5e-5"}, {"-2.5E-6", "-2.5e-6"}, {"1.23456789E7", "1.235e7"}, {"0.001", "0.001"},
            {"9.99999E-4", "1e-3"}, {"-7.0E8", "-7e8"}};
        for (String[] c : cases) {
            assertEquals(c[1], Charts.AxisFormat.compact(Double.parseDouble(c[0])), c[0]);
        }
    }

    /** Decodes, has the chart size, and is a drawing: many colours, many non-white pixels. */
    private static void checkImage(Path png) throws IOException {
        assertTrue(Files.size(png) > 5_000, png + " is " + Files.size(png) + " bytes");
        BufferedImage img = ImageIO.read(png.toFile());
        assertNotNull(img, png + " does not decode as an image");
        assertEquals(Charts.WIDTH, img.getWidth(), png.toString());
        assertEquals(Charts.HEIGHT, img.getHeight(), png.toString());
        int[] pixels = img.getRGB(0, 0, img.getWidth(), img.getHeight(), null, 0, img.getWidth()); // [height * width]
        Set<Integer> colours = new HashSet<>();
        int ink = 0;
        for (int p : pixels) {
            int rgb = p & 0xffffff;
            colours.add(rgb);
            ink += rgb != 0xffffff ? 1 : 0;
        }
        assertTrue(colours.size() > 16, png + " has only " + colours.size() + " colours");
        double inked = (double) ink / (img.getWidth() * img.getHeight());
        assertTrue(inked > 0.01 && inked < 0.6, png + ": " + inked + " of the pixels are not white");
    }
}
