package org.orbitrl.scheduler.report;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.function.ToDoubleFunction;
import org.orbitrl.scheduler.report.Charts.Series;

/**
 * Several runs of a job in one report (synchronous against asynchronous RL, say): their
 * evaluation accuracy, pass@k, training reward and step time overlaid on one chart each, over
 * steps (each step trains on the same number of samples in every run), and an {@code index.html}
 * with a table of each run's first and last evaluation.
 */
public final class Comparison {

    /** A run to compare: its name on the charts and its {@code metrics.jsonl}. */
    public record Run(String name, Path metrics) {
    }

    private Comparison() {
    }

    /**
     * Reads every run's metrics and writes the overlaid charts and {@code index.html} into
     * {@code outDir} (created if needed).
     *
     * @throws java.nio.file.NoSuchFileException if a metrics file does not exist
     * @throws IllegalArgumentException          if fewer than two runs are given, or two share a name
     */
    public static Report.Written write(List<Run> runs, Path outDir) throws IOException {
        if (runs.size() < 2) {
            throw new IllegalArgumentException("a comparison needs at least two runs, got " + runs.size());
        }
        if (runs.stream().map(Run::name).distinct().count() != runs.size()) {
            throw new IllegalArgumentException("runs to compare need distinct names: " + runs.stream().map(Run::name).toList());
        }
        List<MetricsHistory> hs = new ArrayList<>();
        for (Run r : runs) {
            hs.add(MetricsHistory.read(r.metrics()));
        }
        Files.createDirectories(outDir);
        List<Report.Chart> charts = new ArrayList<>();
        List<String> notes = new ArrayList<>();
        double[] unit = {-0.02, 1.02};
        List<Series> acc = new ArrayList<>();
        List<Series> pass = new ArrayList<>();
        List<Series> reward = new ArrayList<>();
        List<Series> time = new ArrayList<>();
        SortedSet<Integer> ks = new TreeSet<>();
        hs.forEach(h -> h.evals().forEach(e -> ks.addAll(e.passAtK().keySet())));
        for (int i = 0; i < runs.size(); i++) {
            String name = runs.get(i).name();
            MetricsHistory h = hs.get(i);
            h.notes().forEach(n -> notes.add(name + ": " + n));
            List<EvalRecord> evals = h.evals();
            double[] ex = evals.stream().mapToDouble(EvalRecord::step).toArray();   // [evals]
            acc.add(series(name, ex, evals, EvalRecord::accuracy));
            for (int k : ks) {
                pass.add(series(name + " pass@" + k, ex, evals, e -> e.passAtK().getOrDefault(k, Double.NaN)));
            }
            double[] sx = h.steps().stream().mapToDouble(StepRecord::step).toArray(); // [steps]
            reward.add(series(name, sx, h.steps(), StepRecord::rewardMean));
            time.add(series(name, sx, h.steps(), StepRecord::stepSeconds));
        }
        chart(charts, notes, outDir, "compare_eval_accuracy.png", "Eval accuracy", "held-out split, temperature 0",
                "accuracy", unit, false, acc);
        chart(charts, notes, outDir, "compare_pass_at_k.png", "Eval pass@k", "held-out split, unbiased estimator",
                "pass@k", unit, false, pass);
        chart(charts, notes, outDir, "compare_reward.png", "Training reward", "mean over each step's samples",
                "reward", null, false, reward);
        chart(charts, notes, outDir, "compare_step_time.png", "Step time", "wall time of each step", "seconds", null,
                true, time);
        Path index = outDir.resolve(Report.INDEX);
        Files.writeString(index, html(runs, hs, charts, notes), StandardCharsets.UTF_8);
        return new Report.Written(index, charts, notes);
    }

