package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.math.BigInteger;
import org.junit.jupiter.api.Test;

/** pass@k closed forms and the binomial definition; accuracy means. */
class PassAtKTest {

    @Test
    void closedForms() {
        // n=5, c=2, k=1: 1 - C(3,1)/C(5,1) = 1 - 3/5 = 0.4
        RlAssert.close("5,2,1", 0.4, PassAtK.estimate(5, 2, 1), 1e-15, 0);
        // n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7; product (1 - 2/4)(1 - 2/5) = 0.3
        RlAssert.close("5,2,2", 0.7, PassAtK.estimate(5, 2, 2), 1e-15, 0);
        // k = n with c >= 1: every draw takes all samples, one is correct
        assertEquals(1.0, PassAtK.estimate(5, 2, 5));
        assertEquals(1.0, PassAtK.estimate(5, 1, 5));
        // c = 0: never
        assertEquals(0.0, PassAtK.estimate(5, 0, 1));
        assertEquals(0.0, PassAtK.estimate(5, 0, 5));
        // c = n: always
        assertEquals(1.0, PassAtK.estimate(4, 4, 1));
    }

    @Test
    void matchesExactBinomialsForLargeN() {
        int n = 200;
        for (int c : new int[] {1, 7, 60, 150}) {
            for (int k : new int[] {1, 10, 50, 100}) {
                double exact = n - c < k ? 1.0 : 1.0 - new java.math.BigDecimal(binom(n - c, k))
                        .divide(new java.math.BigDecimal(binom(n, k)), java.math.MathContext.DECIMAL128).doubleValue();
                RlAssert.close("n=200 c=" + c + " k=" + k, exact, PassAtK.estimate(n, c, k), 1e-14, 1e-12);
            }
        }
    }

    @Test
    void meansOverProblems() {
        // problems (n, c): (5, 2), (5, 0), (4, 4): pass@1 = (0.4 + 0 + 1) / 3
        int[] n = {5, 5, 4};
        int[] c = {2, 0, 4};
        RlAssert.close("pass@1", 1.4 / 3, PassAtK.mean(n, c, 1), 1e-15, 0);
        RlAssert.close("accuracy", 1.4 / 3, Accuracy.mean(n, c), 1e-15, 0);
        RlAssert.close("greedy accuracy", 0.75, Accuracy.mean(new boolean[] {true, false, true, true}), 0, 0);
    }

    @Test
    void badCountsAreErrors() {
        assertThrows(IllegalArgumentException.class, () -> PassAtK.estimate(5, 6, 1));
        assertThrows(IllegalArgumentException.class, () -> PassAtK.estimate(5, 2, 6));
        assertThrows(IllegalArgumentException.class, () -> PassAtK.estimate(5, 2, 0));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PassAtK.mean(new int[] {5, 3}, new int[] {1, 4}, 1));
        assertEquals(true, e.getMessage().startsWith("problem 1"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Accuracy.mean(new boolean[0]));
    }

    private static BigInteger binom(int n, int k) {
        BigInteger r = BigInteger.ONE;
        for (int i = 0; i < k; i++) {
            r = r.multiply(BigInteger.valueOf(n - i)).divide(BigInteger.valueOf(i + 1));
        }
        return r;
    }
}
