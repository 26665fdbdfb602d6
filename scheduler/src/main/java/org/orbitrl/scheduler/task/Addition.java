package org.orbitrl.scheduler.task;

import java.math.BigInteger;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.regex.Pattern;

/**
 * Multi-digit addition.
 *
 * <table>
 *   <caption>Formats</caption>
 *   <tr><td>prompt</td><td>{@code 12+345=}: both operands in decimal, each uniform in
 *       {@code [0, 10^digits)}</td></tr>
 *   <tr><td>completion</td><td>{@code 357;}: the sum in decimal, then the end marker</td></tr>
 *   <tr><td>answer extracted</td><td>the response up to the first {@code ;} or newline, stripped
 *       ({@link AnswerText})</td></tr>
 *   <tr><td>format</td><td>the answer is 1 to 40 decimal digits, nothing else</td></tr>
 *   <tr><td>correct</td><td>well formed and numerically equal to the sum (leading zeros
 *       allowed)</td></tr>
 *   <tr><td>canonical form</td><td>{@code a+b} ({@code a+b} and {@code b+a} are different
 *       problems)</td></tr>
 * </table>
 */
public final class Addition extends GeneratedTask {

    private static final Pattern DIGITS = Pattern.compile("[0-9]{1,40}");

    private final int digits;
    private final long bound;

    /** Addition of operands with up to {@code digits} digits (1..18), default reward weights. */
    public Addition(int digits) {
        this(digits, RewardWeights.DEFAULT);
    }

    public Addition(int digits, RewardWeights weights) {
        super(weights);
        if (digits < 1 || digits > 18) {
            throw new IllegalArgumentException("addition: digits must be in 1..18, got " + digits);
        }
        this.digits = digits;
        this.bound = BigInteger.TEN.pow(digits).longValueExact();
    }

    @Override
    public String name() {
        return "addition";
    }

    /** Digits per operand. */
    public int digits() {
        return digits;
    }

    @Override
    protected Problem draw(SplittableRandom rng) {
        long a = rng.nextLong(bound);
        long b = rng.nextLong(bound);
        String canonical = a + "+" + b;
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("a", Long.toString(a));
        meta.put("b", Long.toString(b));
        return new Problem(name() + ":" + canonical, canonical + "=", Long.toString(a + b), meta);
    }

    @Override
    protected boolean wellFormed(Problem problem, String answer) {
        return DIGITS.matcher(answer).matches();
    }

    @Override
    protected boolean correct(Problem problem, String answer) {
        return new BigInteger(answer).equals(new BigInteger(problem.answer()));
    }

    @Override
    protected String describe() {
        return "addition with " + digits + " digit" + (digits == 1 ? "" : "s") + " per operand";
    }
}
