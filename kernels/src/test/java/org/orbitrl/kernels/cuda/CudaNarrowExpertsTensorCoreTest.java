package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;
import java.util.function.Supplier;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/**
 * The tensor-core (3xTF32) expert products with a narrow side ({@code moe_lora_tc.cu} through
 * {@link CudaNarrowExperts}) and the f32 kernels ({@code -Dorbit.cuda.moeLora=f32}) against sums in
 * double precision computed here from the same f32 inputs, over ragged experts (0, 1, 17, 300 and 129
 * rows: none, one, part of a 128-row tile, several tiles), rank 32 against widths 32, 768, 2048 and
 * 770 (770 is not a multiple of 4: the products with a 770-wide input and the gradients with a 770-wide
 * side take the f32 kernels, a 770-wide output the tensor-core kernel's unvectorized stores), plain
 * and accumulating products ({@code y += s·product}, s 0.625 and -1.5) and both weight-gradient
 * orientations.
 * <p>Tolerances, per output, relative to S = Σ|a·b| over its sum (the scale of a dot product's
 * rounding error): tensor cores 1e-7 + 1e-5·S (+ 1e-5·|y₀| when accumulating). 3xTF32 represents each
 * operand as hi + lo to 2^-22 relative and drops lo·lo (below 2^-22·|a·b|): at most about 3·2^-22 ≈
 * 7e-7 of S from the operands, plus the f32 rounding of the accumulator once an mma (a few 2^-24·√n
 * of S for n = K/8 steps): well below 1e-5, while plain tf32 products (operands rounded to 2^-11)
 * miss by about 1e-4 of S, which this tolerance rejects. f32 kernels 1e-7 + 3e-5·S (the bound of their tests), and the two within the sum
 * of both. Repeated calls give the same bits.
 */
class CudaNarrowExpertsTensorCoreTest extends CudaTestBase {
    private static final int[] COUNTS = {17, 0, 1, 300, 129, 0};
    private static final int E = COUNTS.length;
    private static final int RANK = 32;
    private static final int[] WIDTHS = {32, 768, 2048, 770};
    private static final double TC = 1e-5;
    private static final double F32 = 3e-5;
    private static final double ATOL = 1e-7;

    @Test
    void productsMatchDoubleSumsAndTheF32Kernels() {
        SplittableRandom r = rng(911);
        int p = offsets()[E];
        for (int width : WIDTHS) {
            Host a = Host.random(this, r, RANK, width);   // A_e [r, width]
            Host b = Host.random(this, r, width, RANK);   // B_e [width, r]
            Tensor x = randn(r, 1f, p, width);
            Tensor xa = randn(r, 1f, p, RANK);
            product("x·A_eᵀ width " + width, x, a, false, 0f);
            product("dy·B_e width " + width, x, b, true, 0f);
            product("xa·B_eᵀ width " + width, xa, b, false, 0f);
            product("(dy·B)·A_e width " + width, xa, a, true, 0f);
        }
    }

    @Test
    void accumulatingProductsMatchDoubleSumsAndTheF32Kernels() {
        SplittableRandom r = rng(912);
        int p = offsets()[E];
        for (int width : new int[]{768, 2048, 770}) {
            Host a = Host.random(this, r, RANK, width);
            Host b = Host.random(this, r, width, RANK);
            Tensor xa = randn(r, 1f, p, RANK);
            for (float s : new float[]{0.625f, -1.5f}) {
                product("y += " + s + "·xa·B_eᵀ width " + width, xa, b, false, s);
                product("dx += " + s + "·(dy·B)·A_e width " + width, xa, a, true, s);
            }
        }
    }

