package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A decode token's routed experts in one launch of clusters ({@code moe_experts_cluster_*}, {@code -Dorbit.cuda.moeCluster=on},
 * {@link CudaBackend#moeExpertsPairs}) on Qwen3-30B-A3B's widths (hidden 2048, 768 intermediate rows, int4-g32, 16
 * experts): one token at top 8 with distinct experts and with an expert chosen twice, plain and accumulating into a
 * residual, against a double reference over the dequantized weights, within 1e-6 + 1e-4·Σ_j w_j·Σ_k |act_jk·D_jkn| (f32
 * sums in another order than the reference's); and the call declines (nothing written) with the switch off and where the
 * pairs' clusters would outnumber the SMs.
 */
class CudaMoeClusterTest extends CudaTestBase {
    private static final int E = 16;
    private static final int H = 2048;
    private static final int I = 768;

    @Test
    void oneTokensExpertsMatchTheDoubleReference() {
        SplittableRandom r = rng(961);
        QuantizedTensor gh = CudaQuantTest.random("int4-g32", r, E * I, H);
        QuantizedTensor uh = CudaQuantTest.random("int4-g32", r, E * I, H);
        QuantizedTensor dh = CudaQuantTest.random("int4-g32", r, E * H, I);
        QuantizedTensor gd = gpu.toDevice(gh);
        QuantizedTensor ud = gpu.toDevice(uh);
        QuantizedTensor dd = gpu.toDevice(dh);
        try {
            ExpertWeights gate = ExpertWeights.ofStack(gd, I);
            ExpertWeights up = ExpertWeights.ofStack(ud, I);
            ExpertWeights down = ExpertWeights.ofStack(dd, H);
            float[] g = CudaQuantTest.dequantizeRef(gh);
            float[] u = CudaQuantTest.dequantizeRef(uh);
            float[] d = CudaQuantTest.dequantizeRef(dh);
            int[][] choices = {{3, 0, 15, 7, 9, 1, 12, 4}, {5, 5, 2, 11, 14, 6, 8, 10}};
            for (int[] ids : choices) {
                for (boolean accumulate : new boolean[]{false, true}) {
                    float[] x = randn(r, 1f, 1, H).toFloatArray();
                    float[] w = new float[ids.length];
                    float sum = 0;
                    for (int j = 0; j < w.length; j++) {
                        w[j] = (float) (0.1 + r.nextDouble());
                        sum += w[j];
                    }
                    for (int j = 0; j < w.length; j++) {
                        w[j] /= sum;
                    }
                    float[] y0 = randn(r, 2f, 1, H).toFloatArray();
                    double[] ref = new double[H];
                    double[] mag = new double[H];
                    for (int j = 0; j < ids.length; j++) {
                        int e = ids[j];
                        for (int k = 0; k < I; k++) {
                            double gv = 0;
                            double uv = 0;
                            for (int c = 0; c < H; c++) {
                                gv += (double) x[c] * g[(e * I + k) * H + c];
                                uv += (double) x[c] * u[(e * I + k) * H + c];
                            }
                            double act = gv / (1 + Math.exp(-gv)) * uv;
                            for (int n = 0; n < H; n++) {
                                double t = act * d[(e * H + n) * I + k];
                                ref[n] += w[j] * t;
                                mag[n] += w[j] * Math.abs(t);
                            }
                        }
                    }
                    float[] want = new float[H];
                    double[] tol = new double[H];
                    for (int n = 0; n < H; n++) {
                        want[n] = (float) (ref[n] + (accumulate ? y0[n] : 0));
                        tol[n] = 1e-6 + 1e-4 * mag[n] + (accumulate ? 1e-6 * Math.abs(y0[n]) : 0);
                    }
                    Tensor out = accumulate ? dev(Tensor.of(y0, 1, H)) : poisoned(org.orbitrl.kernels.DType.F32, 1, H);
                    Tensor xd = dev(Tensor.of(x, 1, H));
                    Tensor idd = dev(Tensor.ofInts(ids, 1, ids.length));
                    Tensor wd = dev(Tensor.of(w, 1, w.length));
                    boolean[] took = new boolean[1];
                    withProperty(CudaMoeCluster.PROPERTY, "on", () -> took[0] = gpu.moeExpertsPairs(xd, gate, up, down, idd, wd, out, accumulate));
                    String what = "experts " + java.util.Arrays.toString(ids) + (accumulate ? ", accumulating" : "");
                    assertTrue(took[0], what + ": the one launch declined Qwen3-30B-A3B's widths");
                    assertWithin(what, want, gpu.toHost(out).toFloatArray(), tol);
                }
            }
            // declines: the switch off; two tokens at top 8 (256 blocks of clusters of 16 past the SMs)
            Tensor out = poisoned(org.orbitrl.kernels.DType.F32, 2, H);
            Tensor xd = dev(randn(r, 1f, 2, H));
            Tensor idd = dev(Tensor.ofInts(new int[]{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, 2, 8));
            Tensor wd = dev(randn(r, 1f, 2, 8));
            assertFalse(gpu.moeExpertsPairs(xd.slice(0, 0, 1), gate, up, down, idd.slice(0, 0, 1), wd.slice(0, 0, 1), out.slice(0, 0, 1), false),
                    "the switch off");
            withProperty(CudaMoeCluster.PROPERTY, "on", () -> assertFalse(gpu.moeExpertsPairs(xd, gate, up, down, idd, wd, out, false),
                    "two tokens at top 8"));
            for (float v : gpu.toHost(out).toFloatArray()) {
                assertTrue(Float.isNaN(v), "out written by a call that declined");
            }
        } finally {
            gpu.free(gd);
            gpu.free(ud);
            gpu.free(dd);
        }
    }
}
