package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.nn.Weight;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's block-diagonal output projection wo_a ({@link GroupedOutput}, a backend product a head group) against
 * the closed form in double over the weight's exact values: y[t, g, j] = Σ_i o[t, g·in + i] · W[g·r + j, i], and the
 * backward's dx[t, g·in + i] = Σ_j dy[t, g, j] · W[g·r + j, i], within 1e-5 of each output's largest magnitude; seeded
 * inputs, a bf16 weight and an FP8 one in 128×128 blocks (each group's rows a view of it). The rows of a few tokens
 * equal the same tokens' rows inside a longer batch bit for bit (what exact mode's recompute needs).
 */
class GroupedOutputTest {
    private final Backend cpu = Backends.cpu();

    @Test
    void bf16WeightMatchesTheClosedForm() {
        int n = 5;
        int groups = 3;
        int in = 16;
        int r = 8;
        SplittableRandom rnd = new SplittableRandom(30);
        Tensor w = Tensor.of(random(rnd, groups * r * in), (long) groups * r, in).to(DType.BF16);
        check(new GroupedOutput(Weight.of(w), groups, in, r), cpu, w.toFloatArray(), rnd, n, groups, in, r);
    }

    @Test
    void fp8BlockWeightMatchesTheClosedFormOverItsDecodedValues() {
        int n = 4;
        int groups = 2;
        int in = 160;   // a partial column block
        int r = 128;
        SplittableRandom rnd = new SplittableRandom(31);
        QuantizedTensor q = Fp8Block128Ue8m0.INSTANCE.quantize(Tensor.of(random(rnd, groups * r * in), (long) groups * r, in));
        Weight w = Weight.of(q);
        assertTrue(GroupedOutput.viewable(w, r));
        assertFalse(GroupedOutput.viewable(w, 64), "a group of half a block is not a view");
        check(new GroupedOutput(w, groups, in, r), cpu, Weight.decoded(w).toFloatArray(), rnd, n, groups, in, r);
    }

    /**
     * An FP8 weight in device memory on a backend with the grouped form ({@link org.orbitrl.model.StrictBackend}'s, as
     * the CUDA backend's): every group in one call, its operands device memory and contiguous, against the closed form
     * at 1 and 5 tokens; the backward, a group at a time, likewise.
     */
    @Test
    void aBackendsGroupedFormTakesEveryGroupInOneCall() {
        int groups = 2;
        int in = 160;
        int r = 128;
        SplittableRandom rnd = new SplittableRandom(33);
        QuantizedTensor q = Fp8Block128Ue8m0.INSTANCE.quantize(Tensor.of(random(rnd, groups * r * in), (long) groups * r, in));
        float[] wv = Weight.decoded(Weight.of(q)).toFloatArray();
        try (org.orbitrl.model.StrictBackend strict = new org.orbitrl.model.StrictBackend()) {
            Weight placed = org.orbitrl.model.nn.Placement.weight(strict.allocator(), Weight.of(q));
            assertTrue(placed instanceof Weight.Quantized pq && strict.allocator().owns(pq.w().codes()), "FP8 in device memory");
            GroupedOutput p = new GroupedOutput(placed, groups, in, r);
            for (int n : new int[]{1, 5}) {
                check(p, strict, wv, rnd, n, groups, in, r);
            }
        }
    }

    @Test
    void aShapeThatDoesNotAgreeIsNamed() {
        Tensor w = Tensor.of(new float[6 * 4], 6, 4);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new GroupedOutput(Weight.of(w), 4, 4, 2));
        assertTrue(e.getMessage().contains("wo_a") && e.getMessage().contains("[8, 4]"), e.getMessage());
    }

    @Test
    void aTokensRowsDoNotDependOnTheBatch() {
        int groups = 4;
        int in = 64;
        int r = 32;
        SplittableRandom rnd = new SplittableRandom(32);
        Tensor w = Tensor.of(random(rnd, groups * r * in), (long) groups * r, in);
        GroupedOutput p = new GroupedOutput(Weight.of(w), groups, in, r);
        int n = 300;
        int few = 3;
        float[] o = random(rnd, n * groups * in);
        float[] dy = random(rnd, n * groups * r);
        float[][] all = run(p, cpu, o, dy, n);
        float[][] some = run(p, cpu, Arrays.copyOf(o, few * groups * in), Arrays.copyOf(dy, few * groups * r), few);
        assertArrayEquals(Arrays.copyOf(all[0], few * groups * r), some[0], "y of the first tokens");
        assertArrayEquals(Arrays.copyOf(all[1], few * groups * in), some[1], "dx of the first tokens");
        // on device memory: a group at a time (300 tokens), every group through one copy each way (3), views (1)
        try (org.orbitrl.model.StrictBackend strict = new org.orbitrl.model.StrictBackend()) {
            GroupedOutput pd = new GroupedOutput(Weight.of(strict.allocator().upload(org.orbitrl.kernels.MemoryCategory.BASE_WEIGHTS, w)),
                    groups, in, r);
            float[][] dev = run(pd, strict, o, dy, n);
            for (int k : new int[]{few, 1}) {
                float[][] part = run(pd, strict, Arrays.copyOf(o, k * groups * in), Arrays.copyOf(dy, k * groups * r), k);
                assertArrayEquals(Arrays.copyOf(dev[0], k * groups * r), part[0], "y of the first " + k + " tokens on the device");
                assertArrayEquals(Arrays.copyOf(dev[1], k * groups * in), part[1], "dx of the first " + k + " tokens on the device");
            }
        }
    }

    /** The forward's output and o's gradient for dy, on {@code b}. */
    static float[][] run(GroupedOutput p, Backend b, float[] o, float[] dy, int n) {
        GradTape tape = new GradTape();
        Node on = new Node(o);
        Node y = p.forward(tape, b, on, n);
        System.arraycopy(dy, 0, y.grad(), 0, dy.length);
        tape.backward();
        return new float[][] {y.v(), on.grad()};
    }

    /** p on {@code b} against the closed form over the weight's values wv [groups·r, in]. */
    static void check(GroupedOutput p, Backend b, float[] wv, SplittableRandom rnd, int n, int groups, int in, int r) {
        float[] o = random(rnd, n * groups * in);
        float[] dy = random(rnd, n * groups * r);
        float[][] got = run(p, b, o, dy, n);
        double[] wantY = new double[n * groups * r];
        double[] wantDx = new double[o.length];
        for (int t = 0; t < n; t++) {
            for (int g = 0; g < groups; g++) {
                for (int j = 0; j < r; j++) {
                    double s = 0;
                    for (int i = 0; i < in; i++) {
                        s += (double) o[t * groups * in + g * in + i] * wv[(g * r + j) * in + i];
                        wantDx[t * groups * in + g * in + i] += (double) dy[(t * groups + g) * r + j] * wv[(g * r + j) * in + i];
                    }
                    wantY[(t * groups + g) * r + j] = s;
                }
            }
        }
        close("y", wantY, got[0]);
        close("dx", wantDx, got[1]);
    }

    private static void close(String what, double[] want, float[] got) {
        double scale = 0;
        for (double w : want) {
            scale = Math.max(scale, Math.abs(w));
        }
        assertTrue(scale > 0, what + " is all zero");
        assertEquals(want.length, got.length, what);
        for (int i = 0; i < want.length; i++) {
            assertEquals(want[i], got[i], 1e-5 * scale, what + "[" + i + "]");
        }
    }

    /** Uniform in [-1, 1). */
    static float[] random(SplittableRandom r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return v;
    }
}
