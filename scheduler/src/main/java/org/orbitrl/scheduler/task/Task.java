package org.orbitrl.scheduler.task;

import java.util.List;

/**
 * A source of verifiable problems with a training stream and a held-out evaluation split, and
 * the verifier that scores a response.
 *
 * <p>Tasks are stateless after construction: every method is a function of its arguments, so a
 * job that resumes at step {@code s} with the same seed sees the same batches as one that never
 * stopped, and several threads may share a task.
 */
public interface Task {

    /** Short name, used in problem ids and logs ({@code addition}, {@code sort}, ...). */
    String name();

    /**
     * The training problems of one step: a function of {@code (seed, step, n)} only. Never
     * contains a problem of {@link #evalSplit}. Problems are drawn with replacement, so a batch
     * may hold one problem twice.
     *
     * @param seed the job's seed
     * @param step the step, >= 0
     * @param n    problems wanted, >= 1
     */
    List<Problem> trainBatch(long seed, long step, int n);

    /**
     * The held-out evaluation problems: the same list for every call with the same size, whatever
     * the job's seed, without duplicates; a smaller size gives a prefix of a larger one.
     *
     * @throws IllegalArgumentException if the task has fewer than {@code size} held-out problems
     */
    List<Problem> evalSplit(int size);

    /** Scores {@code response}, the generated text that follows {@code problem.prompt()}. */
    Reward verify(Problem problem, String response);

    /**
     * The text a perfect model would generate for {@code problem}, end marker included: what a
     * supervised warm-up trains on.
     */
    String completion(Problem problem);

    /**
     * Strings that end a response: generation may stop at the first of them, and the verifier
     * ignores what follows it. Empty when responses end only at the end-of-sequence token.
     */
    List<String> stopStrings();
}
