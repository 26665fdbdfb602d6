package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.orbitrl.kernels.cpu.TestData.assertClose;

/** CPU kernels against values computed by hand (closed forms), independent of the scalar reference. */
class ClosedFormTest {
    private static CpuBackend cpu;

    @BeforeAll
    static void start() {
        cpu = new CpuBackend(2);
    }

    @AfterAll
    static void stop() {
        cpu.close();
    }

    @Test
    void softmaxOfAKnownVector() {
        // softmax(ln 1, ln 2, ln 3, ln 4, then 13 × -inf-like) = 0.1, 0.2, 0.3, 0.4, 0 ...
        float[] x = new float[17];
        Arrays.fill(x, -1000f);
        for (int i = 0; i < 4; i++) {
            x[i] = (float) Math.log(i + 1);
        }
        Tensor t = Tensor.of(x, 1, 17);
        cpu.softmax(t);
        float[] expected = new float[17];
        for (int i = 0; i < 4; i++) {
            expected[i] = (i + 1) / 10f;
        }
        assertClose("softmax(ln 1..4, -1000...)", expected, t.toFloatArray(), 0, 1e-6);
        Tensor l = Tensor.of(x, 1, 17);
        cpu.logSoftmax(l);
        float[] logs = new float[4];
        for (int i = 0; i < 4; i++) {
            logs[i] = (float) Math.log((i + 1) / 10.0);
        }
        assertClose("logSoftmax(ln 1..4)", logs, Arrays.copyOf(l.toFloatArray(), 4), 1e-6, 1e-6);
        assertClose("logSoftmax of -1000", new float[]{(float) (-1000 - Math.log(10))},
                new float[]{l.toFloatArray()[16]}, 1e-3, 0);
    }

