package org.orbitrl.scheduler.task;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * A procedurally generated task: subclasses draw one random problem from a random stream; this
 * class turns that into the training batches and the evaluation split.
 *
 * <ul>
 *   <li>Training batch of step {@code s}: draws from the stream seeded by {@code (seed, s)},
 *       skipping every draw that {@link HeldOutSplit} holds out.</li>
 *   <li>Evaluation split: draws from a stream with a fixed seed (not the job's), keeping only
 *       held-out problems, each once, in order of first appearance.</li>
 * </ul>
 * Answers end with {@link AnswerText#END_MARKER}.
 */
public abstract class GeneratedTask implements Task {

    /** Seed of the evaluation split's stream: the split is the same for every job. */
    private static final long EVAL_STREAM = 0x0e7a1_5711_7L;
    /** Draws allowed per wanted problem before the task is declared too small. */
    private static final int DRAWS_PER_PROBLEM = 200;

    private final RewardWeights weights;

    protected GeneratedTask(RewardWeights weights) {
        this.weights = weights;
    }

    /**
     * Draws one problem from {@code rng}. The id must be {@code name() + ":" + canonical form},
     * where two problems with the same canonical form are the same problem.
     */
    protected abstract Problem draw(SplittableRandom rng);

    /** Whether {@code answer} (already cut at the end marker) has the task's answer shape. */
    protected abstract boolean wellFormed(Problem problem, String answer);

    /** Whether {@code answer} (already cut at the end marker and well formed) is correct. */
    protected abstract boolean correct(Problem problem, String answer);

    /** Describes the task's parameters for error messages ({@code "addition with 3 digits"}). */
    protected abstract String describe();

    @Override
    public final List<Problem> trainBatch(long seed, long step, int n) {
        if (step < 0 || n < 1) {
            throw new IllegalArgumentException(name() + ": a training batch needs step >= 0 and n >= 1, got step "
                    + step + ", n " + n);
        }
        SplittableRandom rng = new SplittableRandom(Seeds.mix(seed, step));
        List<Problem> out = new ArrayList<>(n);
        long draws = 0;
        long limit = (long) DRAWS_PER_PROBLEM * n + 10_000;
        while (out.size() < n) {
            if (++draws > limit) {
                throw new IllegalStateException(describe() + ": " + limit + " draws gave only " + out.size()
                        + " training problems; almost every problem is held out, make the task larger");
            }
            Problem p = draw(rng);
            if (!HeldOutSplit.isHeldOut(p.id())) {
                out.add(p);
            }
        }
        return List.copyOf(out);
    }

    @Override
    public final List<Problem> evalSplit(int size) {
        if (size < 1) {
            throw new IllegalArgumentException(name() + ": evaluation split size must be >= 1, got " + size);
        }
        SplittableRandom rng = new SplittableRandom(EVAL_STREAM);
        Map<String, Problem> found = new LinkedHashMap<>();
        long limit = (long) DRAWS_PER_PROBLEM * HeldOutSplit.ONE_IN * size + 10_000;
        for (long draws = 0; found.size() < size; draws++) {
            if (draws >= limit) {
                throw new IllegalArgumentException(describe() + " has only about " + found.size()
                        + " distinct held-out problems (" + draws + " draws found no more); ask for an evaluation"
                        + " split of at most " + found.size() + " or make the task larger");
            }
            Problem p = draw(rng);
            if (HeldOutSplit.isHeldOut(p.id())) {
                found.putIfAbsent(p.id(), p);
            }
        }
        return List.copyOf(found.values());
    }

    @Override
    public final Reward verify(Problem problem, String response) {
        String answer = AnswerText.extract(response);
        boolean formed = wellFormed(problem, answer);
        return Reward.score(formed && correct(problem, answer), formed, weights);
    }

    @Override
    public final String completion(Problem problem) {
        return problem.answer() + AnswerText.END_MARKER;
    }

    @Override
    public final List<String> stopStrings() {
        return AnswerText.STOP_STRINGS;
    }

    /** The reward weights this task scores with. */
    public final RewardWeights weights() {
        return weights;
    }
}
