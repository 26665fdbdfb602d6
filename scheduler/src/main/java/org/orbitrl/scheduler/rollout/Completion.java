package org.orbitrl.scheduler.rollout;

/**
 * One finished sample. Arrays are per generated token.
 *
 * @param policyLogprobs  log-probability of each token under the temperature-scaled policy (what the trainer recomputes)
 * @param sampledLogprobs log-probability under the filtered distribution it was drawn from
 * @param versions        the adapter version that produced each token
 * @param stopString      the stop string that ended it, or null
 * @param preemptions     times this sample was preempted and recomputed
 */
public record Completion(String requestId, int sample, int[] prompt, int[] tokens, float[] policyLogprobs,
                         float[] sampledLogprobs, long[] versions, FinishReason reason, String stopString,
                         int preemptions) {

    /** True if every token came from one adapter version. */
    public boolean singleVersion() {
        for (long v : versions) {
            if (v != versions[0]) {
                return false;
            }
        }
        return true;
    }
}
