package org.orbitrl.scheduler.bench;

import org.orbitrl.scheduler.job.AsyncSpec;
import org.orbitrl.scheduler.job.EvalSpec;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.loop.ForegroundRun;
import org.orbitrl.scheduler.report.Comparison;
import org.orbitrl.scheduler.report.MetricsHistory;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.Report;
import org.orbitrl.scheduler.report.StepRecord;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Learning under async RL against sync: the quickstart job run synchronously and asynchronously
 * with the same seed, the same steps and so the same sample budget (steps x prompts x samples),
 * evaluated every few steps, for each seed given; each pair's eval accuracy and pass@k curves
 * overlaid in one report ({@link Comparison}), and a table of the final figures printed.
 *
 * <p>{@code tools/bench -pl scheduler org.orbitrl.scheduler.bench.AsyncCompare [repo root] [seeds, e.g. 0,1,2]
 * [steps] [eval interval] [out folder]}; defaults: {@code . 0 30 5 target/async-compare}. The
 * runs' data folders (metrics, sample log, checkpoints) are {@code out/seed-N/sync} and
 * {@code out/seed-N/async}; the report is {@code out/seed-N/report/index.html}.
 */
public final class AsyncCompare {
    public static void main(String[] args) throws Exception {
        Path repo = Path.of(args.length > 0 ? args[0] : ".");
        long[] seeds = Arrays.stream((args.length > 1 ? args[1] : "0").split(",")).mapToLong(Long::parseLong).toArray();
        Path out = Path.of(args.length > 4 ? args[4] : "target/async-compare");
        JobSpec base = JobFiles.read(repo.resolve("conf/jobs.d/quickstart.yaml"));
        long steps = args.length > 2 ? Long.parseLong(args[2]) : base.steps();
        int interval = args.length > 3 ? Integer.parseInt(args[3]) : 5;
        EvalSpec e = base.eval();
        base = base.withSteps(steps).withEval(new EvalSpec(interval, e.set(), e.size(), e.samples(), e.passAtK()));
        var a = base.async();
        AsyncSpec async = new AsyncSpec(true, 2, a.partialRollouts(), 16);
        var b = base.batch();
        System.out.printf("quickstart, %d steps of %d prompts x %d samples (%d samples), eval every %d steps on %d"
                        + " held-out prompts (%d samples each); async: staleness bound %d, at most %d groups ahead%n", steps,
                b.promptsPerStep(), b.samplesPerPrompt(), steps * b.promptsPerStep() * b.samplesPerPrompt(), interval,
                e.size(), e.samples(), async.stalenessBound(), async.maxLagGroups());
        List<String> rows = new ArrayList<>();
        for (long seed : seeds) {
            JobSpec sync = withSeed(base, seed);
            Path dir = out.resolve("seed-" + seed);
            for (String mode : List.of("sync", "async")) {
                Path d = dir.resolve(mode);
                if (Files.exists(d.resolve(MetricsLog.FILE_NAME))) {
                    throw new IllegalStateException(d + " already holds a run: remove it, or name another out folder");
                }
                JobSpec spec = mode.equals("sync") ? sync : sync.withAsync(async);
                ForegroundRun.Outcome o = ForegroundRun.run(spec, d, new PrintStream(new ByteArrayOutputStream(), true),
                        new AtomicBoolean());
                rows.add(row(seed, mode, o, MetricsHistory.read(d.resolve(MetricsLog.FILE_NAME))));
                System.out.println(rows.getLast());
            }
            Report.Written w = Comparison.write(List.of(new Comparison.Run("sync seed " + seed,
                    dir.resolve("sync").resolve(MetricsLog.FILE_NAME)), new Comparison.Run("async seed " + seed,
                    dir.resolve("async").resolve(MetricsLog.FILE_NAME))), dir.resolve("report"));
            System.out.println("report: " + w.index().toAbsolutePath());
        }
        System.out.println();
        System.out.println("| seed | mode | samples trained | dropped stale | mean step | eval accuracy | pass@1 | pass@4 | pass@8 |");
        System.out.println("|---|---|---|---|---|---|---|---|---|");
        rows.forEach(System.out::println);
    }

    private static String row(long seed, String mode, ForegroundRun.Outcome o, MetricsHistory h) {
        double dropped = h.steps().stream().mapToDouble(s -> s.extras().getOrDefault("dropped_stale", 0.0)).sum();
        double trained = 0;
        for (StepRecord s : h.steps()) {
            trained += s.extras().getOrDefault("train_samples", Double.NaN);
        }
        double step = h.steps().stream().mapToDouble(StepRecord::stepSeconds).average().orElse(Double.NaN);
        StringBuilder sb = new StringBuilder(String.format("| %d | %s | %s | %.0f | %.2f s | %.3f → %.3f", seed, mode,
                Double.isNaN(trained) ? "-" : String.format("%.0f", trained), dropped, step, o.before().accuracy(),
                o.after().accuracy()));
        for (int k : List.of(1, 4, 8)) {
            sb.append(String.format(" | %.3f → %.3f", o.before().passAtK().getOrDefault(k, Double.NaN),
                    o.after().passAtK().getOrDefault(k, Double.NaN)));
        }
        return sb.append(" |").toString();
    }

    static JobSpec withSeed(JobSpec s, long seed) {
        return new JobSpec(s.name(), s.runner(), s.model(), s.adapter(), s.algorithm(), s.kl(), s.tisCap(), s.batch(),
                s.sampling(), s.optimizer(), s.steps(), s.eval(), s.checkpoint(), seed, s.async(), s.task(), s.placement(),
                s.memory());
    }
}
