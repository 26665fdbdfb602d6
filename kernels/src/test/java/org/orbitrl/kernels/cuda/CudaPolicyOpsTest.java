package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.OptimizerOps;
import org.orbitrl.kernels.PolicyOps;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Per-token log-probs, their backward, AdamW and gradient statistics on the device against the
 * host implementations (PolicyOps, OptimizerOps). Tolerances: AdamW bitwise (every operation is
 * rounded on its own in the same order); log-probs 1e-6 + 1e-6·|ref| and their gradient
 * 1e-8 + 1e-6·|ref| (the sum of exponentials is a double sum in another order, then rounded to
 * f32); gradient statistics: the sum of squares within 1e-12 relative, the first non-finite
 * index exactly.
 */
class CudaPolicyOpsTest extends CudaTestBase {

    private static Tensor host(DType dtype, long... shape) {
        return Tensor.allocate(Arena.ofAuto(), dtype, shape);
    }

    @Test
    void tokenLogProbsAndBackward() {
        SplittableRandom r = rng(101);
        int[][] shapes = {{1, 1}, {3, 7}, {20, 256}, {9, 1000}, {4, 151_936}}; // {rows, vocab}
        for (int[] s : shapes) {
            int rows = s[0];
            int v = s[1];
            Tensor logits = randn(r, 8f, rows, v);
            int n = Math.max(1, rows - 1); // a subset of the rows, in shuffled order
            int[] rowIds = new int[n];
            int[] toks = new int[n];
            float[] g = new float[n];
            int[] perm = new int[rows];
            for (int i = 0; i < rows; i++) {
                perm[i] = i;
            }
            for (int i = rows - 1; i > 0; i--) {
                int j = r.nextInt(i + 1);
                int tmp = perm[i];
                perm[i] = perm[j];
                perm[j] = tmp;
            }
            for (int i = 0; i < n; i++) {
                rowIds[i] = perm[i];
                toks[i] = r.nextInt(v);
                g[i] = i % 3 == 2 ? 0f : (float) (r.nextDouble() * 2 - 1); // some zeros: skipped
            }
            Tensor tr = Tensor.ofInts(rowIds, n);
            Tensor tt = Tensor.ofInts(toks, n);
            Tensor tg = Tensor.of(g, n);
            Tensor dl = dev(logits);
            for (float temp : new float[]{0f, 0.7f, 1.3f}) {
                String what = "rows=" + rows + " vocab=" + v + " T=" + temp;
                Tensor ref = host(DType.F32, n);
                PolicyOps.tokenLogProbs(logits, tr, tt, temp, ref);
                Tensor out = poisoned(DType.F32, n);
                gpu.tokenLogProbs(dl, dev(tr), dev(tt), temp, out);
                assertClose("tokenLogProbs " + what, ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 1e-6, 1e-6);

                Tensor init = randn(r, 1e-3f, rows, v); // accumulates into existing values
                Tensor dref = host(DType.F32, rows, v);
                dref.copyFrom(init);
                PolicyOps.tokenLogProbsBackward(logits, tr, tt, tg, temp, dref);
                Tensor dd = dev(init);
                gpu.tokenLogProbsBackward(dl, dev(tr), dev(tt), dev(tg), temp, dd);
                assertClose("tokenLogProbsBackward " + what, dref.toFloatArray(), gpu.toHost(dd).toFloatArray(), 1e-8, 1e-6);
            }
        }
    }

