package org.orbitrl.scheduler.job;

import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * The objective and its coefficients.
 *
 * @param name            the algorithm
 * @param clipLow         the ratio may fall to {@code 1 - clipLow} before it is clipped
 * @param clipHigh        the ratio may rise to {@code 1 + clipHigh} before it is clipped
 *                        (clip-higher: may exceed clipLow)
 * @param dualClip        dual-clip bound c on the loss of negative-advantage tokens (0 = off, else &gt; 1)
 * @param updatesPerStep  optimizer updates taken on each step's samples (PPO epochs × minibatches)
 */
public record AlgorithmSpec(Algorithm name, double clipLow, double clipHigh, double dualClip, int updatesPerStep) {
    public AlgorithmSpec {
        new Checks()
                .require(name != null, "name", "is required")
                .range("clip_low", clipLow, 0.0, 1.0)
                .range("clip_high", clipHigh, 0.0, 10.0)
                .require(dualClip == 0.0 || (Double.isFinite(dualClip) && dualClip > 1.0), "dual_clip",
                        "must be 0 (off) or greater than 1, got " + Checks.fmt(dualClip))
                .range("updates_per_step", updatesPerStep, 1, 64)
                .done();
    }

    static AlgorithmSpec read(Section s) {
        Algorithm name = s.choice("name", Algorithm.GRPO);
        double low = s.number("clip_low", name.defaultClipLow());
        double high = s.number("clip_high", name.defaultClipHigh());
        double dual = s.number("dual_clip", 0.0);
        int updates = s.integer("updates_per_step", 1);
        return s.build(() -> new AlgorithmSpec(name, low, high, dual, updates));
    }
}
