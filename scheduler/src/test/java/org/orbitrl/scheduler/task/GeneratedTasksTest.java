package org.orbitrl.scheduler.task;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The generated tasks: batches are a function of (seed, step), the evaluation split is fixed and
 * disjoint from training over thousands of problems, and every generated reference answer is right
 * by an independent computation from the problem's numbers.
 */
class GeneratedTasksTest {

    static Stream<GeneratedTask> tasks() {
        return Stream.of(new Addition(3), new Addition(2), new Sorting(5, 99), new Sorting(3, 9),
                new Countdown(4, 100), new Countdown(3, 30));
    }

    @ParameterizedTest
    @MethodSource("tasks")
    void batchesAreAFunctionOfSeedAndStep(GeneratedTask task) {
        List<Problem> a = task.trainBatch(1234, 7, 32);
        assertEquals(a, task.trainBatch(1234, 7, 32), "same seed and step");
        assertEquals(a.subList(0, 10), task.trainBatch(1234, 7, 10), "a smaller batch is a prefix");
        assertNotEquals(ids(a), ids(task.trainBatch(1234, 8, 32)), "next step");
        assertNotEquals(ids(a), ids(task.trainBatch(1235, 7, 32)), "other seed");
        List<Problem> e = task.evalSplit(60);
        assertEquals(e, task.evalSplit(60), "evaluation split is fixed");
        assertEquals(e.subList(0, 20), task.evalSplit(20), "a smaller split is a prefix");
        assertEquals(60, new HashSet<>(ids(e)).size(), "evaluation problems are distinct");
    }

    @ParameterizedTest
    @MethodSource("tasks")
    void trainingNeverProducesAnEvaluationProblem(GeneratedTask task) {
        // sort of 3 items in [0, 9] has 1000 problems, about 100 of them held out
        Set<String> eval = new HashSet<>(ids(task.evalSplit(90)));
        int checked = 0;
        List<String> leaks = new ArrayList<>();
        for (long seed : new long[] {1, 2}) {
            for (long step = 0; step < 40; step++) {
                for (Problem p : task.trainBatch(seed, step, 64)) {
                    checked++;
                    if (eval.contains(p.id()) || HeldOutSplit.isHeldOut(p.id())) {
                        leaks.add("seed " + seed + " step " + step + ": " + p.id());
                    }
                }
            }
        }
        assertEquals(5120, checked);
        if (!leaks.isEmpty()) {
            fail(leaks.size() + " held-out problems in training, first: " + leaks.subList(0, Math.min(5, leaks.size())));
        }
    }

    @ParameterizedTest
    @MethodSource("tasks")
    void referenceAnswersAreRightAndVerifyAsCorrect(GeneratedTask task) {
        List<Problem> problems = new ArrayList<>(task.trainBatch(99, 0, 300));
        problems.addAll(task.evalSplit(100));
        for (Problem p : problems) {
            String expected = switch (task) {
                case Addition x -> {
                    assertTrue(Pattern.matches("[0-9]+\\+[0-9]+=", p.prompt()), p.prompt());
                    String[] ab = p.prompt().substring(0, p.prompt().length() - 1).split("\\+");
                    assertTrue(ab[0].length() <= x.digits() && ab[1].length() <= x.digits(), p.prompt());
                    yield new BigInteger(ab[0]).add(new BigInteger(ab[1])).toString();
                }
                case Sorting x -> {
                    assertTrue(Pattern.matches("sort\\[[0-9]+(,[0-9]+)*]=", p.prompt()), p.prompt());
                    String inner = p.prompt().substring(5, p.prompt().length() - 2);
                    yield "[" + Stream.of(inner.split(",")).mapToInt(Integer::parseInt).sorted()
                            .mapToObj(Integer::toString).reduce((l, r) -> l + "," + r).orElseThrow() + "]";
                }
                case Countdown x -> {
                    assertTrue(Pattern.matches("target[0-9]+\\[[0-9]+(,[0-9]+)*]=", p.prompt()), p.prompt());
                    int open = p.prompt().indexOf('[');
                    long target = Long.parseLong(p.prompt().substring(6, open));
                    List<Long> given = Stream.of(p.prompt().substring(open + 1, p.prompt().length() - 2).split(","))
                            .map(Long::parseLong).toList();
                    CountdownExpression e = parse(p.answer());
                    assertEquals(Rational.of(target), e.value().orElseThrow(), p.id() + ": " + p.answer());
                    assertEquals(given.stream().sorted().toList(),
                            e.numbers().stream().map(BigInteger::longValueExact).sorted().toList(),
                            p.id() + ": the generated solution uses every given number once");
                    assertFalse(given.contains(target), p.id() + ": target is not a given number");
                    yield p.answer();
                }
                default -> throw new AssertionError(task);
            };
            assertEquals(expected, p.answer(), p.id());
            Reward r = task.verify(p, task.completion(p));
            assertTrue(r.correct(), p.id() + " " + task.completion(p));
            assertEquals(1.1, r.total(), 1e-12, p.id());
        }
    }

    @Test
    void heldOutFractionIsAboutOneInTen() {
        int held = 0;
        for (int a = 0; a < 100; a++) {
            for (int b = 0; b < 100; b++) {
                held += HeldOutSplit.isHeldOut("addition:" + a + "+" + b) ? 1 : 0;
            }
        }
        // Binomial(10000, 0.1): mean 1000, sd 30; 5 sd either side.
        assertTrue(Math.abs(held - 1000) <= 150, "held out " + held + " of 10000, expected 1000 +- 150");
    }

    @Test
    void aTaskTooSmallForTheSplitSaysSo() {
        // one-digit addition has 100 problems, about 10 of them held out
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> new Addition(1).evalSplit(100));
        assertTrue(e.getMessage().contains("addition with 1 digit per operand has only about"), e.getMessage());
        assertEquals(5, new Addition(1).evalSplit(5).size());
        assertThrows(IllegalArgumentException.class, () -> new Addition(0));
        assertThrows(IllegalArgumentException.class, () -> new Sorting(1, 10));
        assertThrows(IllegalArgumentException.class, () -> new Countdown(9, 100));
        assertThrows(IllegalArgumentException.class, () -> new Addition(3).trainBatch(1, -1, 4));
    }

    @Test
    void countdownMetadataMatchesThePrompt() {
        Problem p = new Countdown(4, 100).trainBatch(5, 3, 1).getFirst();
        assertEquals("target" + p.metadata().get("target") + "[" + p.metadata().get("numbers") + "]=", p.prompt());
        List<Long> sorted = Countdown.given(p).stream().sorted().toList();
        String canonical = sorted.stream().map(Object::toString).reduce((l, r) -> l + "," + r).orElseThrow();
        assertEquals("countdown:" + canonical + ":" + p.metadata().get("target"), p.id());
    }

    private static CountdownExpression parse(String s) {
        try {
            return CountdownExpression.parse(s);
        } catch (CountdownExpression.SyntaxError e) {
            throw new AssertionError(e);
        }
    }

    private static List<String> ids(List<Problem> ps) {
        return ps.stream().map(Problem::id).toList();
    }
}
