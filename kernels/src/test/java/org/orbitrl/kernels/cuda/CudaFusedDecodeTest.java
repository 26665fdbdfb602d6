package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The fused decode operations ({@link CudaFusedDecode}) against references computed here in double
 * from the inputs (the quantized weights through the format classes' own decoders), and against the
 * unfused launches where those take the same arithmetic.
 *
 * <p>Tolerances. A product {@code Σ a_i·w_i} of exact weights and f32 arithmetic is within
 * {@code 1e-6 + 2e-5·Σ|a_i·w_i|} of the double sum (f32 accumulation over K ≤ 2048, plus the norm's
 * relative error of a few f32 units carried into a_i). A normalized value is within
 * {@code 1e-6 + 1e-5·|ref|}. SwiGLU: {@code 1e-6 + 1.1·tolG·|u| + |silu(g)|·tolU}. The router's
 * selection: near-ties may be ordered differently in f32 than in double, so each chosen expert's
 * reference probability must equal the reference's j-th largest within the probability tolerance, and
 * no expert twice. The fused gate/up/SwiGLU launch (both of its shapes) also agrees with the unfused
 * launches within the sum of both sides' bounds.
 */
class CudaFusedDecodeTest extends CudaTestBase {
    private static final float EPS = 1e-6f;

    @Test
    void rmsNormMatmulMatchesTheDoubleReference() {
        SplittableRandom r = rng(311);
        int[][] cases = {{1, 2048, 517}, {3, 256, 70}, {4, 1024, 33}, {6, 256, 40}, {1, 64, 9}}; // {M, K, N}; M = 6: norm, then product
        for (int[] c : cases) {
            for (boolean bf16Norm : new boolean[]{false, true}) {
                for (boolean accumulate : new boolean[]{false, true}) {
                    int m = c[0];
                    int k = c[1];
                    int n = c[2];
                    String what = "rmsNormMatmul M " + m + " K " + k + " N " + n + (bf16Norm ? " bf16 norm" : " f32 norm")
                            + (accumulate ? " accumulate" : "");
                    float[] x = randn(r, 2f, m, k).toFloatArray();
                    float[] nw = normWeights(r, k, bf16Norm);
                    float[] w = bf16Round(randn(r, 0.05f, n, k).toFloatArray());
                    float[] y0 = randn(r, 1f, m, n).toFloatArray();
                    Tensor y = dev(Tensor.of(accumulate ? y0 : nanArray(m * n), m, n));
                    Tensor normT = Tensor.of(nw, k);
                    gpu.fusedDecode().rmsNormMatmul(dev(Tensor.of(x, m, k)), dev(bf16Norm ? normT.to(DType.BF16) : normT), EPS,
                            dev(Tensor.of(w, n, k).to(DType.BF16)), y, accumulate);
                    double[][] xn = normalize(x, nw, m, k);
                    float[] ref = new float[m * n];
                    double[] tol = new double[m * n];
                    for (int i = 0; i < m; i++) {
                        for (int o = 0; o < n; o++) {
                            double s = 0;
                            double sa = 0;
                            for (int q = 0; q < k; q++) {
                                double v = xn[i][q] * w[o * k + q];
                                s += v;
                                sa += Math.abs(v);
                            }
                            double base = accumulate ? y0[i * n + o] : 0;
                            ref[i * n + o] = (float) (base + s);
                            tol[i * n + o] = 1e-6 + 2e-5 * sa + Math.ulp((float) Math.abs(base + s));
                        }
                    }
                    assertWithin(what, ref, gpu.toHost(y).toFloatArray(), tol);
                }
            }
        }
    }

    @Test
    void swigluPairsMatchesTheReferenceAndTheUnfusedLaunches() {
        SplittableRandom r = rng(313);
        int experts = 16;
        int topk = 4;
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            for (int[] c : new int[][]{{1, 72, 2048}, {3, 40, 256}}) { // {tokens, I, K}
                int tokens = c[0];
                int n = c[1];
                int k = c[2];
                for (boolean perPair : new boolean[]{false, true}) {
                    String what = "moeSwigluPairs " + format + " tokens " + tokens + " I " + n + " K " + k + (perPair ? ", x per pair" : "");
                    QuantizedTensor gate = CudaQuantTest.random(format, r, experts * n, k);
                    QuantizedTensor up = CudaQuantTest.random(format, r, experts * n, k);
                    float[] gw = CudaQuantTest.dequantizeRef(gate);
                    float[] uw = CudaQuantTest.dequantizeRef(up);
                    QuantizedTensor dGate = gpu.toDevice(gate);
                    QuantizedTensor dUp = gpu.toDevice(up);
                    try {
                        int pairs = tokens * topk;
                        int rows = perPair ? pairs : tokens;
                        float[] x = randn(r, 1f, rows, k).toFloatArray();
                        int[] ids = routes(r, tokens, topk, experts);
                        Tensor dx = dev(Tensor.of(x, rows, k));
                        Tensor dIds = dev(Tensor.ofInts(ids, tokens, topk));
                        int rowsBefore = gpu.fusedDecode().gateUpRowsPerLane();
                        float[][] shapes = new float[2][];
                        try {
                            for (int shape = 0; shape < 2; shape++) {
                                gpu.fusedDecode().gateUpRowsPerLane(shape == 0 ? 4 : 2);
                                Tensor act = poisoned(DType.F32, pairs, n);
                                gpu.fusedDecode().moeSwigluPairs(dx, dGate, dUp, experts, dIds, act);
                                shapes[shape] = gpu.toHost(act).toFloatArray();
                            }
                        } finally {
                            gpu.fusedDecode().gateUpRowsPerLane(rowsBefore);
                        }

                        int div = perPair ? 1 : topk;
                        float[] ref = new float[pairs * n];
                        double[] tol = new double[ref.length];
                        for (int p = 0; p < pairs; p++) {
                            for (int o = 0; o < n; o++) {
                                double[] g = dot(x, (p / div) * k, gw, (ids[p] * n + o) * k, k);
                                double[] u = dot(x, (p / div) * k, uw, (ids[p] * n + o) * k, k);
                                double silu = g[0] / (1 + Math.exp(-g[0]));
                                ref[p * n + o] = (float) (silu * u[0]);
                                double tolG = 1e-6 + 1e-5 * g[1];
                                double tolU = 1e-6 + 1e-5 * u[1];
                                tol[p * n + o] = 1e-6 + 1.1 * tolG * Math.abs(u[0]) + Math.abs(silu) * tolU;
                            }
                        }
                        assertWithin(what + " (4 rows a lane) vs the reference", ref, shapes[0], tol);
                        assertWithin(what + " (2 rows a lane) vs the reference", ref, shapes[1], tol);

                        Tensor g = poisoned(DType.F32, pairs, n);
                        Tensor u = poisoned(DType.F32, pairs, n);
                        Tensor a = poisoned(DType.F32, pairs, n);
                        gpu.moe().moeMatmulQuantized(dx, dGate, experts, dIds, g);
                        gpu.moe().moeMatmulQuantized(dx, dUp, experts, dIds, u);
                        gpu.swiglu(g, u, a);
                        double[] both = new double[tol.length];
                        for (int i = 0; i < both.length; i++) {
                            both[i] = 2 * tol[i];
                        }
                        assertWithin(what + " vs gate, up and SwiGLU launched apart", gpu.toHost(a).toFloatArray(), shapes[0], both);
                    } finally {
                        gpu.free(dGate);
                        gpu.free(dUp);
                    }
                }
            }
        }
    }

    @Test
    void downCombineAddsTheWeightedExpertsIntoTheResidual() {
        SplittableRandom r = rng(314);
        int experts = 16;
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            for (int[] c : new int[][]{{1, 8, 2048, 768}, {3, 4, 70, 256}, {2, 1, 33, 64}}) { // {tokens, topk, H, I}
                for (boolean normalize : new boolean[]{false, true}) {
                    for (boolean accumulate : new boolean[]{true, false}) {
                        int tokens = c[0];
                        int topk = c[1];
                        int n = c[2];
                        int k = c[3];
                        String what = "moeDownCombine " + format + " tokens " + tokens + " top " + topk + " H " + n + " I " + k
                                + (normalize ? " normalized" : "") + (accumulate ? " accumulate" : "");
                        QuantizedTensor down = CudaQuantTest.random(format, r, experts * n, k);
                        float[] dw = CudaQuantTest.dequantizeRef(down);
                        QuantizedTensor dDown = gpu.toDevice(down);
                        try {
                            int pairs = tokens * topk;
                            float[] act = randn(r, 1f, pairs, k).toFloatArray();
                            int[] ids = routes(r, tokens, topk, experts);
                            float[] wts = new float[pairs];
                            for (int i = 0; i < pairs; i++) {
                                wts[i] = (float) (0.05 + r.nextDouble());
                            }
                            float[] out0 = randn(r, 1f, tokens, n).toFloatArray();
                            Tensor out = dev(Tensor.of(accumulate ? out0 : nanArray(tokens * n), tokens, n));
                            gpu.fusedDecode().moeDownCombine(dev(Tensor.of(act, pairs, k)), dDown, experts,
                                    dev(Tensor.ofInts(ids, tokens, topk)), dev(Tensor.of(wts, tokens, topk)), normalize, out, accumulate);
                            float[] ref = new float[tokens * n];
                            double[] tol = new double[ref.length];
                            for (int t = 0; t < tokens; t++) {
                                double wsum = 0;
                                for (int j = 0; j < topk; j++) {
                                    wsum += wts[t * topk + j];
                                }
                                double cn = normalize ? 1 / wsum : 1;
                                for (int o = 0; o < n; o++) {
                                    double s = 0;
                                    double sa = 0;
                                    for (int j = 0; j < topk; j++) {
                                        int p = t * topk + j;
                                        double[] d = dot(act, p * k, dw, (ids[p] * n + o) * k, k);
                                        s += wts[p] * d[0];
                                        sa += wts[p] * d[1];
                                    }
                                    double base = accumulate ? out0[t * n + o] : 0;
                                    ref[t * n + o] = (float) (base + cn * s);
                                    tol[t * n + o] = 1e-6 + 2e-5 * cn * sa + Math.ulp((float) Math.abs(base + cn * s));
                                }
                            }
                            assertWithin(what, ref, gpu.toHost(out).toFloatArray(), tol);
                        } finally {
                            gpu.free(dDown);
                        }
                    }
                }
            }
        }
    }

    @Test
    void expertIdsOutsideTheLayerAreReportedAndShapesChecked() {
        SplittableRandom r = rng(315);
        QuantizedTensor g = gpu.toDevice(CudaQuantTest.random("int4-g32", r, 4 * 32, 64));
        QuantizedTensor u = gpu.toDevice(CudaQuantTest.random("int4-g32", r, 4 * 32, 64));
        QuantizedTensor d = gpu.toDevice(CudaQuantTest.random("int4-g32", r, 4 * 64, 32));
        try {
            Tensor ids = dev(Tensor.ofInts(new int[]{1, 4}, 1, 2));
            gpu.fusedDecode().moeSwigluPairs(dev(randn(r, 1f, 1, 64)), g, u, 4, ids, poisoned(DType.F32, 2, 32));
            IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
            assertTrue(e.getMessage().contains("expert id 4"), e.getMessage());
            gpu.fusedDecode().moeDownCombine(dev(randn(r, 1f, 2, 32)), d, 4, ids, dev(randn(r, 1f, 1, 2)), false,
                    dev(randn(r, 1f, 1, 64)), true);
            e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
            assertTrue(e.getMessage().contains("expert id 4"), e.getMessage());
            IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> gpu.fusedDecode().moeSwigluPairs(
                    dev(randn(r, 1f, 1, 48)), g, u, 4, dev(Tensor.ofInts(new int[]{1, 2}, 1, 2)), poisoned(DType.F32, 2, 32)));
            assertTrue(bad.getMessage().contains("moeSwigluPairs"), bad.getMessage());
        } finally {
            gpu.free(g);
            gpu.free(u);
            gpu.free(d);
        }
    }

    /** topk distinct experts a token, seeded. */
    static int[] routes(SplittableRandom r, int tokens, int topk, int experts) {
        int[] ids = new int[tokens * topk];
        for (int t = 0; t < tokens; t++) {
            boolean[] used = new boolean[experts];
            for (int j = 0; j < topk; j++) {
                int e;
                do {
                    e = r.nextInt(experts);
                } while (used[e]);
                used[e] = true;
                ids[t * topk + j] = e;
            }
        }
        return ids;
    }

    static float[] normWeights(SplittableRandom r, int k, boolean bf16) {
        float[] w = new float[k];
        for (int i = 0; i < k; i++) {
            w[i] = (float) (0.5 + r.nextDouble());
        }
        return bf16 ? bf16Round(w) : w;
    }

    /** w · (x / sqrt(mean(x²) + eps)) per row, in double. */
    static double[][] normalize(float[] x, float[] w, int m, int k) {
        double[][] out = new double[m][k];
        for (int i = 0; i < m; i++) {
            double ss = 0;
            for (int q = 0; q < k; q++) {
                ss += (double) x[i * k + q] * x[i * k + q];
            }
            double inv = 1 / Math.sqrt(ss / k + EPS);
            for (int q = 0; q < k; q++) {
                out[i][q] = w[q] * (x[i * k + q] * inv);
            }
        }
        return out;
    }

    /** {Σ a·w, Σ|a·w|} of a[ao ..] and w[wo ..] over k. */
    static double[] dot(float[] a, int ao, float[] w, int wo, int k) {
        double s = 0;
        double sa = 0;
        for (int i = 0; i < k; i++) {
            double v = (double) a[ao + i] * w[wo + i];
            s += v;
            sa += Math.abs(v);
        }
        return new double[]{s, sa};
    }

    private static float[] nanArray(int n) {
        float[] v = new float[n];
        Arrays.fill(v, Float.NaN);
        return v;
    }
}
