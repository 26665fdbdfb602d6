package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.fail;

import java.util.SplittableRandom;

/** Tolerance checks that print the first mismatches with their indices, and seeded batches. */
final class RlAssert {
    private RlAssert() {
    }

    /** Fails unless {@code |actual − expected| <= atol + rtol·|expected|} for every element. */
    static void close(String what, double[] expected, double[] actual, double atol, double rtol) {
        if (expected.length != actual.length) {
            fail(what + ": length " + actual.length + ", expected " + expected.length);
        }
        StringBuilder sb = new StringBuilder();
        int bad = 0;
        for (int i = 0; i < expected.length; i++) {
            double tol = atol + rtol * Math.abs(expected[i]);
            if (!(Math.abs(actual[i] - expected[i]) <= tol)) {
                if (bad++ < 8) {
                    sb.append(String.format("  [%d] expected %.10g got %.10g (|diff| %.3g > tol %.3g)%n", i, expected[i],
                            actual[i], Math.abs(actual[i] - expected[i]), tol));
                }
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + expected.length + " outside atol " + atol + " + rtol " + rtol
                    + "·|ref|, first:\n" + sb);
        }
    }

    static void close(String what, double[] expected, float[] actual, double atol, double rtol) {
        close(what, expected, toDouble(actual), atol, rtol);
    }

    static void close(String what, double expected, double actual, double atol, double rtol) {
        close(what, new double[] {expected}, new double[] {actual}, atol, rtol);
    }

    /** Fails unless the two arrays are identical bit for bit. */
    static void bitwise(String what, float[] expected, float[] actual) {
        if (expected.length != actual.length) {
            fail(what + ": length " + actual.length + ", expected " + expected.length);
        }
        StringBuilder sb = new StringBuilder();
        int bad = 0;
        for (int i = 0; i < expected.length; i++) {
            if (Float.floatToRawIntBits(expected[i]) != Float.floatToRawIntBits(actual[i])) {
                if (bad++ < 8) {
                    sb.append(String.format("  [%d] expected %s got %s%n", i, expected[i], actual[i]));
                }
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + expected.length + " differ bitwise, first:\n" + sb);
        }
    }

    static double[] toDouble(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            d[i] = a[i];
        }
        return d;
    }

    /**
     * A seeded random batch: ragged masks (each sequence 1..tokens masked tokens from position 0,
     * sequence 1 fully masked out when {@code withEmpty}), log-probs in [-3, -0.1], old log-probs
     * offset by a per-sequence shift in ±{@code drift} plus per-token noise in ±{@code drift/2}, one advantage per sequence, importance weights in [0.5, 1.5] and
     * reference log-probs within ±0.5. Padding holds NaN, which must never be read.
     */
    static PolicyBatch randomBatch(long seed, int sequences, int tokens, double drift, boolean withEmpty) {
        SplittableRandom r = new SplittableRandom(seed);
        int n = sequences * tokens;
        float[] logp = new float[n];
        float[] old = new float[n];
        float[] adv = new float[n];
        float[] mask = new float[n];
        float[] w = new float[n];
        float[] ref = new float[n];
        java.util.Arrays.fill(logp, Float.NaN);
        java.util.Arrays.fill(old, Float.NaN);
        java.util.Arrays.fill(ref, Float.NaN);
        java.util.Arrays.fill(w, Float.NaN);
        for (int s = 0; s < sequences; s++) {
            int len = withEmpty && s == 1 ? 0 : 1 + r.nextInt(tokens);
            float a = (float) (r.nextDouble(-2, 2));
            double bias = r.nextDouble(-drift, drift);
            for (int t = 0; t < len; t++) {
                int i = s * tokens + t;
                mask[i] = 1;
                logp[i] = (float) r.nextDouble(-3, -0.1);
                old[i] = (float) (logp[i] + bias + r.nextDouble(-drift, drift) / 2);
                adv[i] = a;
                w[i] = (float) r.nextDouble(0.5, 1.5);
                ref[i] = (float) (logp[i] + r.nextDouble(-0.5, 0.5));
            }
        }
        return new PolicyBatch(sequences, tokens, logp, old, adv, mask, w, ref);
    }
}
