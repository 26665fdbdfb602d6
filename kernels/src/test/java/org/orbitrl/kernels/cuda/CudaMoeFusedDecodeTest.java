package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;

/**
 * The fused decode shapes of the routed experts ({@code moeSwigluGrouped}: gate, up and the SwiGLU in
 * one tensor-core launch; {@code moeMatmulGrouped} with a stage refilled after its products and short K
 * in three blocks an SM) against references computed here from the format classes' own dequantization,
 * and against the unfused launches ({@code moeFusedDecode(false)}), at batches 1, 8, 64 and 256 over
 * 64 experts (top-4: 4 rows an expert at batch 64, so 8-row x chunks, 16-row chunks at 256), every
 * variant of {@code orbit.cuda.moeGateUpStages} and {@code orbit.cuda.moeShortK}, ragged
 * routings with experts of 0 and 1 rows and one expert routed every token (several chunks), K = 2048
 * for gate and up, 768 (short K) and 2048 for down, expert widths not a multiple of the 64-row block,
 * symmetric and zero-point INT4.
 *
 * <p>Tolerances. Gate and up: the weights are exact and x is rounded to bf16 (at one token the GEMV
 * takes x exact), so each product is within {@code tolP = 1e-6 + 1e-5·Σ|x·w|} of the double reference
 * (the grouped test's bound); the activation {@code silu(g)·u} is then within
 * {@code 1e-6 + 1.1·tolG·|u| + |silu(g)|·tolU + 2⁻⁸·|ref|} (|silu'| ≤ 1.1, the last term the rounding
 * to bf16). Down: bf16 x (exact), the same product bound.
 * Fused against unfused: the same f32 operations in the same order, so equal bits, except that the
 * activation may differ by one bf16 unit where the SwiGLU is evaluated by a different kernel.
 */
class CudaMoeFusedDecodeTest extends CudaTestBase {
    private static final int EXPERTS = 64;
    private static final int TOPK = 4;
    private static final int HIDDEN = 2048;

    /** counts[e] of tokens·topk pairs: expert 0 none, expert 1 one, expert 2 every token, the rest random (each at most tokens). */
    private static int[] raggedCounts(SplittableRandom r, int tokens) {
        int[] counts = new int[EXPERTS];
        int left = tokens * TOPK;
        counts[1] = Math.min(1, left);
        left -= counts[1];
        counts[2] = Math.min(tokens, left);
        left -= counts[2];
        while (left > 0) {
            int e = 3 + r.nextInt(EXPERTS - 3);
            if (counts[e] < tokens) {
                counts[e]++;
                left--;
            }
        }
        return counts;
    }

    @Test
    void fusedDecodeMatchesTheReferenceAndTheUnfusedLaunches() {
        SplittableRandom r = rng(197);
        int[][] cases = {{1, 40}, {8, 136}, {64, 136}, {256, 40}}; // {tokens, gate and up width N}
        int downOut = 72;
        boolean fusedBefore = gpu.moe().moeFusedDecode();
        try {
            for (String format : new String[]{"int4-g32", "int4-g32-asym"}) {
                for (int[] c : cases) {
                    int tokens = c[0];
                    int[] ids = CudaMoeGroupedMmaTest.routeWithCounts(r, tokens, TOPK, raggedCounts(r, tokens));
                    try (MoeRouting routing = gpu.moe().moeRouting(EXPERTS, ids.length)) {
                        gpu.moe().moeRoute(dev(Tensor.ofInts(ids, tokens, TOPK)), routing);
                        gateUp(format, r, tokens, c[1], ids, routing);
                        for (int kDown : new int[]{768, HIDDEN}) {
                            down(format, r, tokens, kDown, downOut, ids, routing);
                        }
                    }
                }
            }
        } finally {
            gpu.moe().moeFusedDecode(fusedBefore);
        }
    }

