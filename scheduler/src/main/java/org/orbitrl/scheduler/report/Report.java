package org.orbitrl.scheduler.report;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SortedSet;
import java.util.TreeSet;
import java.util.function.ToDoubleFunction;
import org.orbitrl.scheduler.report.Charts.Series;

/**
 * A job's report: PNG charts over steps of reward, evaluation accuracy, pass@k, the train/rollout
 * log-prob gap, step time, tokens/s, memory by category and every extra metric, and an
 * {@code index.html} that shows them under a summary table. Works on what the metrics file holds:
 * a chart with no data is left out and the page says what is missing.
 */
public final class Report {

    /** The page written into the output folder. */
    public static final String INDEX = "index.html";

    private Report() {
    }

    /** A chart written: its title and file. */
    public record Chart(String title, Path file) {
    }

    /**
     * What was written.
     *
     * @param index  the HTML page
     * @param charts the PNG charts, in page order
     * @param notes  what is missing or was skipped, as shown on the page
     */
    public record Written(Path index, List<Chart> charts, List<String> notes) {
        public Written {
            charts = List.copyOf(charts);
            notes = List.copyOf(notes);
        }
    }

    /**
     * Reads {@code metricsJsonl} and writes the charts and {@code index.html} into {@code outDir}
     * (created if needed; files of the same names are replaced).
     *
     * @throws java.nio.file.NoSuchFileException if the metrics file does not exist
     */
    public static Written write(Path metricsJsonl, Path outDir) throws IOException {
        MetricsHistory h = MetricsHistory.read(metricsJsonl);
        Files.createDirectories(outDir);
        List<Chart> charts = new ArrayList<>();
        List<String> notes = new ArrayList<>(h.notes());
        List<StepRecord> steps = h.steps();
        evaluations(charts, notes, outDir, h);
        if (steps.isEmpty()) {
            notes.add("no training step was recorded: no reward, log-prob gap, step time, throughput or memory charts");
        } else {
            double[] x = steps.stream().mapToDouble(StepRecord::step).toArray(); // [steps]
            chart(charts, notes, outDir, "reward.png", "Reward", "mean over each step's samples", "reward, accuracy", null,
                    List.of(series("reward mean", x, steps, StepRecord::rewardMean),
                            series("train accuracy", x, steps, StepRecord::accuracy)));
            chart(charts, notes, outDir, "logprob_gap.png", "Train/rollout log-prob gap",
                    "|log p(train) - log p(rollout)| over each step's tokens", "nats", null, true,
                    List.of(series("mean", x, steps, StepRecord::logprobGapMean),
                            series("max", x, steps, StepRecord::logprobGapMax)));
            chart(charts, notes, outDir, "step_time.png", "Step time", "wall time of each step", "seconds", null, true,
                    List.of(series("step time", x, steps, StepRecord::stepSeconds)));
            chart(charts, notes, outDir, "tokens_per_s.png", "Generation throughput", "tokens generated per second of"
                    + " step time", "tokens / s", null, true,
                    List.of(series("tokens/s", x, steps, StepRecord::tokensPerSecond)));
            memory(charts, notes, outDir, x, steps);
            SortedSet<String> extras = new TreeSet<>();
            steps.forEach(s -> extras.addAll(s.extras().keySet()));
            for (String key : extras) {
                chart(charts, notes, outDir, "extra_" + key.replaceAll("[^A-Za-z0-9_.-]", "_") + ".png", key, null, key,
                        null, List.of(series(key, x, steps, s -> s.extras().getOrDefault(key, Double.NaN))));
            }
        }
        if (h.end().isEmpty()) {
            notes.add("the job wrote no end record: it is still running, or it stopped without finishing (it may have"
                    + " died)" + (steps.isEmpty() ? "" : "; the last step recorded is " + steps.getLast().step()));
        }
        Path index = outDir.resolve(INDEX);
        Files.writeString(index, ReportPage.html(metricsJsonl, h, charts, notes), StandardCharsets.UTF_8);
        return new Written(index, charts, notes);
    }

