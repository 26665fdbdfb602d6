package org.orbitrl.kernels.cpu;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.fail;

/** Seeded inputs and tolerance checks shared by the CPU backend tests. */
final class TestData {
    private TestData() {
    }

    /** Uniform values in [-scale, scale), never all zero. */
    static Tensor random(SplittableRandom rnd, DType dtype, float scale, long... shape) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), dtype, shape);
        long n = t.numel();
        Tensor flat = t.reshape(n);
        for (long i = 0; i < n; i++) {
            flat.setFloat((float) ((rnd.nextDouble() * 2 - 1) * scale), i);
        }
        return t;
    }

    static Tensor randomF32(SplittableRandom rnd, long... shape) {
        return random(rnd, DType.F32, 1f, shape);
    }

    static Tensor copy(Tensor t) {
        Tensor c = Tensor.allocate(Arena.ofAuto(), t.dtype(), t.shape());
        c.copyFrom(t);
        return c;
    }

    /**
     * Fails unless {@code |got - ref| <= atol + rtol·|ref|} everywhere (NaN must match NaN); the
     * message names the op, the tolerance and the first mismatches with their flat indices.
     */
    static void assertClose(String what, float[] ref, float[] got, double atol, double rtol) {
        if (ref.length != got.length) {
            fail(what + ": " + got.length + " values, expected " + ref.length);
        }
        StringBuilder first = new StringBuilder();
        int bad = 0;
        double worst = 0;
        for (int i = 0; i < ref.length; i++) {
            double r = ref[i];
            double g = got[i];
            boolean ok = Double.isNaN(r) ? Double.isNaN(g) : (r == g || Math.abs(g - r) <= atol + rtol * Math.abs(r));
            if (!ok) {
                if (bad < 5) {
                    first.append(String.format("%n  [%d] expected %.9g got %.9g (diff %.3g)", i, r, g, Math.abs(g - r)));
                }
                bad++;
            }
            if (!Double.isNaN(r)) {
                worst = Math.max(worst, Math.abs(g - r) / (atol + rtol * Math.abs(r)));
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + ref.length + " values outside atol " + atol + " + rtol " + rtol
                    + "·|ref| (worst at " + String.format("%.2f", worst) + "× the tolerance); first:" + first);
        }
    }

    /** Fails unless the two arrays hold the same bits, naming the first differences. */
    static void assertBitwise(String what, float[] a, float[] b) {
        if (a.length != b.length) {
            fail(what + ": lengths " + a.length + " and " + b.length);
        }
        StringBuilder first = new StringBuilder();
        int bad = 0;
        for (int i = 0; i < a.length; i++) {
            if (Float.floatToRawIntBits(a[i]) != Float.floatToRawIntBits(b[i])) {
                if (bad < 5) {
                    first.append(String.format("%n  [%d] %.9g vs %.9g", i, a[i], b[i]));
                }
                bad++;
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + a.length + " values differ in their bits; first:" + first);
        }
    }
}
