package org.orbitrl.scheduler.task;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A task from JSONL files: the split, the epoch order of training batches, and the verifier. */
class JsonlTaskTest {

    @TempDir
    Path dir;

    private Path write(String name, int from, int to) throws IOException {
        StringBuilder sb = new StringBuilder();
        for (int i = from; i < to; i++) {
            sb.append("{\"prompt\": \"What is ").append(i).append(" times 3?\", \"answer\": \"")
                    .append(i).append("*3 = ").append(3 * i).append("\\n#### ").append(3 * i).append("\"}\n");
        }
        Path p = dir.resolve(name);
        Files.writeString(p, sb);
        return p;
    }

    @Test
    void heldOutTailAndEpochs() throws IOException {
        Path train = write("train.jsonl", 0, 50);
        JsonlTask task = JsonlTask.load(train, null, ReferenceFormat.GSM8K, 10, RewardWeights.DEFAULT);
        List<Problem> eval = task.evalSplit(10);
        assertEquals("train.jsonl:41", eval.getFirst().id());
        assertEquals("train.jsonl:50", eval.getLast().id());
        assertEquals(40, task.trainProblems().size());
        assertThrows(IllegalArgumentException.class, () -> task.evalSplit(11));

        // steps 0..3 of size 10 cover epoch 0 exactly once; the same again with the same seed
        Set<String> evalIds = new HashSet<>(eval.stream().map(Problem::id).toList());
        List<String> epoch = new ArrayList<>();
        for (int step = 0; step < 4; step++) {
            for (Problem p : task.trainBatch(42, step, 10)) {
                assertTrue(!evalIds.contains(p.id()), p.id());
                epoch.add(p.id());
            }
        }
        assertEquals(40, new HashSet<>(epoch).size(), "one epoch visits every training problem once");
        assertEquals(task.trainBatch(42, 2, 10), task.trainBatch(42, 2, 10));
        assertTrue(!task.trainBatch(42, 0, 10).equals(task.trainBatch(43, 0, 10)), "the seed shuffles");
        assertTrue(!task.trainBatch(42, 0, 40).equals(task.trainBatch(42, 1, 40)), "each epoch reshuffles");
        // a batch that straddles two epochs: positions 35..44
        List<Problem> straddle = task.trainBatch(42, 7, 5).subList(0, 5);
        assertEquals(task.trainBatch(42, 3, 10).subList(5, 10), straddle);
    }

    @Test
    void evalFileAndOverlap() throws IOException {
        Path train = write("train.jsonl", 0, 30);
        Path eval = write("test.jsonl", 25, 40); // prompts 25..29 are in both
        JsonlTask task = JsonlTask.load(train, eval, ReferenceFormat.AUTO, 0, RewardWeights.DEFAULT);
        assertEquals(15, task.evalSplit(15).size());
        assertEquals(25, task.trainProblems().size());
        assertEquals(List.of(26L, 27L, 28L, 29L, 30L), task.issues().stream()
                .filter(i -> i.kind() == DatasetIssue.Kind.IN_EVAL_SET).map(DatasetIssue::line).toList());
    }

    @Test
    void verifier() throws IOException {
        JsonlTask task = JsonlTask.load(write("t.jsonl", 0, 5), null, ReferenceFormat.GSM8K, 1, RewardWeights.DEFAULT);
        Problem p = task.evalSplit(1).getFirst(); // 4 times 3: 12
        assertEquals("12", p.answer());
        assertEquals("4*3 = 12\n#### 12", task.completion(p));
        check(task, p, "4*3 = 12\n#### 12", true, true);
        check(task, p, "#### 12.0", true, true);
        check(task, p, "\\boxed{12}", true, true);
        check(task, p, "it is 12", true, false);
        check(task, p, "12 or 13", false, false);
        check(task, p, "#### 13", false, true);
        check(task, p, "#### twelve", false, true);
        check(task, p, "I do not know", false, false);
        assertEquals(List.of(), task.stopStrings());
    }

    @Test
    void tooSmallFiles() throws IOException {
        Path train = write("one.jsonl", 0, 3);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> JsonlTask.load(train, null, ReferenceFormat.AUTO, 3, RewardWeights.DEFAULT));
        assertTrue(e.getMessage().contains("one.jsonl has 3 usable problems"), e.getMessage());
        Path empty = dir.resolve("empty.jsonl");
        Files.writeString(empty, "bad\n");
        assertThrows(IllegalArgumentException.class,
                () -> JsonlTask.load(train, empty, ReferenceFormat.AUTO, 0, RewardWeights.DEFAULT));
    }

    private static void check(Task task, Problem p, String response, boolean correct, boolean format) {
        Reward r = task.verify(p, response);
        assertEquals(correct, r.correct(), response);
        assertEquals(format ? 1.0 : 0.0, r.breakdown().get("format"), response);
        assertEquals((correct ? 1.0 : 0.0) + (format ? 0.1 : 0.0), r.total(), 1e-12, response);
    }
}
