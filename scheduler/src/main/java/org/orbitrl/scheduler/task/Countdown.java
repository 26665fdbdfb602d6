package org.orbitrl.scheduler.task;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Countdown: reach a target from given numbers with {@code + - * /}, each number used at most
 * once.
 *
 * <table>
 *   <caption>Formats</caption>
 *   <tr><td>prompt</td><td>{@code target81[3,7,25,50]=}: the target, then the given numbers in the
 *       order drawn</td></tr>
 *   <tr><td>completion</td><td>{@code (50-25)*3+7-1;}-style: an expression ({@link
 *       CountdownExpression}), then the end marker; the reference is the expression the generator
 *       built</td></tr>
 *   <tr><td>answer extracted</td><td>the response up to the first {@code ;} or newline, stripped
 *       ({@link AnswerText})</td></tr>
 *   <tr><td>format</td><td>the answer parses as an expression (whatever its value or
 *       numbers)</td></tr>
 *   <tr><td>correct</td><td>its exact rational value equals the target, no division by zero, and
 *       every literal is a given number, each used at most as often as it is given</td></tr>
 *   <tr><td>canonical form</td><td>the given numbers sorted, then the target: {@code 3,7,25,50:81}
 *       (the order numbers are shown in does not make a new problem)</td></tr>
 * </table>
 *
 * <p>Generation guarantees a solution: {@code numbers} integers are drawn uniformly from
 * {@code [1, maxNumber]}; two of the pool are repeatedly combined by a random operation (trying the
 * operations in random order and keeping the first whose result is a positive integer, the
 * classic Countdown rule) until one value is left, which becomes the target if it is in
 * {@code [1, maxTarget]} and is not itself one of the given numbers; otherwise the draw is
 * repeated.
 */
public final class Countdown extends GeneratedTask {

    /** Draws tried for one problem before the parameters are declared impossible. */
    private static final int MAX_ATTEMPTS = 100_000;
    private static final char[] OPS = {'+', '-', '*', '/'};

    private final int numbers;
    private final int maxTarget;
    private final int maxNumber;

    /**
     * {@code numbers} (2..8) given numbers and targets up to {@code maxTarget}; the given numbers
     * are at most {@code maxTarget} clamped to [9, 99]. Default reward weights.
     */
    public Countdown(int numbers, int maxTarget) {
        this(numbers, maxTarget, Math.clamp(maxTarget, 9, 99), RewardWeights.DEFAULT);
    }

    public Countdown(int numbers, int maxTarget, int maxNumber, RewardWeights weights) {
        super(weights);
        if (numbers < 2 || numbers > 8) {
            throw new IllegalArgumentException("countdown: numbers must be in 2..8, got " + numbers);
        }
        if (maxTarget < 1) {
            throw new IllegalArgumentException("countdown: max_target must be >= 1, got " + maxTarget);
        }
        if (maxNumber < 2) {
            throw new IllegalArgumentException("countdown: the largest given number must be >= 2, got " + maxNumber);
        }
        this.numbers = numbers;
        this.maxTarget = maxTarget;
        this.maxNumber = maxNumber;
    }

    @Override
    public String name() {
        return "countdown";
    }

    @Override
    protected Problem draw(SplittableRandom rng) {
        for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
            long[] given = new long[numbers];
            for (int i = 0; i < numbers; i++) {
                given[i] = 1 + rng.nextLong(maxNumber);
            }
            Term solution = combineAll(given, rng);
            long target = solution.value();
            if (target > maxTarget || contains(given, target)) {
                continue;
            }
            long[] sorted = given.clone();
            Arrays.sort(sorted);
            String shown = join(given);
            Map<String, String> meta = new LinkedHashMap<>();
            meta.put("numbers", shown);
            meta.put("target", Long.toString(target));
            return new Problem(name() + ":" + join(sorted) + ":" + target, "target" + target + "[" + shown + "]=",
                    solution.text(), meta);
        }
        throw new IllegalStateException(describe() + ": no solvable problem in " + MAX_ATTEMPTS
                + " draws; raise max_target or the number range");
    }

    @Override
    protected boolean wellFormed(Problem problem, String answer) {
        try {
            CountdownExpression.parse(answer);
            return true;
        } catch (CountdownExpression.SyntaxError e) {
            return false;
        }
    }

    @Override
    protected boolean correct(Problem problem, String answer) {
        CountdownExpression e;
        try {
            e = CountdownExpression.parse(answer);
        } catch (CountdownExpression.SyntaxError err) {
            return false;
        }
        Rational target = Rational.of(Long.parseLong(problem.metadata().get("target")));
        return e.value().isPresent() && e.value().get().equals(target) && e.usesAtMostOnce(given(problem));
    }

    @Override
    protected String describe() {
        return "countdown with " + numbers + " numbers in [1, " + maxNumber + "] and targets up to " + maxTarget;
    }

    /** The numbers given in {@code problem}, in the order shown. */
    public static List<Long> given(Problem problem) {
        List<Long> out = new ArrayList<>();
        for (String s : problem.metadata().get("numbers").split(",")) {
            out.add(Long.parseLong(s));
        }
        return out;
    }

    /**
     * A value and how it was made: a given number ({@code op == 0}) or {@code left op right}. The
     * text is rendered only for accepted draws.
     */
    private record Term(long value, char op, Term left, Term right) {

        /** 3 = a number, 2 = {@code * /}, 1 = {@code + -}. */
        int prec() {
            return op == 0 ? 3 : op == '+' || op == '-' ? 1 : 2;
        }

        /** The expression with the parentheses its precedence needs, and no others. */
        String text() {
            if (op == 0) {
                return Long.toString(value);
            }
            int p = prec();
            boolean rightParens = right.prec() < p || (right.prec() == p && (op == '-' || op == '/'));
            return (left.prec() < p ? "(" + left.text() + ")" : left.text()) + op
                    + (rightParens ? "(" + right.text() + ")" : right.text());
        }
    }

    private static Term combineAll(long[] given, SplittableRandom rng) {
        List<Term> pool = new ArrayList<>();
        for (long g : given) {
            pool.add(new Term(g, (char) 0, null, null));
        }
        while (pool.size() > 1) {
            Term a = pool.remove(rng.nextInt(pool.size()));
            Term b = pool.remove(rng.nextInt(pool.size()));
            pool.add(combine(a, b, rng));
        }
        return pool.getFirst();
    }

    /** {@code a op b} for the first op, in random order, whose result is a positive integer. */
    private static Term combine(Term a, Term b, SplittableRandom rng) {
        int first = rng.nextInt(OPS.length);
        for (int i = 0; i < OPS.length; i++) {
            char op = OPS[(first + i) % OPS.length];
            long v = switch (op) {
                case '+' -> a.value + b.value;
                case '-' -> a.value - b.value;
                case '*' -> Math.multiplyHigh(a.value, b.value) == 0 ? a.value * b.value : -1;
                default -> a.value % b.value == 0 ? a.value / b.value : -1;
            };
            if (v > 0) {
                return new Term(v, op, a, b);
            }
        }
        throw new IllegalStateException("no operation combines " + a.value + " and " + b.value);
    }

    private static boolean contains(long[] xs, long x) {
        for (long v : xs) {
            if (v == x) {
                return true;
            }
        }
        return false;
    }

    private static String join(long[] items) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < items.length; i++) {
            sb.append(i == 0 ? "" : ",").append(items[i]);
        }
        return sb.toString();
    }
}
