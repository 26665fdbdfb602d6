package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MoeHostOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The expert products with a narrow side (the experts' LoRA factors, {@link CudaNarrowExperts}: the
 * tensor-core kernels of {@code moe_lora_tc.cu} by default, those of {@code moe_lora.cu} with
 * {@code -Dorbit.cuda.moeLora=f32}) against the host operations of the scalar backend ({@link MoeHostOps}), for
 * ranks 8 and 32 and widths 768 and 2048, over a ragged grouping (experts without rows, a single row,
 * counts off the 128-row tiles): x·Aᵀ (narrow output), xa·Bᵀ (narrow inner side), their transposed
 * forms dy·B and (dy·B)·A, the accumulating forms ({@code y += s·product}) and both orientations of the
 * weight gradients. f32 throughout; tolerances per output against the sum of the absolute products
 * (the scale of a dot product's rounding error): products within 1e-6 + 3e-5·Σ|x·w|, accumulations
 * within 1e-6 + 3e-5·(|y₀| + |s|·Σ|x·w|), gradients within 1e-6 + 3e-5·(|g₀| + |s|·Σ|dy·x|). Repeated
 * calls give the same bits (no atomics).
 */
class CudaNarrowExpertsTest extends CudaTestBase {
    /** Rows a expert: none, one, counts off the tile size, more than two tiles. */
    private static final int[] COUNTS = {0, 1, 130, 0, 257, 37};
    private static final int E = COUNTS.length;
    private static final float SCALE = 0.625f;

    @Test
    void productsMatchTheHostForRanksAndWidths() {
        SplittableRandom r = rng(901);
        int[] offsets = offsets();
        int p = offsets[E];
        for (int rank : new int[]{8, 32}) {
            for (int width : new int[]{768, 2048}) {
                String shape = "rank " + rank + " width " + width;
                Experts a = Experts.random(this, r, rank, width);   // A_e [r, width]
                Experts b = Experts.random(this, r, width, rank);   // B_e [width, r]
                Tensor x = randn(r, 1f, p, width);
                Tensor xa = randn(r, 1f, p, rank);
                // x · A_eᵀ [P, r] and (dy·B) · A_e [P, width]
                check("moeExpertMatmul A " + shape, x, a, offsets, false);
                check("moeExpertMatmulTransposed A " + shape, xa, a, offsets, true);
                // xa · B_eᵀ [P, width] and dy · B_e [P, r]
                check("moeExpertMatmul B " + shape, xa, b, offsets, false);
                check("moeExpertMatmulTransposed B " + shape, x, b, offsets, true);
            }
        }
    }

    @Test
    void accumulatingProductsMatchTheHost() {
        SplittableRandom r = rng(902);
        int[] offsets = offsets();
        int p = offsets[E];
        for (int rank : new int[]{8, 32}) {
            for (int width : new int[]{768, 2048}) {
                Experts a = Experts.random(this, r, rank, width);
                Experts b = Experts.random(this, r, width, rank);
                Tensor xa = randn(r, 1f, p, rank);
                for (boolean transposed : new boolean[]{false, true}) {
                    // forward: y [P, width] += s · xa · B_eᵀ; transposed: dx [P, width] += s · (dy·B) · A_e
                    Experts w = transposed ? a : b;
                    Tensor y0 = randn(r, 1f, p, width);
                    Tensor ref = Tensor.of(y0.toFloatArray(), p, width);
                    MoeHostOps.expertMatmulAccumulate(cpu, xa, w.host, offsets, SCALE, ref, transposed, 0);
                    Tensor got = dev(y0);
                    gpu.moeExpertMatmulAccumulate(dev(xa), w.device, offsets, SCALE, got, transposed);
                    double[] dot = absProducts(xa.toFloatArray(), w.values, offsets, rank, width, transposed);
                    float[] start = y0.toFloatArray();
                    double[] tol = new double[dot.length];
                    for (int i = 0; i < tol.length; i++) {
                        tol[i] = 1e-6 + 3e-5 * (Math.abs(start[i]) + SCALE * dot[i]);
                    }
                    assertWithin("moeExpertMatmulAccumulate" + (transposed ? " transposed" : "") + " rank " + rank + " width " + width,
                            ref.toFloatArray(), gpu.toHost(got).toFloatArray(), tol);
                }
            }
        }
    }

    @Test
    void weightGradientsMatchTheHostInBothOrientations() {
        SplittableRandom r = rng(903);
        int[] offsets = offsets();
        int p = offsets[E];
        for (int rank : new int[]{8, 32}) {
            for (int width : new int[]{768, 2048}) {
                // dA_e [r, width] += s · (dy·B)_eᵀ · x_e (narrow dys); dB_e [width, r] += s · dy_eᵀ · xa_e (narrow xs)
                for (boolean narrowDys : new boolean[]{true, false}) {
                    int n = narrowDys ? rank : width;
                    int k = narrowDys ? width : rank;
                    Tensor dys = randn(r, 1f, p, n);
                    Tensor xs = randn(r, 1f, p, k);
                    Tensor[] ref = new Tensor[E];
                    Tensor[] got = new Tensor[E];
                    float[][] start = new float[E][];
                    for (int e = 0; e < E; e++) {
                        if (COUNTS[e] > 0) {   // experts without rows have no gradient (null is allowed there)
                            ref[e] = randn(r, 1f, n, k);
                            start[e] = ref[e].toFloatArray();
                            got[e] = dev(ref[e]);
                        }
                    }
                    MoeHostOps.expertWeightGrad(cpu, dys, xs, offsets, SCALE, ref);
                    Tensor ddys = dev(dys);
                    Tensor dxs = dev(xs);
                    gpu.moeExpertWeightGrad(ddys, dxs, offsets, SCALE, got);
                    float[] dv = dys.toFloatArray();
                    float[] xv = xs.toFloatArray();
                    for (int e = 0; e < E; e++) {
                        if (got[e] == null) {
                            continue;
                        }
                        double[] tol = new double[n * k];
                        for (int i = 0; i < n; i++) {
                            for (int j = 0; j < k; j++) {
                                double s = 0;
                                for (int row = offsets[e]; row < offsets[e + 1]; row++) {
                                    s += Math.abs((double) dv[row * n + i] * xv[row * k + j]);
                                }
                                tol[i * k + j] = 1e-6 + 3e-5 * (Math.abs(start[e][i * k + j]) + SCALE * s);
                            }
                        }
                        assertWithin("moeExpertWeightGrad [" + n + ", " + k + "] expert " + e + " (" + COUNTS[e] + " rows)",
                                ref[e].toFloatArray(), gpu.toHost(got[e]).toFloatArray(), tol);
                    }
                    // every row on expert 4 (a different sum), twice from the same start: the same bits
                    int e = 4;
                    int[] only = new int[E + 1];
                    for (int i = e + 1; i <= E; i++) {
                        only[i] = p;
                    }
                    Tensor again = dev(Tensor.of(start[e], n, k));
                    Tensor twice = dev(Tensor.of(start[e], n, k));
                    Tensor[] one = new Tensor[E];
                    Tensor[] two = new Tensor[E];
                    one[e] = again;
                    two[e] = twice;
                    gpu.moeExpertWeightGrad(ddys, dxs, only, SCALE, one);
                    gpu.moeExpertWeightGrad(ddys, dxs, only, SCALE, two);
                    assertArrayEquals(gpu.toHost(again).toFloatArray(), gpu.toHost(twice).toFloatArray(),
                            "moeExpertWeightGrad repeated: the same bits");
                }
            }
        }
    }

    @Test
    void badShapesAreRejectedWithTheirNames() {
        SplittableRandom r = rng(904);
        int[] offsets = offsets();
        int p = offsets[E];
        Experts a = Experts.random(this, r, 8, 64);
        Tensor x = dev(randn(r, 1f, p, 64));
        Tensor wrong = poisoned(DType.F32, p, 16);
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class,
                () -> gpu.moeExpertMatmul(x, a.device, offsets, wrong, 0));
        assertTrue(ex.getMessage().contains("moeExpertMatmul"), ex.getMessage());
        Tensor[] grads = new Tensor[E];
        grads[1] = poisoned(DType.F32, 8, 64);   // expert 2 has rows but no gradient
        IllegalArgumentException g = assertThrows(IllegalArgumentException.class,
                () -> gpu.moeExpertWeightGrad(dev(randn(r, 1f, p, 8)), x, offsets, 1f, grads));
        assertTrue(g.getMessage().contains("expert 2"), g.getMessage());
    }

    /** The product of one call against the host, with the tolerance 1e-6 + 3e-5·Σ|x·w| per output. */
    private void check(String what, Tensor in, Experts w, int[] offsets, boolean transposed) {
        int p = offsets[E];
        int outCols = transposed ? w.cols : w.rows;
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, p, outCols);
        MoeHostOps.expertMatmul(cpu, in, w.host, offsets, ref, 0, transposed);
        Tensor got = poisoned(DType.F32, p, outCols);
        Tensor din = dev(in);
        if (transposed) {
            gpu.moeExpertMatmulTransposed(din, w.device, offsets, got, 0);
        } else {
            gpu.moeExpertMatmul(din, w.device, offsets, got, 0);
        }
        float[] first = gpu.toHost(got).toFloatArray();
        double[] dot = absProducts(in.toFloatArray(), w.values, offsets, transposed ? w.rows : w.cols, outCols, transposed);
        double[] tol = new double[dot.length];
        for (int i = 0; i < tol.length; i++) {
            tol[i] = 1e-6 + 3e-5 * dot[i];
        }
        assertWithin(what, ref.toFloatArray(), first, tol);
        if (transposed) {
            gpu.moeExpertMatmulTransposed(din, w.device, offsets, got, 0);
        } else {
            gpu.moeExpertMatmul(din, w.device, offsets, got, 0);
        }
        assertArrayEquals(first, gpu.toHost(got).toFloatArray(), what + " repeated: the same bits");
    }

    /**
     * Σ|in·w| per output: forward out[i, o] over c of |in[i, c]·W_e[o][c]|, transposed over c of
     * |in[i, c]·W_e[c][o]| (W_e [rows, cols] row-major in values[e]).
     */
    private static double[] absProducts(float[] in, float[][] values, int[] offsets, int inCols, int outCols, boolean transposed) {
        double[] out = new double[offsets[E] * outCols];
        for (int e = 0; e < E; e++) {
            float[] w = values[e];
            for (int i = offsets[e]; i < offsets[e + 1]; i++) {
                for (int o = 0; o < outCols; o++) {
                    double s = 0;
                    for (int c = 0; c < inCols; c++) {
                        float wv = transposed ? w[c * outCols + o] : w[o * inCols + c];
                        s += Math.abs((double) in[i * inCols + c] * wv);
                    }
                    out[i * outCols + o] = s;
                }
            }
        }
        return out;
    }

    private static int[] offsets() {
        int[] off = new int[E + 1];
        for (int e = 0; e < E; e++) {
            off[e + 1] = off[e] + COUNTS[e];
        }
        return off;
    }

    /** One projection's f32 experts [rows, cols] on the host and on the device, with their values. */
    private record Experts(int rows, int cols, ExpertWeights host, ExpertWeights device, float[][] values) {
        static Experts random(CudaNarrowExpertsTest t, SplittableRandom r, int rows, int cols) {
            Tensor[] host = new Tensor[E];
            Tensor[] device = new Tensor[E];
            float[][] values = new float[E][];
            for (int e = 0; e < E; e++) {
                host[e] = randn(r, 0.1f, rows, cols);
                device[e] = t.dev(host[e]);
                values[e] = host[e].toFloatArray();
            }
            return new Experts(rows, cols, new ExpertWeights(rows, cols, host, new QuantizedTensor[E]),
                    new ExpertWeights(rows, cols, device, new QuantizedTensor[E]), values);
        }
    }
}