    private void gateUp(String format, SplittableRandom r, int tokens, int n, int[] ids, MoeRouting routing) {
        QuantizedTensor gate = CudaQuantTest.random(format, r, EXPERTS * n, HIDDEN);
        QuantizedTensor up = CudaQuantTest.random(format, r, EXPERTS * n, HIDDEN);
        float[] gw = CudaQuantTest.dequantizeRef(gate);
        float[] uw = CudaQuantTest.dequantizeRef(up);
        QuantizedTensor dGate = gpu.toDevice(gate);
        QuantizedTensor dUp = gpu.toDevice(up);
        int pairs = ids.length;
        String what = format + " tokens " + tokens + " N " + n + " K " + HIDDEN;
        try {
            float[] xv = randn(r, 1f, tokens, HIDDEN).toFloatArray();
            Tensor x = dev(Tensor.of(xv, tokens, HIDDEN));
            float[] xr = tokens > 1 ? bf16Round(xv) : xv; // one token: the GEMV, x exact

            gpu.moe().moeFusedDecode(false);
            Tensor actOld = poisoned(DType.BF16, pairs, n);
            gpu.moe().moeSwigluGrouped(x, dGate, dUp, routing, actOld);
            float[] aOld = gpu.toHost(actOld).toFloatArray();
            float[][] g = product(xr, TOPK, ids, gw, n, HIDDEN);
            float[][] u = product(xr, TOPK, ids, uw, n, HIDDEN);
            float[] ref = new float[pairs * n];
            double[] tol = new double[ref.length];
            for (int i = 0; i < ref.length; i++) {
                double gv = g[0][i];
                double silu = gv / (1 + Math.exp(-gv));
                ref[i] = (float) (silu * u[0][i]);
                double tolG = 1e-6 + 1e-5 * g[1][i];
                double tolU = 1e-6 + 1e-5 * u[1][i];
                tol[i] = 1e-6 + 1.1 * tolG * Math.abs(u[0][i]) + Math.abs(silu) * tolU + Math.scalb(Math.abs(ref[i]), -8);
            }
            double[] unit = new double[aOld.length];
            for (int i = 0; i < unit.length; i++) {
                unit[i] = Math.scalb(Math.abs(aOld[i]), -7);
            }
            assertWithin("moeSwigluGrouped unfused vs the reference, " + what, ref, aOld, tol);
            gpu.moe().moeFusedDecode(true);
            // gate and up: four stages at 8 rows, two with 16-row chunks above (auto); two stages also at 8 rows
            // (three blocks an SM); four stages always
            for (String stages : new String[]{"auto", "2", "4"}) {
                withProperty("orbit.cuda.moeGateUpStages", stages, () -> {
                    String v = what + " (gate-up stages " + stages + ")";
                    Tensor act = poisoned(DType.BF16, pairs, n);
                    Tensor act2 = poisoned(DType.BF16, pairs, n);
                    gpu.moe().moeSwigluGrouped(x, dGate, dUp, routing, act);
                    gpu.moe().moeSwigluGrouped(x, dGate, dUp, routing, act2);
                    float[] a = gpu.toHost(act).toFloatArray();
                    assertBitsEqual("moeSwigluGrouped fused, run to run, " + v, a, gpu.toHost(act2).toFloatArray());
                    assertWithin("moeSwigluGrouped fused vs the reference, " + v, ref, a, tol);
                    assertWithin("moeSwigluGrouped fused vs unfused (one bf16 unit), " + v, aOld, a, unit);
                });
            }
        } finally {
            gpu.free(dGate);
            gpu.free(dUp);
        }
    }

    /** The down projection: bf16 x one row a pair (as the activation), fused shapes against the reference and the unfused launch. */
    private void down(String format, SplittableRandom r, int tokens, int k, int n, int[] ids, MoeRouting routing) {
        QuantizedTensor down = CudaQuantTest.random(format, r, EXPERTS * n, k);
        float[] dw = CudaQuantTest.dequantizeRef(down);
        QuantizedTensor dDown = gpu.toDevice(down);
        int pairs = ids.length;
        String what = format + " tokens " + tokens + " N " + n + " K " + k;
        try {
            float[] xv = bf16Round(randn(r, 1f, pairs, k).toFloatArray());
            Tensor x = dev(Tensor.of(xv, pairs, k).to(DType.BF16));
            Tensor yOld = poisoned(DType.F32, pairs, n);
            gpu.moe().moeFusedDecode(false);
            gpu.moe().moeMatmulGrouped(x, dDown, routing, yOld);
            float[] yOldV = gpu.toHost(yOld).toFloatArray();
            float[][] ref = product(xv, 1, ids, dw, n, k);
            double[] tol = new double[ref[0].length];
            for (int i = 0; i < tol.length; i++) {
                tol[i] = 1e-6 + 1e-5 * ref[1][i];
            }
            assertWithin("moeMatmulGrouped down, unfused, vs the reference, " + what, ref[0], yOldV, tol);
            gpu.moe().moeFusedDecode(true);
            for (String shortK : new String[]{"3", "4", "off"}) { // short K in three or four blocks an SM, or on the two-blocks kernel
                withProperty("orbit.cuda.moeShortK", shortK, () -> {
                    String v = what + " (short K " + shortK + ")";
                    Tensor y = poisoned(DType.F32, pairs, n);
                    gpu.moe().moeMatmulGrouped(x, dDown, routing, y);
                    float[] yv = gpu.toHost(y).toFloatArray();
                    assertWithin("moeMatmulGrouped down, fused shapes, vs the reference, " + v, ref[0], yv, tol);
                    assertBitsEqual("moeMatmulGrouped down, fused vs unfused shapes, " + v, yOldV, yv);
                });
            }
        } finally {
            gpu.free(dDown);
        }
    }

    /** {y[p] = x[p / div] · W_{ids[p]}ᵀ, Σ|x·w|} per element, double sums, [pairs, n] each. */
    private static float[][] product(float[] x, int div, int[] ids, float[] w, int n, int k) {
        float[] y = new float[ids.length * n];
        float[] abs = new float[y.length];
        for (int p = 0; p < ids.length; p++) {
            int xb = (p / div) * k;
            for (int o = 0; o < n; o++) {
                int wb = (ids[p] * n + o) * k;
                double s = 0;
                double sa = 0;
                for (int i = 0; i < k; i++) {
                    double v = (double) x[xb + i] * w[wb + i];
                    s += v;
                    sa += Math.abs(v);
                }
                y[p * n + o] = (float) s;
                abs[p * n + o] = (float) sa;
            }
        }
        return new float[][]{y, abs};
    }
}