    @Test
    void rmsNormOfAKnownVector() {
        // x = (3, 4) repeated 10 times: mean(x²) = 12.5, rms = sqrt(12.5 + eps)
        float[] x = new float[20];
        float[] w = new float[20];
        float[] expected = new float[20];
        double eps = 1e-5;
        for (int i = 0; i < 20; i++) {
            x[i] = i % 2 == 0 ? 3 : 4;
            w[i] = 0.5f + i;
            expected[i] = (float) (x[i] / Math.sqrt(12.5 + eps) * w[i]);
        }
        Tensor out = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, 20);
        cpu.rmsNorm(Tensor.of(x, 1, 20), Tensor.of(w, 20), (float) eps, out);
        assertClose("rmsNorm((3,4)×10)", expected, out.toFloatArray(), 0, 1e-6);
    }

    @Test
    void argmaxTiesGoToTheLowerIndex() {
        float[] x = new float[40];
        Arrays.fill(x, -2f);
        x[5] = 7f;
        x[21] = 7f;
        x[39] = 7f;
        Tensor out = Tensor.allocate(Arena.ofAuto(), DType.I32, 2);
        float[] two = new float[80];
        System.arraycopy(x, 0, two, 0, 40);
        Arrays.fill(two, 40, 80, 1f); // an all-equal row: index 0
        cpu.argmax(Tensor.of(two, 2, 40), out);
        assertArrayEquals(new long[]{5, 0}, out.toLongArray());
    }

    @Test
    void topkIsDescendingWithTiesInIndexOrder() {
        float[] x = {1, 9, 3, 9, 5, 3, 9, 0, -1, 5, 2, 8, 8, 7, 6, 4, 9, 1};
        Tensor v = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, 7);
        Tensor i = Tensor.allocate(Arena.ofAuto(), DType.I32, 1, 7);
        cpu.topk(Tensor.of(x, 1, x.length), 7, v, i);
        assertArrayEquals(new float[]{9, 9, 9, 9, 8, 8, 7}, v.toFloatArray());
        assertArrayEquals(new long[]{1, 3, 6, 16, 11, 12, 13}, i.toLongArray());
    }

    @Test
    void vectorExpIsAccurateAndEqualToItsScalarTwin() {
        // within 2 ulp of the correctly rounded e^x over the range softmax and silu use
        SplittableRandom rnd = new SplittableRandom(31);
        int n = VectorMath.L * 4000;
        float[] xs = new float[n];
        for (int i = 0; i < n; i++) {
            xs[i] = (float) (rnd.nextDouble() * 175 - 87);
        }
        xs[0] = 0f;
        xs[1] = -0f;
        xs[2] = Float.NEGATIVE_INFINITY;
        xs[3] = Float.NaN;
        xs[4] = 100f;
        xs[5] = -100f;
        float[] vec = new float[n];
        for (int i = 0; i < n; i += VectorMath.L) {
            VectorMath.exp(FloatVector.fromArray(VectorMath.F, xs, i)).intoArray(vec, i);
        }
        int worst = 0;
        for (int i = 0; i < n; i++) {
            float scalar = VectorMath.exp(xs[i]);
            assertEquals(Float.floatToRawIntBits(scalar), Float.floatToRawIntBits(vec[i]), "exp(" + xs[i] + "): vector lane vs scalar");
            if (i >= 6) {
                float exact = (float) Math.exp(xs[i]);
                int ulps = Math.abs(Float.floatToRawIntBits(exact) - Float.floatToRawIntBits(scalar));
                worst = Math.max(worst, ulps);
            }
        }
        assertTrue(worst <= 2, "exp is " + worst + " ulp from the correctly rounded value");
        assertEquals(1f, vec[0]);
        assertEquals(1f, vec[1]);
        assertEquals(0f, vec[2]);
        assertTrue(Float.isNaN(vec[3]));
        assertEquals(Float.POSITIVE_INFINITY, vec[4]);
        assertEquals(0f, vec[5]);
    }

    @Test
    void bf16WideningAndRoundingAreExact() {
        SplittableRandom rnd = new SplittableRandom(32);
        int n = VectorMath.L * 64;
        MemorySegment bf = Arena.ofAuto().allocate(n * 2L);
        MemorySegment back = Arena.ofAuto().allocate(n * 2L);
        float[] values = new float[n];
        for (int i = 0; i < n; i++) {
            values[i] = (float) (rnd.nextGaussian() * Math.pow(10, rnd.nextInt(-30, 30)));
        }
        values[0] = Float.NaN;
        values[1] = Float.POSITIVE_INFINITY;
        values[2] = -0f;
        values[3] = Math.nextUp(1f); // rounds to even
        for (int i = 0; i < n; i += VectorMath.L) {
            VectorMath.storeBf16(FloatVector.fromArray(VectorMath.F, values, i), bf, i * 2L);
        }
        for (int i = 0; i < n; i++) {
            short expected = Numerics.floatToBf16(values[i]);
            assertEquals(expected, bf.getAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, i), "bf16 of " + values[i]);
        }
        for (int i = 0; i < n; i += VectorMath.L) {
            FloatVector w = VectorMath.bf16(bf, i * 2L);
            for (int j = 0; j < VectorMath.L; j++) {
                short b = bf.getAtIndex(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, i + j);
                assertEquals(Float.floatToRawIntBits(Numerics.bf16ToFloat(b)), Float.floatToRawIntBits(w.lane(j)));
            }
            VectorMath.storeBf16(w, back, i * 2L);
        }
        assertEquals(-1, bf.mismatch(back), "bf16 → f32 → bf16 is the identity");
    }

    @Test
    void hsumIsAFixedButterfly() {
        // lanes 1, 2^-24, 2^-24, ...: summed left to right every 2^-24 vanishes against 1 (round to
        // even) and the sum is 1; the butterfly adds the small lanes to each other first
        int l = VectorMath.L;
        float[] lanes = new float[l];
        lanes[0] = 1f;
        for (int i = 1; i < l; i++) {
            lanes[i] = 0x1p-24f;
        }
        float expected = butterfly(lanes);
        assertEquals(expected, VectorMath.hsum(FloatVector.fromArray(VectorMath.F, lanes, 0)));
    }

    private static float butterfly(float[] v) {
        float[] a = v.clone();
        for (int step = a.length / 2; step >= 1; step /= 2) {
            float[] b = new float[a.length];
            for (int i = 0; i < a.length; i++) {
                b[i] = a[i] + a[i ^ step];
            }
            a = b;
        }
        return a[0];
    }
}
