package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A decode token's o_proj, residual add, post-attention norm and router in one launch ({@link
 * CudaBackend#projectAddNormRouterTopk}, {@code bgemv_route_pre1}, {@code -Dorbit.cuda.projRouter=on}): the sum bit for bit
 * {@code res + matmul(attn, wo)} (the one-row product's sums and the same f32 add); the norm of that sum within {@code 1e-6
 * + 1e-5·|ref|} of a double reference; the selection as {@link CudaDecodeRouterTest#checkSelection} checks it against the
 * double logits of that norm (each chosen expert the reference's j-th largest probability within the tolerance a logit's
 * rounding allows, the values those probabilities). Every block's share of each logit is added up by the last block, so
 * the call is repeated (the ticket re-armed) and run as a dependent of the launch that writes attn, with the same bits.
 */
class CudaProjectedRouterTest extends CudaTestBase {
    private static final float EPS = 1e-6f;

    @Test
    void oProjTheAddTheNormAndTheRouterInOneLaunch() {
        withProperty(CudaDecodeRouter.PROJECTED_ROUTER_PROPERTY, "on", this::projectedRouter);
    }

    private void projectedRouter() {
        SplittableRandom r = rng(351);
        // {K (o_proj's input), hidden, experts, topk, bf16 norm weight}: Qwen3-30B-A3B's o_proj and router first; K 256 takes
        // blocks of 4 warps; 256 experts, the most a block of 8 warps takes
        int[][] cases = {{4096, 2048, 128, 8, 0}, {1024, 512, 60, 4, 1}, {256, 256, 32, 2, 0}, {2048, 1024, 256, 8, 1},
                {4096, 4096, 128, 8, 0}};
        for (int[] c : cases) {
            int k = c[0];
            int h = c[1];
            int e = c[2];
            int topk = c[3];
            float[] attnA = randn(r, 1f, 1, k).toFloatArray();
            float[] attnB = randn(r, 0.5f, 1, k).toFloatArray();
            float[] res = randn(r, 1f, 1, h).toFloatArray();
            float[] nw = CudaFusedDecodeTest.normWeights(r, h, c[4] == 1);
            float[] router = bf16Round(randn(r, 0.2f, e, h).toFloatArray());
            Tensor da = dev(Tensor.of(attnA, 1, k));
            Tensor db = dev(Tensor.of(attnB, 1, k));
            Tensor attn = poisoned(DType.F32, 1, k);
            gpu.add(da, db, attn);
            Tensor wo = dev(randn(r, 0.05f, h, k).to(DType.BF16));
            Tensor dres = dev(Tensor.of(res, 1, h));
            Tensor dnw = dev(c[4] == 1 ? Tensor.of(nw, h).to(DType.BF16) : Tensor.of(nw, h));
            Tensor drouter = dev(Tensor.of(router, e, h).to(DType.BF16));
            Tensor delta = poisoned(DType.F32, 1, h);
            gpu.matmul(attn, wo, delta);
            float[] d = gpu.toHost(delta).toFloatArray();
            float[] sumWant = new float[h];
            for (int i = 0; i < h; i++) {
                sumWant[i] = res[i] + d[i];
            }
            for (boolean normalize : new boolean[]{true, false}) {
                String what = "K " + k + ", hidden " + h + ", " + e + " experts at top " + topk + (normalize ? ", normalized" : "");
                float[] firstValues = null;
                long[] firstIds = null;
                float[] firstNormed = null;
                for (int run = 0; run < 4; run++) {   // run 2 a dependent launch after the add that writes attn, run 3 in place
                    String f = what + " (run " + run + (run == 2 ? ", a dependent launch" : run == 3 ? ", sum in res's place" : "") + ")";
                    Tensor sum = run == 3 ? dev(Tensor.of(res, 1, h)) : poisoned(DType.F32, 1, h);
                    Tensor normed = poisoned(DType.F32, 1, h);
                    Tensor values = poisoned(DType.F32, 1, topk);
                    Tensor ids = poisoned(DType.I32, 1, topk);
                    gpu.dependentLaunches(run == 2);
                    try {
                        if (run == 2) {
                            gpu.add(da, db, attn);   // the launch before it writes its input
                        }
                        assertTrue(gpu.projectAddNormRouterTopk(attn, wo, run == 3 ? sum : dres, sum, dnw, EPS, normed, drouter, topk,
                                normalize, values, ids), f + ": taken");
                    } finally {
                        gpu.dependentLaunches(false);
                    }
                    float[] sumGot = gpu.toHost(sum).toFloatArray();
                    assertBitsEqual(f + ": the sum against res + matmul(attn, wo)", sumWant, sumGot);
                    double[][] xn = CudaFusedDecodeTest.normalize(sumGot, nw, 1, h);
                    float[] normedRef = new float[h];
                    double[] tol = new double[h];
                    for (int i = 0; i < h; i++) {
                        normedRef[i] = (float) xn[0][i];
                        tol[i] = 1e-6 + 1e-5 * Math.abs(normedRef[i]);
                    }
                    float[] normedGot = gpu.toHost(normed).toFloatArray();
                    assertWithin(f + ": the norm", normedRef, normedGot, tol);
                    float[] v = gpu.toHost(values).toFloatArray();
                    long[] chosen = gpu.toHost(ids).toLongArray();
                    CudaDecodeRouterTest.checkSelection(f, xn, router, e, h, topk, normalize, v, chosen);
                    if (run == 0) {
                        firstValues = v;
                        firstIds = chosen;
                        firstNormed = normedGot;
                    } else {   // whichever block finishes last, the shares are added in block order: the same bits
                        assertBitsEqual(f + ": the norm against run 0", firstNormed, normedGot);
                        assertBitsEqual(f + ": the weights against run 0", firstValues, v);
                        assertExact(f + ": the experts against run 0", firstIds, chosen);
                    }
                }
            }
            // the launch is the kernel's: left out, every output stays as it was
            Tensor sum = poisoned(DType.F32, 1, h);
            Tensor values = poisoned(DType.F32, 1, topk);
            withProperty("orbit.cuda.omitKernels", "^bgemv_route_pre1$", () -> assertTrue(gpu.projectAddNormRouterTopk(attn, wo, dres,
                    sum, dnw, EPS, poisoned(DType.F32, 1, h), drouter, topk, true, values, poisoned(DType.I32, 1, topk))));
            assertTrue(Float.isNaN(gpu.toHost(sum).toFloatArray()[0]) && Float.isNaN(gpu.toHost(values).toFloatArray()[0]),
                    "K " + k + ": with bgemv_route_pre1 left out the outputs stay poisoned");
        }
    }

    /**
     * The call declines, writing nothing, where its launch does not suit the shapes or the switch is off (the default):
     * two tokens, experts not a multiple of 4, more experts than a block's threads, o_proj's K past a lane's registers
     * (8192), an f32 o_proj; and throws, naming the tensors, where the shapes do not agree.
     */
    @Test
    void declinesWhereItsLaunchDoesNotSuitTheShapes() {
        SplittableRandom r = rng(352);
        // {tokens, K, hidden, experts, wo bf16, switch on}
        int[][] cases = {{1, 1024, 512, 64, 1, 0}, {2, 1024, 512, 64, 1, 1}, {1, 1024, 512, 30, 1, 1}, {1, 256, 256, 132, 1, 1},
                {1, 8192, 512, 64, 1, 1}, {1, 1024, 512, 64, 0, 1}};
        for (int[] c : cases) {
            int t = c[0];
            int k = c[1];
            int h = c[2];
            int e = c[3];
            Tensor wo = dev(c[4] == 1 ? randn(r, 0.05f, h, k).to(DType.BF16) : randn(r, 0.05f, h, k));
            Tensor sum = poisoned(DType.F32, t, h);
            Tensor values = poisoned(DType.F32, t, 4);
            Tensor attn = dev(randn(r, 1f, t, k));
            Tensor res = dev(randn(r, 1f, t, h));
            Tensor nw = dev(randn(r, 1f, h));
            Tensor router = dev(randn(r, 0.2f, e, h).to(DType.BF16));
            String what = t + " tokens, K " + k + ", hidden " + h + ", " + e + " experts" + (c[4] == 1 ? "" : ", f32 o_proj")
                    + (c[5] == 1 ? "" : ", the switch off");
            withProperty(CudaDecodeRouter.PROJECTED_ROUTER_PROPERTY, c[5] == 1 ? "on" : "off", () -> assertFalse(
                    gpu.projectAddNormRouterTopk(attn, wo, res, sum, nw, EPS, poisoned(DType.F32, t, h), router, 4, true, values,
                            poisoned(DType.I32, t, 4)), what + ": declined"));
            assertTrue(Float.isNaN(gpu.toHost(sum).toFloatArray()[0]) && Float.isNaN(gpu.toHost(values).toFloatArray()[0]),
                    what + ": a declined call writes nothing");
        }
        Tensor attn = dev(randn(r, 1f, 1, 1024));
        Tensor wrongWo = dev(randn(r, 0.05f, 512, 512).to(DType.BF16));
        IllegalArgumentException ex = assertThrows(IllegalArgumentException.class, () -> withProperty(
                CudaDecodeRouter.PROJECTED_ROUTER_PROPERTY, "on", () -> gpu.projectAddNormRouterTopk(attn, wrongWo,
                        dev(randn(r, 1f, 1, 512)), poisoned(DType.F32, 1, 512), dev(randn(r, 1f, 512)), EPS,
                        poisoned(DType.F32, 1, 512), dev(randn(r, 0.2f, 64, 512).to(DType.BF16)), 4, true,
                        poisoned(DType.F32, 1, 4), poisoned(DType.I32, 1, 4))));
        assertTrue(ex.getMessage().contains("woᵀ") && ex.getMessage().contains("[512, 512]"), ex.getMessage());
    }
}
