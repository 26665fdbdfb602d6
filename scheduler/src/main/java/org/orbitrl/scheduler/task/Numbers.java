package org.orbitrl.scheduler.task;

import java.math.BigDecimal;
import java.util.Locale;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reading answers written as numbers, so that different spellings of one value compare equal.
 * {@link #parse} accepts, after removing every space, {@code $} (also {@code \$}) and one leading
 * {@code +}, and one trailing {@code .} (the end of a sentence):
 * <ul>
 *   <li>integers and decimals, with an optional sign ({@code -} or {@code −}): {@code 42},
 *       {@code -0.75}, {@code 42.0} (= 42), {@code .5};</li>
 *   <li>thousands separators in groups of three: {@code 1,234,567.5} (but {@code 1,23} is not a
 *       number);</li>
 *   <li>fractions of two such numbers, {@code 3/4} (= 0.75), and {@code \frac{3}{4}},
 *       {@code \dfrac}, {@code \tfrac}.</li>
 * </ul>
 * Values are exact {@link Rational}s: {@code 0.1 + 0.2} style rounding never decides a match.
 */
public final class Numbers {

    private static final String DECIMAL = "[-\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)?(?:\\.[0-9]+)?";
    private static final Pattern NUMBER = Pattern.compile(DECIMAL);
    private static final Pattern FRACTION = Pattern.compile("(" + DECIMAL + ")/(" + DECIMAL + ")");
    private static final Pattern LATEX_FRACTION = Pattern.compile("([-\u2212]?)\\\\[dt]?frac\\{([^{}]*)}\\{([^{}]*)}");

    private Numbers() {
    }

    /** The exact value of {@code text} read as a number, or empty if it is not one. */
    public static Optional<Rational> parse(String text) {
        String s = text.replace("\\$", "").replace("$", "").replaceAll("\\s+", "");
        if (s.startsWith("+")) {
            s = s.substring(1);
        }
        if (s.endsWith(".")) {
            s = s.substring(0, s.length() - 1);
        }
        if (s.isEmpty()) {
            return Optional.empty();
        }
        Matcher latex = LATEX_FRACTION.matcher(s);
        if (latex.matches()) {
            return ratio(latex.group(2), latex.group(3)).map(r -> latex.group(1).isEmpty() ? r : r.negate());
        }
        Matcher frac = FRACTION.matcher(s);
        if (frac.matches()) {
            return ratio(frac.group(1), frac.group(2));
        }
        return decimal(s);
    }

    /**
     * Whether two answers agree: as numbers when both read as numbers ({@link #parse}), else as
     * text after {@link #normaliseText}.
     */
    public static boolean equivalent(String a, String b) {
        Optional<Rational> x = parse(a);
        Optional<Rational> y = parse(b);
        if (x.isPresent() && y.isPresent()) {
            return x.get().equals(y.get());
        }
        if (x.isPresent() != y.isPresent()) {
            return false;
        }
        return normaliseText(a).equals(normaliseText(b));
    }

    /**
     * Text normalised for comparison: lower case, runs of whitespace made one space, {@code $}
     * removed, surrounding whitespace and one trailing {@code .} removed.
     */
    public static String normaliseText(String s) {
        String t = s.replace("\\$", "").replace("$", "").replaceAll("\\s+", " ").strip().toLowerCase(Locale.ROOT);
        return t.endsWith(".") ? t.substring(0, t.length() - 1).strip() : t;
    }

    private static Optional<Rational> ratio(String num, String den) {
        Optional<Rational> n = decimal(num.replaceAll("\\s+", ""));
        Optional<Rational> d = decimal(den.replaceAll("\\s+", ""));
        if (n.isEmpty() || d.isEmpty() || d.get().signum() == 0) {
            return Optional.empty();
        }
        return Optional.of(n.get().divide(d.get()));
    }

    private static Optional<Rational> decimal(String s) {
        if (!NUMBER.matcher(s).matches() || s.chars().noneMatch(Character::isDigit)) {
            return Optional.empty();
        }
        String plain = s.replace(",", "").replace('\u2212', '-');
        try {
            return Optional.of(Rational.of(new BigDecimal(plain)));
        } catch (NumberFormatException e) {
            return Optional.empty();
        }
    }
}
