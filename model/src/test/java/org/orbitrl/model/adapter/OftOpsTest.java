package org.orbitrl.model.adapter;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.OftOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.adapter.internal.OftMath;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The backend's OFT ops ({@link OftOps}, through the CPU backend) against {@link OftMath}, the
 * block algebra the PEFT fixture tests check: seeded random parameters, several block sizes and
 * stored counts (one stored block is the block_share layout), the exact Cayley map and the
 * Cayley-Neumann series of 2 to 7 terms. Rotations (written transposed) within
 * 1e-6 + 1e-6·|ref|; gradients, accumulated onto a random gradient buffer, within 1e-6 + 1e-5·|ref|;
 * the coft projection equal bit for bit, with some rows projected and some not; the rotation of
 * activations (x·R and x·Rᵀ per slice) within 1e-6·Σ|x·r| + 1e-7 of the double block product.
 */
class OftOpsTest {
    private final Backend cpu = Backends.cpu();

    @AfterEach
    void closeBackend() {
        cpu.close();
    }

    private static float[] random(SplittableRandom r, int n, double scale) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) ((r.nextDouble() * 2 - 1) * scale);
        }
        return v;
    }

    private static void assertClose(String what, float[] ref, float[] got, double atol, double rtol) {
        assertEquals(ref.length, got.length, what + ": element count");
        StringBuilder sb = new StringBuilder();
        int bad = 0;
        for (int i = 0; i < ref.length; i++) {
            double err = Math.abs((double) got[i] - ref[i]);
            if (!(err <= atol + rtol * Math.abs(ref[i]))) {
                if (bad++ < 8) {
                    sb.append(String.format("%n  [%d] ref %.9g got %.9g", i, ref[i], got[i]));
                }
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + ref.length + " outside " + atol + " + " + rtol + "·|ref|" + sb);
        }
    }

    @ParameterizedTest
    @CsvSource({"2,1,0", "2,3,5", "5,1,0", "5,4,2", "8,3,0", "8,3,3", "8,1,5", "16,2,0", "16,2,4", "16,1,7", "32,2,0", "32,2,5"})
    void rotationAndGradientMatchOftMath(int b, int stored, int terms) {
        SplittableRandom r = new SplittableRandom(1000L * b + 10L * stored + terms);
        int n = b * (b - 1) / 2;
        float[] v = random(r, stored * n, 0.4 / Math.sqrt(b));
        float[] g = random(r, stored * b * b, 1.0);
        float[] g0 = random(r, stored * n, 0.5);

        Tensor rt = Tensor.allocate(Arena.ofAuto(), DType.F32, stored, b, b);
        rt.fill(Float.NaN);
        cpu.oftRotation(Tensor.of(v, stored, n), terms, rt);
        float[] want = new float[stored * b * b];
        float[] wantGrad = g0.clone();
        for (int j = 0; j < stored; j++) {
            double[] q = OftMath.skew(v, j * n, b);
            double[] rj = terms == 0 ? OftMath.cayley(q, b) : OftMath.neumann(q, b, terms);
            for (int k = 0; k < b; k++) {
                for (int c = 0; c < b; c++) {
                    want[j * b * b + c * b + k] = (float) rj[k * b + c];
                }
            }
            double[] gj = new double[b * b];
            for (int i = 0; i < b * b; i++) {
                gj[i] = g[j * b * b + i];
            }
            double[] dq = terms == 0 ? OftMath.cayleyBackward(q, gj, b) : OftMath.neumannBackward(q, gj, b, terms);
            OftMath.packGradient(dq, b, wantGrad, j * n);
        }
        String what = "b=" + b + " stored=" + stored + " terms=" + terms;
        assertClose(what + " rotationᵀ", want, rt.toFloatArray(), 1e-6, 1e-6);

        Tensor grad = Tensor.of(g0.clone(), stored, n);
        cpu.oftRotationBackward(Tensor.of(v, stored, n), Tensor.of(g, stored, b, b), terms, grad);
        assertClose(what + " gradient", wantGrad, grad.toFloatArray(), 1e-6, 1e-5);
    }

    @ParameterizedTest
    @CsvSource({"4,3,1,false", "4,3,1,true", "8,5,6,false", "8,5,6,true", "16,2,3,true"})
    void rotationOfActivationsIsTheBlockProduct(int b, int rows, int stored, boolean transposed) {
        SplittableRandom r = new SplittableRandom(31L * b + rows + stored);
        int blocks = stored == 1 ? 4 : stored;
        int in = blocks * b;
        int n = b * (b - 1) / 2;
        float[] v = random(r, stored * n, 0.3);
        float[] x = random(r, rows * in, 1.0);
        Tensor rt = Tensor.allocate(Arena.ofAuto(), DType.F32, stored, b, b);
        cpu.oftRotation(Tensor.of(v, stored, n), 0, rt);
        Tensor y = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, in);
        y.fill(Float.NaN);
        cpu.oftRotate(Tensor.of(x, rows, in), rt, transposed, y);
        float[] got = y.toFloatArray();
        for (int m = 0; m < rows; m++) {
            for (int i = 0; i < blocks; i++) {
                double[] rj = OftMath.cayley(OftMath.skew(v, (stored == 1 ? 0 : i) * n, b), b);   // R_j [b, b]
                for (int c = 0; c < b; c++) {
                    double want = 0;
                    double scale = 0;
                    for (int k = 0; k < b; k++) {
                        double rkc = transposed ? rj[c * b + k] : rj[k * b + c];
                        want += x[m * in + i * b + k] * rkc;
                        scale += Math.abs(x[m * in + i * b + k] * rkc);
                    }
                    int at = m * in + i * b + c;
                    assertTrue(Math.abs(got[at] - want) <= 1e-6 * scale + 1e-7,
                            "row " + m + " slice " + i + " column " + c + ": " + got[at] + " vs " + want);
                }
            }
        }
    }

    @Test
    void neumannCoefficientsAreOftMaths() {
        for (int terms = 1; terms <= 9; terms++) {
            double[] c = OftMath.neumannCoefficients(terms);
            assertEquals(c.length - 1, OftOps.neumannDegree(terms), "degree for " + terms + " terms");
            for (int k = 0; k < c.length + 2; k++) {
                assertEquals(k < c.length ? c[k] : 0, OftOps.neumannCoefficient(k, terms), "c_" + k + " for " + terms + " terms");
            }
        }
    }

    @Test
    void coftProjectionIsOftMaths() {
        SplittableRandom r = new SplittableRandom(77);
        int stored = 6;
        int n = 28;
        float[] v = random(r, stored * n, 0.1);
        for (int k = 0; k < n; k++) {
            v[2 * n + k] *= 1e-3f;   // rows 2 and 4 inside the ball
            v[4 * n + k] *= 1e-3f;
        }
        double radius = 0.05;
        float[] want = v.clone();
        int projected = 0;
        for (int j = 0; j < stored; j++) {
            projected += OftMath.project(want, j * n, n, radius) ? 1 : 0;
        }
        assertEquals(4, projected, "rows projected by OftMath");
        Tensor p = Tensor.of(v.clone(), stored, n);
        cpu.oftProject(p, radius);
        assertArrayEquals(want, p.toFloatArray(), "projected parameters");
        for (int k = 0; k < n; k++) {
            assertEquals(v[2 * n + k], p.toFloatArray()[2 * n + k], "row inside the ball is untouched");
        }
    }

    @Test
    void badShapesAreRefusedWithTheirNames() {
        Tensor p = Tensor.of(new float[10], 2, 5);   // 5 is no b(b−1)/2
        var e = assertThrows(IllegalArgumentException.class,
                () -> cpu.oftRotation(p, 0, Tensor.allocate(Arena.ofAuto(), DType.F32, 2, 3, 3)));
        assertTrue(e.getMessage().contains("5 values"), e.getMessage());
        Tensor q = Tensor.of(new float[6], 2, 3);    // b = 3
        var e2 = assertThrows(IllegalArgumentException.class,
                () -> cpu.oftRotation(q, 5, Tensor.allocate(Arena.ofAuto(), DType.F32, 2, 4, 4)));
        assertTrue(e2.getMessage().contains("[2, 3, 3]"), e2.getMessage());
    }
}
