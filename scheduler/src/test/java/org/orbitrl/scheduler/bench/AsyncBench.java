package org.orbitrl.scheduler.bench;

import org.orbitrl.scheduler.job.AsyncSpec;
import org.orbitrl.scheduler.job.EvalSpec;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.loop.ForegroundRun;
import org.orbitrl.scheduler.report.MetricsHistory;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.StepRecord;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Synchronous against asynchronous RL on the quickstart job, in one run: mean step time, rollout
 * tokens/s, and (async) the trainer's and the rollout thread's idle fractions, with the ratios.
 * {@code tools/bench -pl scheduler org.orbitrl.scheduler.bench.AsyncBench [repo root] [steps]}
 */
public final class AsyncBench {
    public static void main(String[] args) throws Exception {
        Path repo = Path.of(args.length > 0 ? args[0] : ".");
        int steps = args.length > 1 ? Integer.parseInt(args[1]) : 20;
        JobSpec base = JobFiles.read(repo.resolve("conf/jobs.d/quickstart.yaml"))
                .withEval(new EvalSpec(0, "held_out", 100, 8, List.of(1, 8))).withSteps(steps);
        double[] sync = run(base, "sync");
        AsyncSpec a = base.async();
        JobSpec asyncSpec = base.withAsync(new AsyncSpec(true, 2, a.partialRollouts(), 16));
        double[] async = run(asyncSpec, "async");
        System.out.printf("async/sync step time %.2f, rollout tokens/s %.2f%n", async[0] / sync[0], async[1] / sync[1]);
    }

    /** Returns {mean step seconds after the first, rollout tokens/s}. */
    static double[] run(JobSpec spec, String name) throws Exception {
        Path dir = Files.createTempDirectory("orbit-async-bench-" + name);
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        ForegroundRun.Outcome o = ForegroundRun.run(spec, dir, new PrintStream(log, true), new AtomicBoolean());
        MetricsHistory h = MetricsHistory.read(dir.resolve(MetricsLog.FILE_NAME));
        List<StepRecord> steps = h.steps().subList(1, h.steps().size());
        double stepSeconds = steps.stream().mapToDouble(StepRecord::stepSeconds).average().orElse(Double.NaN);
        long tokens = steps.stream().mapToLong(StepRecord::tokens).sum();
        double wall = steps.stream().mapToDouble(StepRecord::stepSeconds).sum();
        StepRecord last = h.steps().getLast();
        System.out.printf("%-5s: %d steps, mean step %.2fs, rollout %.0f tok/s, trainer idle %.2f, rollout idle %.2f, "
                        + "eval accuracy %.3f -> %.3f, pass@1 %.3f -> %.3f%n", name, spec.steps(), stepSeconds, tokens / wall,
                last.extras().getOrDefault("trainer_idle_fraction", 0.0), last.extras().getOrDefault("rollout_idle_fraction", 0.0),
                o.before().accuracy(), o.after().accuracy(), o.before().passAtK().get(1), o.after().passAtK().get(1));
        return new double[]{stepSeconds, tokens / wall};
    }
}
