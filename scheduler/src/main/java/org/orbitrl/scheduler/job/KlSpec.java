package org.orbitrl.scheduler.job;

import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * The KL penalty to the reference policy (the base with the adapter off).
 *
 * @param coef      weight of the KL term in the loss (0 = no penalty, and no reference pass)
 * @param estimator per-token estimator
 */
public record KlSpec(double coef, KlEstimator estimator) {
    public KlSpec {
        new Checks().range("coef", coef, 0.0, 100.0).require(estimator != null, "estimator", "is required").done();
    }

    static KlSpec read(Section s) {
        double coef = s.number("coef", 0.0);
        KlEstimator est = s.choice("estimator", KlEstimator.K3);
        return s.build(() -> new KlSpec(coef, est));
    }
}
