package org.orbitrl.scheduler.job;

import java.util.LinkedHashMap;
import java.util.Map;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * AdamW on the adapter parameters, and the learning-rate schedule.
 *
 * @param lr          peak learning rate; live-tunable (the schedule scales whatever value is current)
 * @param schedule    constant or warm-up + cosine
 * @param warmupSteps steps of linear warm-up ({@code warmup_cosine} only)
 * @param minLrRatio  the cosine's floor as a fraction of {@code lr} ({@code warmup_cosine} only)
 * @param beta1       AdamW first-moment decay
 * @param beta2       AdamW second-moment decay
 * @param eps         AdamW denominator epsilon
 * @param weightDecay decoupled weight decay
 * @param gradClip    global gradient-norm clip (0 = off)
 */
public record OptimizerSpec(@Tunable double lr, LrSchedule schedule, int warmupSteps, double minLrRatio,
                            double beta1, double beta2, double eps, double weightDecay, double gradClip)
        implements Scoped {
    public OptimizerSpec {
        new Checks()
                .require(Double.isFinite(lr) && lr > 0 && lr <= 1, "lr", "must be greater than 0 and at most 1, got "
                        + Checks.fmt(lr))
                .require(schedule != null, "schedule", "is required")
                .range("warmup_steps", warmupSteps, 0, 1_000_000_000)
                .range("min_lr_ratio", minLrRatio, 0.0, 1.0)
                .require(Double.isFinite(beta1) && beta1 >= 0 && beta1 < 1, "beta1", "must be in [0, 1), got "
                        + Checks.fmt(beta1))
                .require(Double.isFinite(beta2) && beta2 >= 0 && beta2 < 1, "beta2", "must be in [0, 1), got "
                        + Checks.fmt(beta2))
                .require(Double.isFinite(eps) && eps > 0 && eps <= 1, "eps", "must be in (0, 1], got " + Checks.fmt(eps))
                .range("weight_decay", weightDecay, 0.0, 10.0)
                .range("grad_clip", gradClip, 0.0, 1e6)
                .done();
    }

    /**
     * The learning rate of a step (0-based) of a job of {@code totalSteps} steps.
     * {@code warmup_cosine}: {@code lr·(s+1)/w} for {@code s < w}, then
     * {@code lr·(m + (1-m)·(1+cos(π·(s-w)/(T-w)))/2)}.
     */
    public double lrAt(long step, long totalSteps) {
        if (schedule == LrSchedule.CONSTANT) {
            return lr;
        }
        if (step < warmupSteps) {
            return lr * (step + 1) / warmupSteps;
        }
        long decaySteps = Math.max(1, totalSteps - warmupSteps);
        double progress = Math.min(1.0, (double) (step - warmupSteps) / decaySteps);
        return lr * (minLrRatio + (1 - minLrRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
    }

    static OptimizerSpec read(Section s) {
        double lr = s.number("lr", 1e-5);
        LrSchedule schedule = s.choice("schedule", LrSchedule.CONSTANT);
        int warmup = s.integer("warmup_steps", 0);
        double minRatio = s.number("min_lr_ratio", 0.1);
        double b1 = s.number("beta1", 0.9);
        double b2 = s.number("beta2", 0.999);
        double eps = s.number("eps", 1e-8);
        double wd = s.number("weight_decay", 0.0);
        double clip = s.number("grad_clip", 1.0);
        return Scoped.check(s, s.build(() -> new OptimizerSpec(lr, schedule, warmup, minRatio, b1, b2, eps, wd, clip)));
    }

    @Override
    public String choiceKey() {
        return "schedule";
    }

    @Override
    public Map<String, String> unusedKeys() {
        if (schedule != LrSchedule.CONSTANT) {
            return Map.of();
        }
        Map<String, String> out = new LinkedHashMap<>();
        out.put("warmup_steps", "applies to schedule warmup_cosine, not constant");
        out.put("min_lr_ratio", "applies to schedule warmup_cosine, not constant");
        return out;
    }
}
