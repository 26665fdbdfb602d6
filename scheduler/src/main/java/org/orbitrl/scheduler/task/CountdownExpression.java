package org.orbitrl.scheduler.task;

import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

/**
 * A Countdown answer: an arithmetic expression over non-negative integer literals with
 * {@code + - * /} (also written {@code − × ÷}) and parentheses, evaluated with exact rational
 * arithmetic.
 * <pre>
 *   expression := term (('+' | '-') term)*
 *   term       := factor (('*' | '/') factor)*
 *   factor     := integer | '(' expression ')'
 * </pre>
 * Usual precedence, left-associative; spaces are ignored. There is no unary minus, no decimal
 * point and no exponent: Countdown combines the given numbers with the four operations only.
 *
 * @param text    the expression as written
 * @param numbers the integer literals in order of appearance
 * @param value   the exact value, or empty if some division divides by zero
 */
public record CountdownExpression(String text, List<BigInteger> numbers, Optional<Rational> value) {

    /** Longest literal accepted, in digits. */
    private static final int MAX_DIGITS = 30;
    /** Deepest nesting of parentheses accepted. */
    private static final int MAX_DEPTH = 64;

    public CountdownExpression {
        numbers = List.copyOf(numbers);
    }

    /** A syntax error, with the character position where parsing stopped. */
    public static final class SyntaxError extends Exception {
        private final int position;

        SyntaxError(String text, int position, String what) {
            super(what + " at position " + position + " of \"" + text + "\"");
            this.position = position;
        }

        /** Index into the expression text where parsing stopped. */
        public int position() {
            return position;
        }
    }

    /** Parses and evaluates {@code text}. */
    public static CountdownExpression parse(String text) throws SyntaxError {
        Parser p = new Parser(text);
        Node root = p.expression();
        p.skipSpaces();
        if (p.pos < text.length()) {
            throw new SyntaxError(text, p.pos, "unexpected '" + text.charAt(p.pos) + "'");
        }
        Optional<Rational> value;
        try {
            value = Optional.of(root.eval());
        } catch (ArithmeticException e) {
            value = Optional.empty();
        }
        return new CountdownExpression(text, p.literals, value);
    }

    /**
     * Whether every literal is one of {@code given}, each given number used at most as many times
     * as it appears there.
     */
    public boolean usesAtMostOnce(List<Long> given) {
        List<BigInteger> left = new ArrayList<>();
        for (long g : given) {
            left.add(BigInteger.valueOf(g));
        }
        for (BigInteger n : numbers) {
            if (!left.remove(n)) {
                return false;
            }
        }
        return true;
    }

    private sealed interface Node permits Literal, Binary {
        Rational eval();
    }

    private record Literal(BigInteger value) implements Node {
        @Override
        public Rational eval() {
            return Rational.of(value);
        }
    }

    private record Binary(char op, Node left, Node right) implements Node {
        @Override
        public Rational eval() {
            Rational a = left.eval();
            Rational b = right.eval();
            return switch (op) {
                case '+' -> a.add(b);
                case '-' -> a.subtract(b);
                case '*' -> a.multiply(b);
                default -> a.divide(b);
            };
        }
    }

    /** Recursive descent over the grammar above; {@code pos} is the next unread character. */
    private static final class Parser {
        private final String text;
        private final List<BigInteger> literals = new ArrayList<>();
        private int pos;
        private int depth;

        Parser(String text) {
            this.text = text;
        }

        Node expression() throws SyntaxError {
            Node left = term();
            for (char op = peekOperator(); op == '+' || op == '-'; op = peekOperator()) {
                pos++;
                left = new Binary(op, left, term());
            }
            return left;
        }

        Node term() throws SyntaxError {
            Node left = factor();
            for (char op = peekOperator(); op == '*' || op == '/'; op = peekOperator()) {
                pos++;
                left = new Binary(op, left, factor());
            }
            return left;
        }

        Node factor() throws SyntaxError {
            skipSpaces();
            if (pos >= text.length()) {
                throw new SyntaxError(text, pos, "expression ends where a number or '(' is expected");
            }
            char c = text.charAt(pos);
            if (c == '(') {
                if (++depth > MAX_DEPTH) {
                    throw new SyntaxError(text, pos, "parentheses nested deeper than " + MAX_DEPTH);
                }
                pos++;
                Node inner = expression();
                depth--;
                skipSpaces();
                if (pos >= text.length() || text.charAt(pos) != ')') {
                    throw new SyntaxError(text, pos, "missing ')'");
                }
                pos++;
                return inner;
            }
            if (c >= '0' && c <= '9') {
                int start = pos;
                while (pos < text.length() && text.charAt(pos) >= '0' && text.charAt(pos) <= '9') {
                    pos++;
                }
                if (pos - start > MAX_DIGITS) {
                    throw new SyntaxError(text, start, "number longer than " + MAX_DIGITS + " digits");
                }
                BigInteger v = new BigInteger(text.substring(start, pos));
                literals.add(v);
                return new Literal(v);
            }
            throw new SyntaxError(text, pos, "unexpected '" + c + "' where a number or '(' is expected");
        }

        /** The operator at the next non-space character, normalised to ASCII, or 0. */
        char peekOperator() {
            skipSpaces();
            if (pos >= text.length()) {
                return 0;
            }
            return switch (text.charAt(pos)) {
                case '+' -> '+';
                case '-', '\u2212' -> '-';
                case '*', '\u00d7' -> '*';
                case '/', '\u00f7' -> '/';
                default -> 0;
            };
        }

        void skipSpaces() {
            while (pos < text.length() && text.charAt(pos) == ' ') {
                pos++;
            }
        }
    }

    /** {@code text = value using [literals]}, for messages. */
    @Override
    public String toString() {
        return text + " = " + value.map(Rational::toString).orElse("(division by zero)") + " using " + numbers;
    }
}