    @Test
    void adamwIsBitwiseTheHostStep() {
        SplittableRandom r = rng(102);
        for (long[] shape : new long[][]{{1}, {33, 17}, {4096, 65}}) {
            Tensor p = randn(r, 1f, shape);
            Tensor m = host(DType.F32, shape);
            Tensor v = host(DType.F32, shape);
            Tensor dp = dev(p);
            Tensor dm = dev(m);
            Tensor dv = dev(v);
            for (int step = 1; step <= 3; step++) {
                Tensor g = randn(r, 0.5f, shape);
                boolean clipped = step == 2;
                double lr = 1e-3;
                OptimizerOps.AdamWStep s = new OptimizerOps.AdamWStep(clipped, 0.37f, 0.9f, (float) (1 - 0.9), 0.999f,
                        (float) (1 - 0.999), (float) (1 - lr * 0.01), (float) (lr / (1 - Math.pow(0.9, step))),
                        (float) Math.sqrt(1 - Math.pow(0.999, step)), 1e-8f);
                OptimizerOps.adamw(p, g, m, v, s);
                gpu.adamw(dp, dev(g), dm, dv, s);
                String what = java.util.Arrays.toString(shape) + " step " + step + (clipped ? " clipped" : "");
                assertClose("adamw param " + what, p.toFloatArray(), gpu.toHost(dp).toFloatArray(), 0, 0);
                assertClose("adamw exp_avg " + what, m.toFloatArray(), gpu.toHost(dm).toFloatArray(), 0, 0);
                assertClose("adamw exp_avg_sq " + what, v.toFloatArray(), gpu.toHost(dv).toFloatArray(), 0, 0);
            }
        }
    }

    @Test
    void gradientStats() {
        SplittableRandom r = rng(103);
        for (long n : new long[]{1, 1000, 4097, 5_000_003}) {
            Tensor g = randn(r, 2f, n);
            OptimizerOps.GradientStats ref = OptimizerOps.gradientStats(g);
            OptimizerOps.GradientStats got = gpu.gradientStats(dev(g));
            assertEquals(-1, got.firstNonFinite(), "no non-finite element, n=" + n);
            assertEquals(ref.sumOfSquares(), got.sumOfSquares(), 1e-12 * ref.sumOfSquares(), "sum of squares, n=" + n);
            if (n > 4097) {
                g.setFloat(Float.NaN, n - 5);
                g.setFloat(Float.NEGATIVE_INFINITY, 4100);
                g.setFloat(Float.POSITIVE_INFINITY, n - 1);
                ref = OptimizerOps.gradientStats(g);
                got = gpu.gradientStats(dev(g));
                assertEquals(4100, ref.firstNonFinite());
                assertEquals(ref.firstNonFinite(), got.firstNonFinite(), "first non-finite index, n=" + n);
                assertEquals(ref.sumOfSquares(), got.sumOfSquares(), 1e-12 * ref.sumOfSquares(), "finite sum of squares, n=" + n);
            }
        }
    }

    /**
     * The gradients' statistics in one call (one wait for the device): each equal to its own call's to the last bit
     * (the same blocks summed in the same order), over sizes from one element to several of the kernel's chunks, an
     * empty gradient among them, and a gradient with non-finite values whose first index is reported while the others'
     * stay clean.
     */
    @Test
    void gradientStatsOfManyInOneCallEqualEachOnItsOwn() {
        SplittableRandom r = rng(104);
        long[] sizes = {1, 0, 4097, 5_000_003, 1000, 300_000};
        List<Tensor> hosts = new ArrayList<>();
        List<Tensor> devs = new ArrayList<>();
        for (long n : sizes) {
            Tensor g = randn(r, 2f, Math.max(n, 1));
            if (n == 300_000) {
                g.setFloat(Float.NaN, 123_456);
                g.setFloat(Float.POSITIVE_INFINITY, 200_000);
            }
            Tensor d = dev(g);
            hosts.add(n == 0 ? g.slice(0, 0, 0) : g);
            devs.add(n == 0 ? d.slice(0, 0, 0) : d);
        }
        OptimizerOps.GradientStats[] all = gpu.gradientStats(devs);
        assertEquals(sizes.length, all.length);
        for (int i = 0; i < sizes.length; i++) {
            OptimizerOps.GradientStats one = gpu.gradientStats(devs.get(i));
            OptimizerOps.GradientStats ref = OptimizerOps.gradientStats(hosts.get(i));
            String what = "gradient " + i + " of " + sizes[i] + " elements";
            assertEquals(one.sumOfSquares(), all[i].sumOfSquares(), 0.0, what + ": the same sum as its own call");
            assertEquals(ref.firstNonFinite(), all[i].firstNonFinite(), what + ": first non-finite index");
            assertEquals(ref.sumOfSquares(), all[i].sumOfSquares(), 1e-12 * ref.sumOfSquares(), what + ": sum of squares");
        }
        assertEquals(123_456, all[5].firstNonFinite());
        assertEquals(0.0, all[1].sumOfSquares(), 0.0);
    }
}
