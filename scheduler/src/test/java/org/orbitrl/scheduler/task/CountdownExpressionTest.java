package org.orbitrl.scheduler.task;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigInteger;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;

/** Countdown's evaluator: precedence, exact fractions, division by zero, syntax, number usage. */
class CountdownExpressionTest {

    @Test
    void precedenceAndAssociativity() {
        value("2+3*4", 14);
        value("(2+3)*4", 20);
        value("2*3+4*5", 26);
        value("8-3-2", 3); // (8-3)-2, not 8-(3-2)
        value("8-(3-2)", 7);
        value("8/4/2", 1); // (8/4)/2
        value("8/(4/2)", 4);
        value("2*(3+4)*5", 70);
        value("((((7))))", 7);
        value(" 10 - 2 * 3 ", 4);
        value("10\u22122\u00d73\u00f71", 4); // − × ÷
        value("100-99*1", 1);
    }

    @Test
    void exactFractions() {
        assertEquals(Rational.of(5, 3), eval("1+2/3"));
        assertEquals(Rational.of(1, 3), eval("1/3"));
        assertEquals(Rational.of(-1, 4), eval("1/2-3/4"));
        value("1/3+1/3+1/3", 1); // 0.999... in binary floating point
        value("8/(3-8/3)", 24);
        value("6/(1-3/4)", 24);
        value("(1/7)*7*5", 5);
        assertEquals(Rational.of(BigInteger.TEN.pow(40)), eval("100000000000000000000*100000000000000000000"));
    }

    @Test
    void divisionByZeroIsAValueNotAnError() throws Exception {
        for (String s : new String[] {"5/0", "5/(3-3)", "1/(2/3-2/3)", "(5/0)*0", "0/0"}) {
            CountdownExpression e = CountdownExpression.parse(s);
            assertEquals(Optional.empty(), e.value(), s);
        }
        assertEquals(Rational.ZERO, eval("0/5"));
        assertEquals(List.of(big(5), big(3), big(3)), CountdownExpression.parse("5/(3-3)").numbers());
    }

    @Test
    void syntaxErrors() {
        String[] bad = {"", " ", "(", ")", "()", "2+", "+2", "-2+3", "2 3", "2.5", "2^3", "2**3", "(2+3", "2+3)",
            "1e3", "2x3", "2=2", "2+(3*)", "\u00bd"};
        for (String s : bad) {
            assertThrows(CountdownExpression.SyntaxError.class, () -> CountdownExpression.parse(s), "\"" + s + "\"");
        }
        CountdownExpression.SyntaxError e = assertThrows(CountdownExpression.SyntaxError.class,
                () -> CountdownExpression.parse("2+*3"));
        assertEquals(2, e.position(), e.getMessage());
        assertTrue(e.getMessage().contains("'*'"), e.getMessage());
        assertThrows(CountdownExpression.SyntaxError.class, () -> CountdownExpression.parse("(".repeat(65) + "1"
                + ")".repeat(65)));
        assertThrows(CountdownExpression.SyntaxError.class, () -> CountdownExpression.parse("(".repeat(100_000)));
        value("(".repeat(64) + "1" + ")".repeat(64), 1);
    }

    @Test
    void numberUsage() throws Exception {
        List<Long> given = List.of(2L, 3L, 7L);
        assertTrue(CountdownExpression.parse("2*3+7").usesAtMostOnce(given));
        assertTrue(CountdownExpression.parse("7-2").usesAtMostOnce(given), "a subset is allowed");
        assertFalse(CountdownExpression.parse("2*2").usesAtMostOnce(given), "2 used twice, given once");
        assertFalse(CountdownExpression.parse("2*4").usesAtMostOnce(given), "4 not given");
        assertFalse(CountdownExpression.parse("23+7").usesAtMostOnce(given), "23 is not 2 and 3");
        assertTrue(CountdownExpression.parse("2*2").usesAtMostOnce(List.of(2L, 2L, 3L)), "2 given twice");
        assertFalse(CountdownExpression.parse("2*2*2").usesAtMostOnce(List.of(2L, 2L, 3L)), "2 used thrice");
        assertTrue(CountdownExpression.parse("02+7").usesAtMostOnce(given), "02 is the number 2");
    }

    private static void value(String s, long expected) {
        assertEquals(Rational.of(expected), eval(s), s);
    }

    private static Rational eval(String s) {
        try {
            return CountdownExpression.parse(s).value().orElseThrow();
        } catch (CountdownExpression.SyntaxError e) {
            throw new AssertionError(e);
        }
    }

    private static BigInteger big(long v) {
        return BigInteger.valueOf(v);
    }
}
