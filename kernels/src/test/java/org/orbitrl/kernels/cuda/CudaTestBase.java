package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.ScalarBackend;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Base of the CUDA op tests: one {@link CudaBackend} per test class, the scalar reference beside
 * it, seeded random inputs, NaN-poisoned outputs (an element the kernel never writes fails), and
 * tolerance checks that print the first mismatches. Without a CUDA device every test is skipped
 * with the reason. Device tensors made through {@link #dev} are freed after each test, and the test
 * fails if the backend leaked device memory of category OTHER meanwhile.
 */
abstract class CudaTestBase {
    static CudaBackend gpu;
    static final ScalarBackend cpu = new ScalarBackend();

    private final List<Tensor> owned = new ArrayList<>();
    private long otherBaseline;

    @BeforeAll
    static void openBackend() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend();
    }

    @AfterAll
    static void closeBackend() {
        if (gpu != null) {
            gpu.close();
            gpu = null;
        }
    }

    @BeforeEach
    void markMemory() {
        otherBaseline = gpu.allocator().liveBytes(MemoryCategory.OTHER);
    }

    @AfterEach
    void freeAndCheckLeaks() {
        gpu.synchronize();
        for (Tensor t : owned) {
            gpu.free(t);
        }
        owned.clear();
        assertEquals(otherBaseline, gpu.allocator().liveBytes(MemoryCategory.OTHER),
                "device bytes of category OTHER leaked by the test or the backend");
    }

    /** A device copy of {@code host}, freed after the test. */
    Tensor dev(Tensor host) {
        Tensor d = gpu.toDevice(host);
        owned.add(d);
        return d;
    }

    /** A device tensor filled with NaN (f32) or -1 (integers), freed after the test. */
    Tensor poisoned(DType dtype, long... shape) {
        Tensor h = Tensor.allocate(Arena.ofAuto(), dtype, shape);
        h.fill(dtype.isFloatingPoint() ? Float.NaN : -1);
        return dev(h);
    }

    static SplittableRandom rng(long seed) {
        return new SplittableRandom(seed);
    }

    /** f32 values uniform in [-scale, scale). */
    static Tensor randn(SplittableRandom r, float scale, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        float[] v = new float[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) ((r.nextDouble() * 2 - 1) * scale);
        }
        return Tensor.of(v, shape);
    }

    static float[] bf16Round(float[] v) {
        float[] o = v.clone();
        for (int i = 0; i < o.length; i++) {
            o[i] = Numerics.roundBf16(o[i]);
        }
        return o;
    }

    /** Checks {@code |got - ref| <= atol + rtol·|ref|} elementwise; prints the first mismatches. */
    static void assertClose(String what, float[] ref, float[] got, double atol, double rtol) {
        double[] tol = new double[ref.length];
        for (int i = 0; i < ref.length; i++) {
            tol[i] = atol + rtol * Math.abs(ref[i]);
        }
        assertWithin(what, ref, got, tol);
    }

    /**
     * Checks {@code |got - ref| <= rel·max|ref| + rel·|ref|} elementwise: a tolerance relative to the
     * output's scale, for results of reduced-precision products (TF32 tensor cores). Prints the
     * largest {@code |got - ref| / (rel·max|ref|)} seen.
     */
    static void assertCloseToScale(String what, float[] ref, float[] got, double rel) {
        double scale = 0;
        for (float x : ref) {
            scale = Math.max(scale, Math.abs(x));
        }
        double worst = 0;
        for (int i = 0; i < ref.length && i < got.length; i++) {
            worst = Math.max(worst, Math.abs((double) got[i] - ref[i]) / (rel * scale));
        }
        System.out.printf("%s: max |ref| %.4g, worst |err| / (%.0e max|ref|) = %.4f%n", what, scale, rel, worst);
        assertClose(what, ref, got, rel * scale, rel);
    }

    /** A backend sharing {@code gpu}'s memory, made with the system properties {@code keyValues} (key, value, ...). */
    static CudaBackend sibling(String... keyValues) {
        String[] before = new String[keyValues.length / 2];
        for (int i = 0; i < before.length; i++) {
            before[i] = System.getProperty(keyValues[2 * i]);
            System.setProperty(keyValues[2 * i], keyValues[2 * i + 1]);
        }
        try {
            return new CudaBackend(gpu);
        } finally {
            for (int i = 0; i < before.length; i++) {
                if (before[i] == null) {
                    System.clearProperty(keyValues[2 * i]);
                } else {
                    System.setProperty(keyValues[2 * i], before[i]);
                }
            }
        }
    }

    /** Runs {@code body} with the system property {@code key} set to {@code value}, restoring the old value after. */
    static void withProperty(String key, String value, Runnable body) {
        valueWithProperty(key, value, () -> {
            body.run();
            return null;
        });
    }

    /** {@code body}'s value with the system property {@code key} set to {@code value} (null: cleared), the old value restored after. */
    static <T> T valueWithProperty(String key, String value, java.util.function.Supplier<T> body) {
        String old = System.getProperty(key);
        if (value == null) {
            System.clearProperty(key);
        } else {
            System.setProperty(key, value);
        }
        try {
            return body.get();
        } finally {
            if (old == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, old);
            }
        }
    }

    /** Checks {@code |got - ref| <= tol[i]} elementwise (NaN never passes); prints the first mismatches. */
    static void assertWithin(String what, float[] ref, float[] got, double[] tol) {
        assertEquals(ref.length, got.length, what + ": element count");
        int bad = 0;
        double worst = 0;
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < ref.length; i++) {
            double err = Math.abs((double) got[i] - ref[i]);
            boolean ok = err <= tol[i] && !Float.isNaN(got[i]) || (Float.isNaN(ref[i]) && Float.isNaN(got[i]))
                    || (Float.isInfinite(ref[i]) && ref[i] == got[i]);
            if (!ok) {
                if (bad < 10) {
                    sb.append(String.format("%n  [%d] ref %.9g got %.9g err %.3g tol %.3g", i, ref[i], got[i], err, tol[i]));
                }
                bad++;
            }
            if (!Double.isNaN(err)) {
                worst = Math.max(worst, err);
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + ref.length + " elements outside tolerance (max |err| " + worst + ")" + sb);
        }
    }

    static void assertExact(String what, long[] ref, long[] got) {
        assertEquals(ref.length, got.length, what + ": element count");
        StringBuilder sb = new StringBuilder();
        int bad = 0;
        for (int i = 0; i < ref.length; i++) {
            if (ref[i] != got[i]) {
                if (bad < 10) {
                    sb.append(String.format("%n  [%d] ref %d got %d", i, ref[i], got[i]));
                }
                bad++;
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + ref.length + " elements differ" + sb);
        }
    }

    /** f32 results equal bit for bit (raw bits: NaN payloads and the sign of zero count). */
    static void assertBitsEqual(String what, float[] ref, float[] got) {
        long[] a = new long[ref.length];
        long[] b = new long[got.length];
        for (int i = 0; i < a.length; i++) {
            a[i] = Float.floatToRawIntBits(ref[i]);
        }
        for (int i = 0; i < b.length; i++) {
            b[i] = Float.floatToRawIntBits(got[i]);
        }
        assertExact(what, a, b);
    }

    /** Σ_k |x[i,k]·w[j,k]| for each output [i, j]: the scale of a dot product's rounding error. */
    static double[] absDot(float[] x, float[] w, int m, int n, int k) {
        double[] out = new double[m * n];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    s += Math.abs((double) x[i * k + p] * w[j * k + p]);
                }
                out[i * n + j] = s;
            }
        }
        return out;
    }
}
