package org.orbitrl.scheduler.loop;

import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobRunnerProvider;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.job.checkpoint.Checkpoint;
import org.orbitrl.scheduler.job.checkpoint.CheckpointStore;
import org.orbitrl.scheduler.report.MetricsLog;
import org.orbitrl.scheduler.report.Report;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.List;
import java.util.ServiceLoader;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Runs one job file in the foreground, without a daemon, with the same runner, checkpoints and
 * sample log the daemon uses: plan, load (resuming from the newest valid checkpoint in the data
 * folder), evaluate, steps with a progress line each, evaluations and checkpoints at their
 * intervals, a final evaluation, checkpoint and report.
 */
public final class ForegroundRun {

    /** The evaluation before the first step and after the last. */
    public record Outcome(EvalResult before, EvalResult after, long steps, Path report) {
    }

    private ForegroundRun() {
    }

    public static JobRunnerProvider provider(String name) throws JobException {
        for (JobRunnerProvider p : ServiceLoader.load(JobRunnerProvider.class)) {
            if (p.name().equals(name)) {
                return p;
            }
        }
        throw new JobException("no runner named '" + name + "' (the job file's runner key)");
    }

    /**
     * @param dataDir the job's data folder (checkpoints, sample log, metrics, report)
     * @param stop    set to stop after the current step (with a checkpoint)
     */
    public static Outcome run(JobSpec spec, Path dataDir, PrintStream out, AtomicBoolean stop)
            throws JobException, IOException {
        boolean gpu = spec.placement().backend() == org.orbitrl.scheduler.job.ComputeBackend.CUDA;
        List<String> devices = java.util.stream.IntStream.range(0, Math.max(1, spec.placement().devices()))
                .mapToObj(i -> (gpu ? "cuda:" : "cpu:") + i).toList();   // the first devices of the machine
        JobContext ctx = new JobContext(spec, dataDir, dataDir.resolve("samples"), devices, stop::get);
        try (JobRunner runner = provider(spec.runner()).create(ctx)) {
            JobPlan plan = runner.plan();
            out.println(plan.table());
            // after the plan: a job refused there leaves no folders behind
            CheckpointStore checkpoints = new CheckpointStore(dataDir.resolve("checkpoints"), spec.checkpoint().keep());
            CheckpointStore.Found found = checkpoints.latest();
            found.warnings().forEach(w -> out.println("warning: " + w));
            Checkpoint cp = found.checkpoint();
            if (cp != null) {
                out.println("resuming from " + cp);
            }
            runner.load(cp);
            EvalResult before = runner.evaluate();
            out.println(evalLine("eval before", before));
            long t0 = System.nanoTime();
            long first = runner.state().step();
            while (runner.state().step() < spec.steps() && !stop.get()) {
                StepMetrics m = runner.step();
                long done = m.step() - first;
                double perStep = (System.nanoTime() - t0) / 1e9 / done;
                out.printf("step %d/%d  reward %.3f  acc %.3f  gap %.2e/%.2e  %.0f tok/s  %.2fs  eta %.0fs%n", m.step(),
                        spec.steps(), m.rewardMean(), m.accuracy(), m.logprobGapMean(), m.logprobGapMax(),
                        m.tokensPerSecond(), m.stepSeconds(), perStep * (spec.steps() - m.step()));
                if (spec.eval().interval() > 0 && m.step() % spec.eval().interval() == 0 && m.step() < spec.steps()) {
                    out.println(evalLine("eval", runner.evaluate()));
                }
                if (spec.checkpoint().interval() > 0 && m.step() % spec.checkpoint().interval() == 0) {
                    checkpoints.write(m.step(), runner::checkpoint);
                }
            }
            EvalResult after = runner.evaluate();
            checkpoints.write(runner.state().step(), runner::checkpoint);
            Path report = dataDir.resolve("report");
            try {
                Report.write(dataDir.resolve(MetricsLog.FILE_NAME), report);
                out.println("report: " + report.resolve(Report.INDEX));
            } catch (RuntimeException | Error e) {
                // the charts need the platform's fonts: a machine without them still ends the run with its metrics
                out.println("report: not written (" + e + "); the metrics are in " + dataDir.resolve(MetricsLog.FILE_NAME));
                report = null;
            }
            out.println(evalLine("eval after", after));
            out.println(String.format("%s: eval accuracy %.3f -> %.3f%s", spec.name(), before.accuracy(), after.accuracy(),
                    passAtK(before, after)));
            return new Outcome(before, after, runner.state().step(), report);
        }
    }

    static String evalLine(String what, EvalResult r) {
        StringBuilder sb = new StringBuilder(String.format("%s (step %d): accuracy %.3f", what, r.step(), r.accuracy()));
        r.passAtK().forEach((k, v) -> sb.append(String.format(", pass@%d %.3f", k, v)));
        return sb.append(String.format(" over %d prompts (%.1fs)", r.prompts(), r.seconds())).toString();
    }

    static String passAtK(EvalResult before, EvalResult after) {
        StringBuilder sb = new StringBuilder();
        after.passAtK().forEach((k, v) -> sb.append(String.format(", pass@%d %.3f -> %.3f", k,
                before.passAtK().getOrDefault(k, Double.NaN), v)));
        return sb.toString();
    }
}
