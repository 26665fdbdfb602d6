package org.orbitrl.kernels.quant;

import static org.junit.jupiter.api.Assertions.fail;

/** Element-wise comparison that reports the first mismatches with their indices. */
final class Mismatches {
    private Mismatches() {
    }

    private static final int SHOW = 8;

    /** Fails unless {@code |actual[i] − expected[i]| ≤ bound[i]} for every i. */
    static void within(String what, float[] expected, float[] actual, float[] bound) {
        StringBuilder sb = new StringBuilder();
        int bad = 0;
        for (int i = 0; i < expected.length; i++) {
            double d = Math.abs((double) actual[i] - expected[i]);
            if (!(d <= bound[i])) {
                if (bad++ < SHOW) {
                    sb.append(String.format("%n  [%d] expected %s got %s (|diff| %.3g > bound %.3g)",
                            i, expected[i], actual[i], d, bound[i]));
                }
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + expected.length + " elements outside the bound; first:" + sb);
        }
    }

    /** Fails unless {@code |actual − expected| ≤ atol + rtol·|expected|} element-wise. */
    static void close(String what, float[] expected, float[] actual, double atol, double rtol) {
        float[] bound = new float[expected.length];
        for (int i = 0; i < bound.length; i++) {
            bound[i] = (float) (atol + rtol * Math.abs(expected[i]));
        }
        within(what + " (atol " + atol + ", rtol " + rtol + ")", expected, actual, bound);
    }

    /** Fails unless the arrays are identical bit for bit. */
    static void bitwise(String what, float[] expected, float[] actual) {
        if (expected.length != actual.length) {
            fail(what + ": length " + actual.length + ", expected " + expected.length);
        }
        StringBuilder sb = new StringBuilder();
        int bad = 0;
        for (int i = 0; i < expected.length; i++) {
            if (Float.floatToRawIntBits(expected[i]) != Float.floatToRawIntBits(actual[i])) {
                if (bad++ < SHOW) {
                    sb.append(String.format("%n  [%d] expected %s (0x%08x) got %s (0x%08x)", i, expected[i],
                            Float.floatToRawIntBits(expected[i]), actual[i], Float.floatToRawIntBits(actual[i])));
                }
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + expected.length + " elements differ in bits; first:" + sb);
        }
    }
}
