package org.orbitrl.scheduler.task;

import java.util.Collections;
import java.util.List;
import java.util.SortedMap;
import java.util.TreeMap;
import org.orbitrl.scheduler.rl.Accuracy;
import org.orbitrl.scheduler.rl.PassAtK;

/**
 * Aggregates verdicts on an evaluation split into accuracy and pass@k ({@link PassAtK}'s unbiased
 * estimator, averaged over problems).
 *
 * @param problems       problems evaluated
 * @param accuracy       fraction of problems whose greedy (temperature 0) answer is correct; NaN if
 *                       no greedy answers were given
 * @param sampleAccuracy mean over problems of the fraction of correct samples (= pass@1); NaN if no
 *                       samples were given
 * @param passAtK        k → mean pass@k over problems, ascending k
 */
public record Evaluation(int problems, double accuracy, double sampleAccuracy, SortedMap<Integer, Double> passAtK) {

    public Evaluation {
        passAtK = Collections.unmodifiableSortedMap(new TreeMap<>(passAtK));
    }

    /**
     * Evaluation from greedy answers and sampled answers of the same problems.
     *
     * @param greedy  [problems] whether each problem's greedy answer is correct
     * @param samples [problems][n] whether each sample is correct; n may differ between problems but
     *                must be at least the largest k
     * @param ks      the k values of pass@k
     */
    public static Evaluation of(boolean[] greedy, boolean[][] samples, List<Integer> ks) {
        if (greedy.length != samples.length) {
            throw new IllegalArgumentException("evaluation needs the same problems greedy and sampled, got "
                    + greedy.length + " greedy and " + samples.length + " sampled");
        }
        Evaluation s = sampled(samples, ks);
        return new Evaluation(s.problems, Accuracy.mean(greedy), s.sampleAccuracy, s.passAtK);
    }

    /** Accuracy at temperature 0 only. */
    public static Evaluation greedy(boolean[] greedy) {
        return new Evaluation(greedy.length, Accuracy.mean(greedy), Double.NaN, new TreeMap<>());
    }

    /** pass@k and mean sample accuracy only; {@link #accuracy} is NaN. */
    public static Evaluation sampled(boolean[][] samples, List<Integer> ks) {
        int[] n = new int[samples.length]; // [problems]
        int[] c = new int[samples.length]; // [problems]
        for (int p = 0; p < samples.length; p++) {
            n[p] = samples[p].length;
            for (boolean b : samples[p]) {
                c[p] += b ? 1 : 0;
            }
        }
        SortedMap<Integer, Double> pass = new TreeMap<>();
        for (int k : ks) {
            pass.put(k, PassAtK.mean(n, c, k));
        }
        return new Evaluation(samples.length, Double.NaN, Accuracy.mean(n, c), pass);
    }
}
