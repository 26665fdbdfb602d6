package org.orbitrl.scheduler.rl;

/**
 * Mean accuracy over an evaluation split: the fraction of problems answered correctly (one
 * greedy, temperature-0 answer each), or, with several samples per problem, the mean over
 * problems of each problem's fraction of correct samples (which equals pass@1).
 */
public final class Accuracy {

    private Accuracy() {
    }

    /** Fraction of {@code true}; throws on an empty split. */
    public static double mean(boolean[] correct) {
        if (correct.length == 0) {
            throw new IllegalArgumentException("accuracy of an empty evaluation split");
        }
        int c = 0;
        for (boolean b : correct) {
            c += b ? 1 : 0;
        }
        return (double) c / correct.length;
    }

    /**
     * Mean over problems of {@code correct[p] / samples[p]}.
     *
     * @param samples [problems] samples per problem, >= 1
     * @param correct [problems] correct samples per problem
     */
    public static double mean(int[] samples, int[] correct) {
        if (samples.length != correct.length || samples.length == 0) {
            throw new IllegalArgumentException("accuracy needs one sample count and one correct count per problem, got "
                    + samples.length + " and " + correct.length);
        }
        double sum = 0;
        for (int p = 0; p < samples.length; p++) {
            if (samples[p] < 1 || correct[p] < 0 || correct[p] > samples[p]) {
                throw new IllegalArgumentException("problem " + p + ": need 0 <= correct <= samples, samples >= 1, got "
                        + correct[p] + " of " + samples[p]);
            }
            sum += (double) correct[p] / samples[p];
        }
        return sum / samples.length;
    }
}
