package org.orbitrl.scheduler.rl;

/**
 * The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on
 * Code"): with {@code n} samples of a problem of which {@code c} are correct, the probability that
 * at least one of {@code k} samples drawn without replacement is correct,
 * <pre>
 *   pass@k = 1 − C(n−c, k) / C(n, k) = 1 − Π_{i = n−c+1}^{n} (1 − k/i)
 * </pre>
 * computed as the product (no binomials, no overflow); exactly 1 when {@code n − c < k}.
 */
public final class PassAtK {

    private PassAtK() {
    }

    /**
     * pass@k of one problem.
     *
     * @throws IllegalArgumentException unless {@code 0 <= c <= n} and {@code 1 <= k <= n}
     */
    public static double estimate(int n, int c, int k) {
        if (n < 1 || c < 0 || c > n) {
            throw new IllegalArgumentException("pass@k needs 0 <= correct <= samples, got samples " + n
                    + ", correct " + c);
        }
        if (k < 1 || k > n) {
            throw new IllegalArgumentException("pass@" + k + " needs 1 <= k <= samples (" + n + ")");
        }
        if (n - c < k) {
            return 1.0;
        }
        double allWrong = 1.0;
        for (int i = n - c + 1; i <= n; i++) {
            allWrong *= 1.0 - (double) k / i;
        }
        return 1.0 - allWrong;
    }

    /**
     * Mean pass@k over problems.
     *
     * @param samples [problems] samples drawn per problem
     * @param correct [problems] correct samples per problem
     */
    public static double mean(int[] samples, int[] correct, int k) {
        if (samples.length != correct.length || samples.length == 0) {
            throw new IllegalArgumentException("pass@k needs one sample count and one correct count per problem, got "
                    + samples.length + " and " + correct.length);
        }
        double sum = 0;
        for (int p = 0; p < samples.length; p++) {
            try {
                sum += estimate(samples[p], correct[p], k);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("problem " + p + ": " + e.getMessage(), e);
            }
        }
        return sum / samples.length;
    }
}