    /**
     * Two LoRAs' A products of the same rows in one call ({@code moeExpertMatmulShared}, the gate's and the up's: one
     * launch of the tensor-core kernel for both sets, each row tile streamed once) against a call each: the same bits,
     * for inputs 2048 and 768 wide, and 770 (the f32 kernels, a launch a set).
     */
    @Test
    void twoSetsOfTheSameRowsEqualACallEach() {
        SplittableRandom r = rng(916);
        int p = offsets()[E];
        for (int width : new int[]{2048, 768, 770}) {
            Host a1 = Host.random(this, r, RANK, width);
            Host a2 = Host.random(this, r, RANK, width);
            Tensor x = dev(randn(r, 1f, p, width));
            Tensor[] shared = {poisoned(DType.F32, p, RANK), poisoned(DType.F32, p, RANK)};
            gpu.moeExpertMatmulShared(x, new ExpertWeights[]{a1.device, a2.device}, offsets(), shared, 0);
            Tensor[] each = {poisoned(DType.F32, p, RANK), poisoned(DType.F32, p, RANK)};
            gpu.moeExpertMatmul(x, a1.device, offsets(), each[0], 0);
            gpu.moeExpertMatmul(x, a2.device, offsets(), each[1], 0);
            for (int i = 0; i < 2; i++) {
                assertArrayEquals(gpu.toHost(each[i]).toFloatArray(), gpu.toHost(shared[i]).toFloatArray(),
                        "x·A_eᵀ of set " + i + ", width " + width + ": shared against its own call");
            }
        }
    }

    @Test
    void weightGradientsMatchDoubleSumsAndTheF32Kernels() {
        SplittableRandom r = rng(913);
        int[] offsets = offsets();
        int p = offsets[E];
        float scale = 0.625f;
        for (int width : WIDTHS) {
            // dA_e [r, width] += s·(dy·B)_eᵀ·x_e (narrow dys); dB_e [width, r] += s·dy_eᵀ·xa_e (narrow xs)
            for (boolean narrowDys : new boolean[]{true, false}) {
                int n = narrowDys ? RANK : width;
                int k = narrowDys ? width : RANK;
                String what = "moeExpertWeightGrad [" + n + ", " + k + "]";
                float[] dv = randn(r, 1f, p, n).toFloatArray();
                float[] xv = randn(r, 1f, p, k).toFloatArray();
                Tensor dys = dev(Tensor.of(dv, p, n));
                Tensor xs = dev(Tensor.of(xv, p, k));
                float[][] start = new float[E][];
                for (int e = 0; e < E; e++) {
                    start[e] = COUNTS[e] > 0 ? randn(r, 1f, n, k).toFloatArray() : null;
                }
                Supplier<float[][]> run = () -> {
                    Tensor[] g = new Tensor[E];   // experts without rows: no gradient (null is allowed there)
                    for (int e = 0; e < E; e++) {
                        g[e] = start[e] == null ? null : dev(Tensor.of(start[e], n, k));
                    }
                    gpu.moeExpertWeightGrad(dys, xs, offsets, scale, g);
                    float[][] out = new float[E][];
                    for (int e = 0; e < E; e++) {
                        out[e] = g[e] == null ? null : gpu.toHost(g[e]).toFloatArray();
                    }
                    return out;
                };
                float[][] tc = run.get();
                float[][] again = run.get();
                float[][] f32 = new float[E][];
                withProperty(CudaNarrowExperts.KERNELS_PROPERTY, "f32", () -> System.arraycopy(run.get(), 0, f32, 0, E));
                for (int e = 0; e < E; e++) {
                    if (start[e] == null) {
                        continue;
                    }
                    double[] ref = new double[n * k];
                    double[] abs = new double[n * k];
                    for (int i = 0; i < n; i++) {
                        for (int j = 0; j < k; j++) {
                            double sum = 0;
                            double sa = 0;
                            for (int row = offsets[e]; row < offsets[e + 1]; row++) {
                                double t = (double) dv[row * n + i] * xv[row * k + j];
                                sum += t;
                                sa += Math.abs(t);
                            }
                            ref[i * k + j] = start[e][i * k + j] + scale * sum;
                            abs[i * k + j] = Math.abs(start[e][i * k + j]) + scale * sa;
                        }
                    }
                    String at = what + " expert " + e + " (" + COUNTS[e] + " rows)";
                    compare(at, ref, abs, tc[e], f32[e]);
                    assertArrayEquals(tc[e], again[e], at + " repeated: the same bits");
                }
            }
        }
    }