    private static String html(List<Run> runs, List<MetricsHistory> hs, List<Report.Chart> charts, List<String> notes) {
        StringBuilder b = new StringBuilder();
        b.append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Orbit run comparison</title>\n")
                .append("<style>body{font-family:sans-serif;margin:2em;max-width:960px}table{border-collapse:collapse;")
                .append("margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}")
                .append("th:first-child,td:first-child{text-align:left}img{display:block;margin:1em 0;max-width:100%}")
                .append(".notes li{color:#8a4b00}</style>\n</head>\n<body>\n<h1>Orbit run comparison</h1>\n");
        SortedSet<Integer> ks = new TreeSet<>();
        hs.forEach(h -> h.evals().forEach(e -> ks.addAll(e.passAtK().keySet())));
        b.append("<table>\n<tr><th>run</th><th>steps</th><th>mean step</th><th>samples trained</th>")
                .append("<th>samples dropped as stale</th>")
                .append("<th>eval accuracy</th>");
        ks.forEach(k -> b.append("<th>pass@").append(k).append("</th>"));
        b.append("<th>metrics</th></tr>\n");
        for (int i = 0; i < runs.size(); i++) {
            MetricsHistory h = hs.get(i);
            List<StepRecord> steps = h.steps();
            double seconds = steps.stream().mapToDouble(StepRecord::stepSeconds).filter(Double::isFinite).average()
                    .orElse(Double.NaN);
            double dropped = steps.stream().mapToDouble(s -> s.extras().getOrDefault("dropped_stale", 0.0)).sum();
            boolean counted = steps.stream().anyMatch(s -> s.extras().containsKey("train_samples"));
            double trained = steps.stream().mapToDouble(s -> s.extras().getOrDefault("train_samples", 0.0)).sum();
            b.append("<tr><td>").append(ReportPage.esc(runs.get(i).name())).append("</td><td>").append(steps.size())
                    .append("</td><td>").append(fmt("%.2f s", seconds)).append("</td><td>").append(counted ? fmt("%.0f", trained) : "-")
                    .append("</td><td>").append(fmt("%.0f", dropped))
                    .append("</td>");
            List<EvalRecord> ev = h.evals();
            b.append("<td>").append(ev.isEmpty() ? "-" : fmt("%.3f → %.3f", ev.getFirst().accuracy(), ev.getLast().accuracy()))
                    .append("</td>");
            for (int k : ks) {
                b.append("<td>").append(ev.isEmpty() ? "-" : fmt("%.3f → %.3f",
                        ev.getFirst().passAtK().getOrDefault(k, Double.NaN), ev.getLast().passAtK().getOrDefault(k, Double.NaN)))
                        .append("</td>");
            }
            b.append("<td><code>").append(ReportPage.esc(runs.get(i).metrics().toString())).append("</code></td></tr>\n");
        }
        b.append("</table>\n<p>Evaluations: first and last recorded (step 0 is before training).</p>\n");
        if (!notes.isEmpty()) {
            b.append("<h2>Missing or skipped</h2>\n<ul class=\"notes\">\n");
            notes.forEach(n -> b.append("<li>").append(ReportPage.esc(n)).append("</li>\n"));
            b.append("</ul>\n");
        }
        for (Report.Chart c : charts) {
            b.append("<h2>").append(ReportPage.esc(c.title())).append("</h2>\n<img src=\"")
                    .append(ReportPage.esc(c.file().getFileName().toString())).append("\" alt=\"")
                    .append(ReportPage.esc(c.title())).append("\" width=\"").append(Charts.WIDTH).append("\" height=\"")
                    .append(Charts.HEIGHT).append("\">\n");
        }
        return b.append("</body>\n</html>\n").toString();
    }

    private static String fmt(String f, Object... args) {
        return String.format(Locale.ROOT, f, args);
    }

    private static void chart(List<Report.Chart> charts, List<String> notes, Path outDir, String file, String title,
                              String subtitle, String yLabel, double[] yRange, boolean includeZero, List<Series> series)
            throws IOException {
        var chart = Charts.lines(title, subtitle, yLabel, series, yRange, includeZero);
        if (chart.isEmpty()) {
            notes.add(title + ": not recorded by any run");
            return;
        }
        for (Series s : series) {
            if (s.finitePoints() == 0) {
                notes.add(title + ": " + s.name() + " not recorded");
            }
        }
        Path out = outDir.resolve(file);
        Charts.png(chart.get(), out);
        charts.add(new Report.Chart(title, out));
    }

    private static <T> Series series(String name, double[] x, List<T> records, ToDoubleFunction<T> value) {
        return new Series(name, x, records.stream().mapToDouble(value).toArray());
    }
}