    private static void evaluations(List<Chart> charts, List<String> notes, Path outDir, MetricsHistory h)
            throws IOException {
        List<EvalRecord> evals = h.evals();
        if (evals.isEmpty()) {
            notes.add("no evaluation was recorded: no accuracy or pass@k charts");
            return;
        }
        double[] x = evals.stream().mapToDouble(EvalRecord::step).toArray(); // [evals]
        double[] range = {-0.02, 1.02};
        chart(charts, notes, outDir, "eval_accuracy.png", "Eval accuracy", "held-out split, temperature 0", "accuracy",
                range, List.of(series("accuracy", x, evals, EvalRecord::accuracy)));
        SortedSet<Integer> ks = new TreeSet<>();
        evals.forEach(e -> ks.addAll(e.passAtK().keySet()));
        List<Series> pass = new ArrayList<>();
        for (int k : ks) {
            pass.add(series("pass@" + k, x, evals, e -> e.passAtK().getOrDefault(k, Double.NaN)));
        }
        chart(charts, notes, outDir, "pass_at_k.png", "Eval pass@k", "held-out split, unbiased estimator", "pass@k",
                range, pass);
        if (!h.steps().isEmpty() && evals.getLast().step() < h.steps().getLast().step()) {
            notes.add("the last evaluation is at step " + evals.getLast().step() + "; steps after it ("
                    + h.steps().getLast().step() + " recorded) were not evaluated");
        }
    }

    private static void memory(List<Chart> charts, List<String> notes, Path outDir, double[] x, List<StepRecord> steps)
            throws IOException {
        SortedSet<String> categories = new TreeSet<>();
        long most = 0;
        for (StepRecord s : steps) {
            categories.addAll(s.memoryBytes().keySet());
            for (long b : s.memoryBytes().values()) {
                most = Math.max(most, b);
            }
        }
        String[] units = {"bytes", "KiB", "MiB", "GiB", "TiB"};
        int u = 0;
        while (u < units.length - 1 && most >= 1L << (10 * (u + 1))) {
            u++;
        }
        double scale = Math.pow(1024, u);
        List<Series> series = new ArrayList<>();
        for (String c : categories) {
            series.add(series(c, x, steps, s -> s.memoryBytes().containsKey(c) ? s.memoryBytes().get(c) / scale
                    : Double.NaN));
        }
        chart(charts, notes, outDir, "memory.png", "Device memory by category", "in use at the end of each step",
                units[u], null, true, series);
    }

    /** Draws and saves one chart, or notes that it has no data. */
    private static void chart(List<Chart> charts, List<String> notes, Path outDir, String file, String title,
                              String subtitle, String yLabel, double[] yRange, List<Series> series) throws IOException {
        chart(charts, notes, outDir, file, title, subtitle, yLabel, yRange, false, series);
    }

    private static void chart(List<Chart> charts, List<String> notes, Path outDir, String file, String title,
                              String subtitle, String yLabel, double[] yRange, boolean includeZero,
                              List<Series> series) throws IOException {
        var chart = Charts.lines(title, subtitle, yLabel, series, yRange, includeZero);
        if (chart.isEmpty()) {
            notes.add(title + ": not recorded" + (series.size() > 1 ? " (" + String.join(", ",
                    series.stream().map(Series::name).toList()) + ")" : ""));
            return;
        }
        for (Series s : series) {
            if (s.finitePoints() == 0) {
                notes.add(title + ": " + s.name() + " not recorded");
            }
        }
        Path out = outDir.resolve(file);
        Charts.png(chart.get(), out);
        charts.add(new Chart(title, out));
    }

    private static <T> Series series(String name, double[] x, List<T> records, ToDoubleFunction<T> value) {
        return new Series(name, x, records.stream().mapToDouble(value).toArray());
    }
}
