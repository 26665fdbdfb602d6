package org.orbitrl.scheduler.task;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.SplittableRandom;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A task read from JSONL files ({@link JsonlDataset}).
 *
 * <ul>
 *   <li>Evaluation split: the problems of the evaluation file, in file order; without one, the last
 *       {@code heldOutTail} usable problems of the training file.</li>
 *   <li>Training: the remaining problems of the training file, less any whose prompt is also an
 *       evaluation prompt (each reported as a {@link DatasetIssue.Kind#IN_EVAL_SET} issue). They
 *       are visited in epochs, each epoch a fresh permutation seeded by {@code (seed, epoch)}; the
 *       batch of step {@code s} with size {@code n} is positions {@code s·n … s·n+n−1} of that
 *       endless sequence, so it depends on {@code (seed, step, n)} only.</li>
 *   <li>Verification ({@link Answers}, {@link Numbers}): the response's answer is the text after
 *       its last {@code ####}, else its last {@code \boxed{}}, else its last number; {@code correct}
 *       when it equals the reference as a number (or as normalised text if either is not a number);
 *       {@code format} when the answer was explicit ({@code ####} or {@code \boxed{}}).</li>
 *   <li>Completion: the problem's whole {@code answer} field (for GSM8K, the worked solution
 *       ending in {@code #### 42}).</li>
 * </ul>
 */
public final class JsonlTask implements Task {

    private static final Logger LOG = LoggerFactory.getLogger(JsonlTask.class);

    private final List<Problem> train;
    private final List<Problem> eval;
    private final List<DatasetIssue> issues;
    private final RewardWeights weights;

    private JsonlTask(List<Problem> train, List<Problem> eval, List<DatasetIssue> issues, RewardWeights weights) {
        this.train = List.copyOf(train);
        this.eval = List.copyOf(eval);
        this.issues = List.copyOf(issues);
        this.weights = weights;
    }

    /**
     * Loads a dataset task.
     *
     * @param trainPath   the training file
     * @param evalPath    the evaluation file, or null to hold out the tail of the training file
     * @param format      how reference answers are written
     * @param heldOutTail problems held out from the end of the training file when {@code evalPath}
     *                    is null (ignored otherwise)
     * @throws IllegalArgumentException if either set ends up empty
     */
    public static JsonlTask load(Path trainPath, Path evalPath, ReferenceFormat format, int heldOutTail,
                                 RewardWeights weights) {
        JsonlDataset trainFile = JsonlDataset.load(trainPath, format);
        List<DatasetIssue> issues = new ArrayList<>(trainFile.issues());
        List<Problem> candidates = trainFile.problems();
        List<Problem> eval;
        if (evalPath != null) {
            JsonlDataset evalFile = JsonlDataset.load(evalPath, format);
            issues.addAll(evalFile.issues());
            eval = evalFile.problems();
            if (eval.isEmpty()) {
                throw new IllegalArgumentException("evaluation file " + evalPath + " has no usable problems ("
                        + evalFile.issues().size() + " lines skipped)");
            }
        } else {
            if (heldOutTail < 1 || heldOutTail >= candidates.size()) {
                throw new IllegalArgumentException("training file " + trainPath + " has " + candidates.size()
                        + " usable problems; holding out the last " + heldOutTail + " for evaluation needs at least "
                        + (Math.max(heldOutTail, 1) + 1) + " (or give an evaluation file)");
            }
            eval = candidates.subList(candidates.size() - heldOutTail, candidates.size());
            candidates = candidates.subList(0, candidates.size() - heldOutTail);
        }
        Set<String> evalPrompts = new HashSet<>();
        for (Problem p : eval) {
            evalPrompts.add(p.prompt().strip());
        }
        List<Problem> train = new ArrayList<>();
        int overlap = 0;
        for (Problem p : candidates) {
            if (evalPrompts.contains(p.prompt().strip())) {
                DatasetIssue i = new DatasetIssue(trainPath, Long.parseLong(p.metadata().get("line")),
                        DatasetIssue.Kind.IN_EVAL_SET, "prompt is also in the evaluation set; left out of training");
                LOG.warn("skipped {}", i);
                issues.add(i);
                overlap++;
            } else {
                train.add(p);
            }
        }
        if (overlap > 0) {
            LOG.warn("{}: {} training problems left out because their prompts are evaluation prompts", trainPath,
                    overlap);
        }
        if (train.isEmpty()) {
            throw new IllegalArgumentException("training file " + trainPath + " has no usable problems outside the"
                    + " evaluation set (" + issues.size() + " lines skipped)");
        }
        return new JsonlTask(train, eval, issues, weights);
    }

    @Override
    public String name() {
        return "jsonl";
    }

    /** Every skipped line of both files, and the training lines left out as evaluation prompts. */
    public List<DatasetIssue> issues() {
        return issues;
    }

    /** The training problems, in file order. */
    public List<Problem> trainProblems() {
        return train;
    }

    @Override
    public List<Problem> trainBatch(long seed, long step, int n) {
        if (step < 0 || n < 1) {
            throw new IllegalArgumentException("jsonl: a training batch needs step >= 0 and n >= 1, got step " + step
                    + ", n " + n);
        }
        int size = train.size();
        List<Problem> out = new ArrayList<>(n);
        long epoch = -1;
        int[] order = null;
        for (long pos = step * n; pos < step * n + n; pos++) {
            if (pos / size != epoch) {
                epoch = pos / size;
                order = permutation(size, new SplittableRandom(Seeds.mix(seed, epoch)));
            }
            out.add(train.get(order[(int) (pos % size)]));
        }
        return List.copyOf(out);
    }

    @Override
    public List<Problem> evalSplit(int size) {
        if (size < 1 || size > eval.size()) {
            throw new IllegalArgumentException("jsonl: the evaluation set has " + eval.size() + " problems, asked for "
                    + size);
        }
        return eval.subList(0, size);
    }

    @Override
    public Reward verify(Problem problem, String response) {
        Optional<Answers.Extracted> answer = Answers.fromResponse(response);
        boolean correct = answer.isPresent() && Numbers.equivalent(answer.get().text(), problem.answer());
        return Reward.score(correct, answer.isPresent() && answer.get().explicit(), weights);
    }

    @Override
    public String completion(Problem problem) {
        return problem.metadata().getOrDefault("answer_field", "#### " + problem.answer());
    }

    @Override
    public List<String> stopStrings() {
        return List.of();
    }

    /** A uniform permutation of {@code 0..size-1} (Fisher–Yates). */
    private static int[] permutation(int size, SplittableRandom rng) {
        int[] p = new int[size];
        for (int i = 0; i < size; i++) {
            p[i] = i;
        }
        for (int i = size - 1; i > 0; i--) {
            int j = rng.nextInt(i + 1);
            int t = p[i];
            p[i] = p[j];
            p[j] = t;
        }
        return p;
    }
}