    /**
     * One product (scale 0: out = in·W'ᵀ; else out = y₀ + scale·in·W'ᵀ, y₀ random) through the
     * tensor-core and the f32 kernels, against the double sums.
     */
    private void product(String what, Tensor in, Host w, boolean transposed, float scale) {
        int[] offsets = offsets();
        int p = offsets[E];
        int inCols = transposed ? w.rows : w.cols;
        int outCols = transposed ? w.cols : w.rows;
        float[] y0 = scale == 0f ? null : randn(rng(what.hashCode()), 1f, p, outCols).toFloatArray();
        Tensor din = dev(in);
        Supplier<float[]> run = () -> {
            Tensor out = y0 == null ? poisoned(DType.F32, p, outCols) : dev(Tensor.of(y0, p, outCols));
            if (y0 != null) {
                gpu.moeExpertMatmulAccumulate(din, w.device, offsets, scale, out, transposed);
            } else if (transposed) {
                gpu.moeExpertMatmulTransposed(din, w.device, offsets, out, 0);
            } else {
                gpu.moeExpertMatmul(din, w.device, offsets, out, 0);
            }
            return gpu.toHost(out).toFloatArray();
        };
        float[] tc = run.get();
        float[] again = run.get();
        float[][] f32 = new float[1][];
        withProperty(CudaNarrowExperts.KERNELS_PROPERTY, "f32", () -> f32[0] = run.get());
        // ref[i, o] = y₀ + scale·Σ_c in[i, c]·W'(o, c); W'(o, c) = W_e[o][c] (forward) or W_e[c][o] (transposed)
        float[] x = in.toFloatArray();
        double[] ref = new double[p * outCols];
        double[] abs = new double[p * outCols];
        double s = y0 == null ? 1.0 : scale;
        for (int e = 0; e < E; e++) {
            float[] we = w.values[e];
            for (int i = offsets[e]; i < offsets[e + 1]; i++) {
                for (int o = 0; o < outCols; o++) {
                    double sum = 0;
                    double sa = 0;
                    for (int c = 0; c < inCols; c++) {
                        double t = (double) x[i * inCols + c] * (transposed ? we[c * outCols + o] : we[o * inCols + c]);
                        sum += t;
                        sa += Math.abs(t);
                    }
                    double start = y0 == null ? 0 : y0[i * outCols + o];
                    ref[i * outCols + o] = start + s * sum;
                    abs[i * outCols + o] = Math.abs(start) + Math.abs(s) * sa;
                }
            }
        }
        compare(what, ref, abs, tc, f32[0]);
        assertArrayEquals(tc, again, what + " repeated: the same bits");
    }

    /** tc within 1e-7 + 1e-5·abs of ref, f32 within 1e-7 + 3e-5·abs, and the two within the sum; prints the worst ratios. */
    private static void compare(String what, double[] ref, double[] abs, float[] tc, float[] f32) {
        float[] rf = new float[ref.length];
        double[] tolTc = new double[ref.length];
        double[] tolF32 = new double[ref.length];
        double[] tolBoth = new double[ref.length];
        double worstTc = 0;
        double worstF32 = 0;
        for (int i = 0; i < ref.length; i++) {
            rf[i] = (float) ref[i];
            tolTc[i] = ATOL + TC * abs[i];
            tolF32[i] = ATOL + F32 * abs[i];
            tolBoth[i] = tolTc[i] + tolF32[i];
            double scale = Math.max(abs[i], Double.MIN_NORMAL);
            worstTc = Math.max(worstTc, Math.abs(tc[i] - ref[i]) / scale);
            worstF32 = Math.max(worstF32, Math.abs(f32[i] - ref[i]) / scale);
        }
        System.out.printf("%s: worst |err| / Σ|a·b|: tensor cores %.3g, f32 %.3g%n", what, worstTc, worstF32);
        assertWithin(what + " (tensor cores)", rf, tc, tolTc);
        assertWithin(what + " (f32 kernels)", rf, f32, tolF32);
        assertWithin(what + " (tensor cores against the f32 kernels)", f32, tc, tolBoth);
    }

    private static int[] offsets() {
        int[] off = new int[E + 1];
        for (int e = 0; e < E; e++) {
            off[e + 1] = off[e] + COUNTS[e];
        }
        return off;
    }

    /** One projection's f32 experts [rows, cols] on the device, with their values. */
    private record Host(int rows, int cols, ExpertWeights device, float[][] values) {
        static Host random(CudaNarrowExpertsTensorCoreTest t, SplittableRandom r, int rows, int cols) {
            Tensor[] device = new Tensor[E];
            float[][] values = new float[E][];
            for (int e = 0; e < E; e++) {
                Tensor h = randn(r, 0.1f, rows, cols);
                device[e] = t.dev(h);
                values[e] = h.toFloatArray();
            }
            return new Host(rows, cols, new ExpertWeights(rows, cols, device, new QuantizedTensor[E]), values);
        }
    }
}
