package org.orbitrl.daemon.jobs;

import java.util.Locale;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.StepMetrics;

/** The one-line progress reports of a job, for the console and the log. */
public final class ProgressLine {
    private ProgressLine() {
    }

    /** {@code job quickstart step 12/200 reward 0.412 acc 0.375 gap 1.2e-03 tok/s 1520 step 2.31s eta 7m14s}. */
    public static String step(String job, StepMetrics m, long totalSteps, double etaSeconds) {
        return String.format(Locale.ROOT, "job %s step %d/%d reward %s acc %s gap %s tok/s %s step %ss eta %s", job, m.step(),
                totalSteps, num(m.rewardMean(), "%.3f"), num(m.accuracy(), "%.3f"), num(m.logprobGapMean(), "%.1e"),
                num(m.tokensPerSecond(), "%.0f"), num(m.stepSeconds(), "%.2f"), duration(etaSeconds));
    }

    /** {@code job quickstart eval @12: accuracy 0.420 pass@1 0.400 pass@4 0.610 (100 prompts, 12.3s)}. */
    public static String eval(String job, EvalResult r) {
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "job %s eval @%d: accuracy %s", job, r.step(),
                num(r.accuracy(), "%.3f")));
        r.passAtK().forEach((k, v) -> sb.append(String.format(Locale.ROOT, " pass@%d %s", k, num(v, "%.3f"))));
        return sb.append(String.format(Locale.ROOT, " (%d prompts, %.1fs)", r.prompts(), r.seconds())).toString();
    }

    /** {@code 7m14s}, {@code 2h03m}, {@code -} when unknown. */
    public static String duration(double seconds) {
        if (!Double.isFinite(seconds) || seconds < 0) {
            return "-";
        }
        long s = Math.round(seconds);
        if (s < 60) {
            return s + "s";
        }
        if (s < 3600) {
            return (s / 60) + "m" + String.format(Locale.ROOT, "%02d", s % 60) + "s";
        }
        return (s / 3600) + "h" + String.format(Locale.ROOT, "%02d", (s % 3600) / 60) + "m";
    }

    private static String num(double v, String format) {
        return Double.isFinite(v) ? String.format(Locale.ROOT, format, v) : "-";
    }
}
