package org.orbitrl.scheduler.job;

import java.nio.file.Path;
import java.util.List;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * Evaluation on held-out prompts: mean accuracy at temperature 0 and pass@k by the unbiased
 * estimator over {@code samples} draws per prompt. Runs before the first step, every
 * {@code interval} steps, and after the last.
 *
 * @param interval steps between evaluations (0 = only before the first and after the last step);
 *                 live-tunable
 * @param set      {@code held_out} (the task's held-out split) or the path of a JSONL file
 * @param size     prompts evaluated
 * @param samples  draws per prompt for pass@k (n of the estimator; at least the largest k)
 * @param passAtK  the k values reported, ascending
 */
public record EvalSpec(@Tunable int interval, String set, int size, int samples, List<Integer> passAtK) {
    /** The eval-set name that means the task's own held-out split. */
    public static final String HELD_OUT = "held_out";

    public EvalSpec {
        passAtK = List.copyOf(passAtK);
        Checks c = new Checks()
                .range("interval", interval, 0, 1_000_000_000)
                .notBlank("set", set)
                .range("size", size, 1, 1_000_000)
                .range("samples", samples, 1, 4096)
                .require(!passAtK.isEmpty(), "pass_at_k", "must list at least one k");
        for (int i = 0; i < passAtK.size(); i++) {
            int k = passAtK.get(i);
            c.require(k >= 1, "pass_at_k[" + i + "]", "must be at least 1, got " + k);
            c.require(i == 0 || k > passAtK.get(i - 1), "pass_at_k[" + i + "]",
                    "k values must be ascending without repeats, got " + passAtK);
            if (c.valid("samples", "pass_at_k[" + i + "]")) {
                c.require(k <= samples, "pass_at_k[" + i + "]", "k = " + k + " needs at least " + k
                        + " samples per prompt; eval.samples is " + samples);
            }
        }
        c.done();
    }

    /** Whether the eval set is the task's held-out split rather than a file. */
    public boolean heldOut() {
        return HELD_OUT.equals(set);
    }

    static EvalSpec read(Section s, Path baseDir) {
        int interval = s.integer("interval", 10);
        String set = s.string("set", HELD_OUT);
        int size = s.integer("size", 100);
        int samples = s.integer("samples", 8);
        List<Integer> ks = s.integers("pass_at_k", List.of(1, 4, 8));
        java.nio.file.Path file = set.isBlank() || set.equals(HELD_OUT) ? null : s.path("set", baseDir);
        String resolved = file == null ? set : file.toString();
        return s.build(() -> new EvalSpec(interval, resolved, size, samples, ks));
    }
}
