package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * RoPE backward and attention backward on the device against the scalar backend's host
 * reference (BackwardOps), and RoPE backward against the closed form "backward of forward is the
 * identity" (the rotation is orthogonal). Tolerances: rope 1e-6 + 1e-6·|ref| (the same four
 * products per pair); attention 1e-5 + 1e-4·|ref| (exp and dot products summed in another order
 * than the reference's sequential loops), for the tiled kernels (head dims up to 128) and for the
 * warp-per-row kernels (larger head dims, or {@code -Dorbit.cuda.attentionBackward=warp}), with
 * the tensor-core path turned off. The backward must also repeat bit for bit, on both paths.
 *
 * <p>The tensor-core backward ({@link CudaMmaAttention}, D = Dv ∈ {64, 128}) against the same
 * reference, every variant (bf16v2, bf16v3 and bf16v4 to the bf16 tolerance: the same roundings). TF32 with |err| ≤ 5e-3·max|ref| + 5e-3·|ref| per gradient: q, k, v and
 * dout are rounded to TF32 (relative error 2^-11 ≈ 4.9e-4 each), as are p and ds when they enter the
 * products, so scores and dp move by about 1e-3 of their spread and the gradients, sums of many such
 * terms, by a few 1e-4 of their largest element; 5e-3 leaves a margin of about 10. bf16 with
 * |err| ≤ 2e-2·max|ref| + 2e-2·|ref|: the same roundings at 2^-9 ≈ 2e-3 each move the gradients by
 * up to about 5e-3 of (max|ref| + |ref|) at these shapes (the same rounding simulated in f64 on the
 * host gives 3e-3 .. 5.2e-3, dk the largest: a sum over queries of products of three rounded
 * factors; worst measured on the H200: 0.24 of the bound, 0.27 against the f32 kernels); 2e-2
 * leaves a margin of about 4. Either way a misplaced key, mask or fragment shows up
 * as an error of order the scale. The tensor-core and f32 kernels must agree to the same
 * tolerances, forward and backward, and every path must repeat bit for bit.
 */
class CudaAttentionBackwardTest extends CudaTestBase {

    @Test
    void ropeBackwardMatchesReferenceAndInvertsForward() {
        SplittableRandom r = rng(81);
        int[][] cases = {{1, 1, 64, 64}, {7, 4, 128, 128}, {37, 3, 128, 64}, {5, 8, 64, 32}}; // T, H, D, rotary
        for (RopeTable.Style style : RopeTable.Style.values()) {
            for (int[] c : cases) {
                int t = c[0];
                int h = c[1];
                int d = c[2];
                RopeTable table = RopeTable.of(RopeScaling.defaults(1_000_000, 4096), c[3], 4096, style);
                int[] p = new int[t];
                for (int i = 0; i < t; i++) {
                    p[i] = r.nextInt(4096);
                }
                Tensor pos = Tensor.ofInts(p, t);
                Tensor dpos = dev(pos);
                String what = style + " T=" + t + " H=" + h + " D=" + d + " rotary=" + c[3];
                // a strided view: heads 1..h of a [T, h + 2, D] buffer
                Tensor buf = randn(r, 2f, t, h + 2, d);
                Tensor ref = buf.to(DType.F32);
                cpu.ropeBackward(ref.slice(1, 1, h + 1), pos, table);
                Tensor dbuf = dev(buf);
                gpu.ropeBackward(dbuf.slice(1, 1, h + 1), dpos, table);
                assertClose("ropeBackward " + what, ref.toFloatArray(), gpu.toHost(dbuf).toFloatArray(), 1e-6, 1e-6);

                Tensor x = dev(buf);
                gpu.rope(x, dpos, table);
                gpu.ropeBackward(x, dpos, table);
                assertClose("ropeBackward(rope(x)) = x " + what, buf.toFloatArray(), gpu.toHost(x).toFloatArray(), 2e-6, 2e-6);
            }
        }
    }

    /** T, S, queryStart, Hq, Hkv, D, Dv, window, sinks(0/1). */
    private static final int[][] CASES = {
            {1, 1, 0, 1, 1, 8, 8, 0, 0},          // one token
            {17, 17, 0, 4, 2, 64, 64, 0, 0},      // training prefill, GQA 2
            {5, 40, 35, 4, 4, 64, 64, 0, 0},      // queries after a cached prefix
            {33, 33, 0, 4, 1, 64, 64, 8, 0},      // sliding window 8, MQA
            {20, 20, 0, 8, 2, 64, 64, 0, 1},      // sinks
            {9, 30, 21, 4, 2, 64, 64, 5, 1},      // window + sinks + offset
            {6, 6, 0, 2, 1, 192, 128, 0, 0},      // qk 192, v 128
            {2, 2, 0, 3, 3, 40, 24, 0, 0},        // head dims not multiples of 32
            {40, 40, 0, 16, 2, 128, 128, 0, 0},   // GQA 8, head dim 128
            {512, 512, 0, 8, 1, 128, 128, 0, 0},  // 512 tokens, GQA 8, head dim 128
            {300, 300, 0, 8, 2, 64, 64, 0, 0},    // T not a multiple of the 32-row tile, head dim 64
            {77, 333, 256, 4, 2, 128, 128, 0, 1}, // queries after a cached prefix, sinks, ragged
            {200, 200, 0, 8, 1, 64, 64, 48, 1},   // sliding window 48 + sinks, ragged
            {64, 512, 448, 128, 32, 16, 16, 0, 0}}; // many kv heads: each group's heads split in two

    /** Cases also run on the warp-per-row kernels. */
    private static final int[][] WARP_CASES = {
            {17, 17, 0, 4, 2, 64, 64, 0, 0},
            {9, 30, 21, 4, 2, 64, 64, 5, 1},
            {40, 40, 0, 16, 2, 128, 128, 0, 0}};

    /** T, S, queryStart, Hq, Hkv, D (= Dv), window, sinks(0/1): the tensor-core backward. */
    private static final int[][] MMA_CASES = {
            {17, 17, 0, 4, 2, 64, 0, 0},        // training prefill, GQA 2, one block
            {5, 40, 35, 4, 4, 64, 0, 0},        // queries after a cached prefix, MHA (no split)
            {33, 33, 0, 4, 1, 64, 8, 0},        // sliding window 8, MQA
            {20, 20, 0, 8, 2, 64, 0, 1},        // sinks
            {9, 30, 21, 4, 2, 64, 5, 1},        // window + sinks + offset
            {40, 40, 0, 16, 2, 128, 0, 0},      // GQA 8, head dim 128
            {512, 512, 0, 8, 1, 128, 0, 0},     // 512 tokens, GQA 8, head dim 128
            {300, 300, 0, 8, 2, 64, 0, 0},      // T not a multiple of the tiles, head dim 64
            {77, 333, 256, 4, 2, 128, 0, 1},    // queries after a cached prefix, sinks, ragged
            {200, 200, 0, 8, 1, 64, 48, 1},     // sliding window 48 + sinks, ragged
            {130, 130, 0, 64, 8, 64, 128, 1},   // the gpt-oss head layout, window 128 + sinks
            {40, 100, 30, 4, 2, 128, 0, 0},     // keys past the last query's position (zero gradients)
            {64, 200, 136, 32, 16, 64, 0, 0},   // many kv heads: each group's heads split in two
            {16, 1024, 1008, 64, 16, 64, 0, 0}};  // groups of 4 heads split in two: 2 heads a block

    @Test
    void attentionBackwardMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "off", () -> check(CASES, rng(82), 0));
    }

    @Test
    void mmaBackwardMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "tf32", () -> check(MMA_CASES, rng(85), 5e-3));
    }

    @Test
    void bf16BackwardMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "bf16", () -> check(MMA_CASES, rng(87), 2e-2));
    }

    /** bf16v2: the bf16 roundings, the exponent in base 2; the same tolerance as bf16. */
    @Test
    void bf16v2BackwardMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "bf16v2", () -> check(MMA_CASES, rng(88), 2e-2));
    }

    /** bf16v3: bf16v2's arithmetic on staged bf16 copies, 64-key tiles in backward_q; the same tolerance. */
    @Test
    void bf16v3BackwardMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "bf16v3", () -> check(MMA_CASES, rng(89), 2e-2));
    }

    /** bf16v4: bf16v3 with blocks of 4 warps (64 queries or keys); the same tolerance. */
    @Test
    void bf16v4BackwardMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "bf16v4", () -> check(MMA_CASES, rng(90), 2e-2));
    }

    /**
     * bf16v4's forward keeps each row's statistics ({@code attentionWithStats}) and its backward, given them and the
     * forward's output, skips the forward's softmax: the same gradients as the full backward to 1e-5 of each
     * gradient's largest element (the statistics are the numbers the full backward's first pass computes, by the same
     * tiles; delta is summed in the same order from the same products), over every tensor-core case (offsets, windows,
     * sinks, GQA splits, head dims 64 and 128). The other variants keep none and leave lse as it was.
     */
    @Test
    void bf16v4BackwardFromTheForwardsStatisticsMatchesTheFullBackward() {
        SplittableRandom r = rng(91);
        int bitwise = 0;
        for (int[] c : MMA_CASES) {
            int t = c[0], s = c[1], qs = c[2], hq = c[3], hkv = c[4], d = c[5], win = c[6];
            Tensor q = dev(randn(r, 1f, t, hq, d));
            Tensor k = dev(randn(r, 1f, s, hkv, d));
            Tensor v = dev(randn(r, 1f, s, hkv, d));
            Tensor dout = dev(randn(r, 1f, t, hq, d));
            AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), win, c[7] == 1 ? dev(randn(r, 2f, hq)) : null);
            String what = String.format("T=%d S=%d start=%d Hq=%d Hkv=%d D=%d window=%d sinks=%b", t, s, qs, hq, hkv, d, win,
                    c[7] == 1);
            Tensor out = poisoned(DType.F32, t, hq, d);
            Tensor lse = poisoned(DType.F32, t, hq);
            Tensor[] full = {poisoned(DType.F32, t, hq, d), poisoned(DType.F32, s, hkv, d), poisoned(DType.F32, s, hkv, d)};
            Tensor[] fromStats = {poisoned(DType.F32, t, hq, d), poisoned(DType.F32, s, hkv, d), poisoned(DType.F32, s, hkv, d)};
            withProperty(CudaMmaAttention.PROPERTY, "bf16v4", () -> {
                assertTrue(gpu.keepsAttentionStats(), "bf16v4 keeps statistics");
                // the tensor-core forward takes 16 queries and more; fewer run the f32 kernels, which keep none
                boolean kept = gpu.attentionWithStats(q, k, v, out, qs, spec, lse);
                assertTrue(kept == t >= 16, "statistics kept (" + kept + ") where the tensor-core forward runs: " + what);
                gpu.attentionBackward(q, k, v, dout, qs, spec, full[0], full[1], full[2]);
                if (kept) {
                    gpu.attentionBackward(q, k, v, out, lse, dout, qs, spec, fromStats[0], fromStats[1], fromStats[2]);
                } else {
                    gpu.attentionBackward(q, k, v, dout, qs, spec, fromStats[0], fromStats[1], fromStats[2]);
                }
            });
            boolean same = true;
            for (int i = 0; i < 3; i++) {
                float[] ref = gpu.toHost(full[i]).toFloatArray();
                float[] got = gpu.toHost(fromStats[i]).toFloatArray();
                assertCloseToScale("backward from the forward's statistics, d" + "qkv".charAt(i) + " " + what, ref, got, 1e-5);
                same &= java.util.Arrays.equals(ref, got);
            }
            bitwise += same ? 1 : 0;
        }
        System.out.printf("bf16v4 backward from the forward's statistics: %d of %d cases equal to the full backward bit for bit%n",
                bitwise, MMA_CASES.length);

        Tensor q = dev(randn(r, 1f, 40, 4, 64));
        Tensor k = dev(randn(r, 1f, 40, 2, 64));
        Tensor out = poisoned(DType.F32, 40, 4, 64);
        Tensor lse = poisoned(DType.F32, 40, 4);
        AttentionSpec spec = new AttentionSpec(0.125f, 0, null);
        withProperty(CudaMmaAttention.PROPERTY, "bf16v3", () -> {
            assertTrue(!gpu.keepsAttentionStats() && !gpu.attentionWithStats(q, k, k, out, 0, spec, lse), "bf16v3 keeps none");
        });
        for (float x : gpu.toHost(lse).toFloatArray()) {
            assertTrue(Float.isNaN(x), "lse left as it was where no statistics are kept");
        }
    }

    @Test
    void mmaKernelsAgreeWithF32Kernels() {
        agreeWithF32("tf32", 5e-3);
    }

    @Test
    void bf16KernelsAgreeWithF32Kernels() {
        agreeWithF32("bf16", 2e-2);
    }

    @Test
    void bf16v2KernelsAgreeWithF32Kernels() {
        agreeWithF32("bf16v2", 2e-2);
    }

    @Test
    void bf16v3KernelsAgreeWithF32Kernels() {
        agreeWithF32("bf16v3", 2e-2);
    }

    @Test
    void bf16v4KernelsAgreeWithF32Kernels() {
        agreeWithF32("bf16v4", 2e-2);
    }

    private void agreeWithF32(String variant, double tol) {
        SplittableRandom r = rng(86);
        int[][] cases = {{300, 8, 2, 128, 0, 1}, {257, 16, 2, 64, 48, 0}}; // T, Hq, Hkv, D, window, sinks
        for (int[] c : cases) {
            int t = c[0], hq = c[1], hkv = c[2], d = c[3], win = c[4];
            Tensor q = dev(randn(r, 1f, t, hq, d));
            Tensor k = dev(randn(r, 1f, t, hkv, d));
            Tensor v = dev(randn(r, 1f, t, hkv, d));
            Tensor dout = dev(randn(r, 1f, t, hq, d));
            AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), win, c[5] == 1 ? dev(randn(r, 2f, hq)) : null);
            assertTrue(CudaMmaAttention.fits(q, k, v, dout), "the tensor-core kernels take the case");
            Tensor[][] outs = new Tensor[2][];
            for (int path = 0; path < 2; path++) {
                Tensor[] o = {poisoned(DType.F32, t, hq, d), poisoned(DType.F32, t, hq, d), poisoned(DType.F32, t, hkv, d),
                        poisoned(DType.F32, t, hkv, d)};
                withProperty(CudaMmaAttention.PROPERTY, path == 0 ? "off" : variant, () -> {
                    gpu.attention(q, k, v, o[0], 0, spec);
                    gpu.attentionBackward(q, k, v, dout, 0, spec, o[1], o[2], o[3]);
                });
                outs[path] = o;
            }
            String what = String.format("T=%d Hq=%d Hkv=%d D=%d window=%d sinks=%b", t, hq, hkv, d, win, c[5] == 1);
            String[] names = {"out", "dq", "dk", "dv"};
            for (int i = 0; i < 4; i++) {
                assertCloseToScale(variant + " vs f32 kernels " + names[i] + " " + what, gpu.toHost(outs[0][i]).toFloatArray(),
                        gpu.toHost(outs[1][i]).toFloatArray(), tol);
            }
        }
    }

    @Test
    void warpKernelsMatchReference() {
        String key = CudaAttentionBackward.KERNELS_PROPERTY;
        String old = System.getProperty(key);
        System.setProperty(key, "warp");
        try {
            check(WARP_CASES, rng(83), 0);
        } finally {
            if (old == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, old);
            }
        }
    }

    @Test
    void attentionBackwardRepeatsBitForBit() {
        withProperty(CudaMmaAttention.PROPERTY, "bf16", () -> repeatsBitForBit("bf16 tensor cores"));
        withProperty(CudaMmaAttention.PROPERTY, "bf16v2", () -> repeatsBitForBit("bf16v2 tensor cores"));
        withProperty(CudaMmaAttention.PROPERTY, "bf16v3", () -> repeatsBitForBit("bf16v3 tensor cores"));
        withProperty(CudaMmaAttention.PROPERTY, "bf16v4", () -> repeatsBitForBit("bf16v4 tensor cores"));
        withProperty(CudaMmaAttention.PROPERTY, "tf32", () -> repeatsBitForBit("tf32 tensor cores"));
        withProperty(CudaMmaAttention.PROPERTY, "off", () -> repeatsBitForBit("f32"));
    }

    private void repeatsBitForBit(String path) {
        SplittableRandom r = rng(84);
        int t = 300;
        int hq = 8;
        int hkv = 2;
        int d = 128;
        Tensor q = dev(randn(r, 1f, t, hq, d));
        Tensor k = dev(randn(r, 1f, t, hkv, d));
        Tensor v = dev(randn(r, 1f, t, hkv, d));
        Tensor dout = dev(randn(r, 1f, t, hq, d));
        AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), 0, dev(randn(r, 2f, hq)));
        float[][] first = null;
        for (int run = 0; run < 3; run++) {
            Tensor gq = poisoned(DType.F32, t, hq, d);
            Tensor gk = poisoned(DType.F32, t, hkv, d);
            Tensor gv = poisoned(DType.F32, t, hkv, d);
            gpu.attentionBackward(q, k, v, dout, 0, spec, gq, gk, gv);
            float[][] got = {gpu.toHost(gq).toFloatArray(), gpu.toHost(gk).toFloatArray(), gpu.toHost(gv).toFloatArray()};
            if (first == null) {
                first = got;
            } else {
                for (int i = 0; i < 3; i++) {
                    assertClose("attentionBackward (" + path + ") run " + run + " against run 0, output " + "qkv".charAt(i), first[i], got[i], 0, 0);
                }
            }
        }
    }

    /**
     * Cases as {@link #CASES}, or (mmaTol above 0) as {@link #MMA_CASES} checked on the tensor-core path
     * to mmaTol of the scale.
     */
    private void check(int[][] cases, SplittableRandom r, double mmaTol) {
        boolean mma = mmaTol > 0;
        for (int[] cs : cases) {
            int[] c = mma ? new int[]{cs[0], cs[1], cs[2], cs[3], cs[4], cs[5], cs[5], cs[6], cs[7]} : cs;
            int t = c[0], s = c[1], qs = c[2], hq = c[3], hkv = c[4], d = c[5], dv = c[6], win = c[7];
            Tensor sinks = c[8] == 1 ? randn(r, 2f, hq) : null;
            Tensor q = randn(r, 1f, t, hq, d);
            // k and v are strided views into one [S, 2*Hkv + 1, max(D, Dv)] buffer
            Tensor kvBuf = randn(r, 1f, s, 2 * hkv + 1, Math.max(d, dv));
            Tensor k = kvBuf.slice(1, 0, hkv).slice(2, 0, d);
            Tensor v = kvBuf.slice(1, hkv, 2 * hkv).slice(2, 0, dv);
            Tensor dout = randn(r, 1f, t, hq, dv);
            AttentionSpec specCpu = new AttentionSpec((float) (1 / Math.sqrt(d)), win, sinks);
            Tensor rq = Tensor.allocate(Arena.ofAuto(), DType.F32, t, hq, d);
            Tensor rk = Tensor.allocate(Arena.ofAuto(), DType.F32, s, hkv, d);
            Tensor rv = Tensor.allocate(Arena.ofAuto(), DType.F32, s, hkv, dv);
            cpu.attentionBackward(q, k, v, dout, qs, specCpu, rq, rk, rv);

            Tensor dKv = dev(kvBuf);
            AttentionSpec specGpu = new AttentionSpec(specCpu.scale(), win, sinks == null ? null : dev(sinks));
            Tensor gq = poisoned(DType.F32, t, hq, d);
            Tensor gk = poisoned(DType.F32, s, hkv, d);
            Tensor gv = poisoned(DType.F32, s, hkv, dv);
            Tensor gkIn = dKv.slice(1, 0, hkv).slice(2, 0, d);
            Tensor gvIn = dKv.slice(1, hkv, 2 * hkv).slice(2, 0, dv);
            Tensor gqIn = dev(q);
            Tensor goIn = dev(dout);
            gpu.attentionBackward(gqIn, gkIn, gvIn, goIn, qs, specGpu, gq, gk, gv);
            String what = String.format("T=%d S=%d start=%d Hq=%d Hkv=%d D=%d Dv=%d window=%d sinks=%b",
                    t, s, qs, hq, hkv, d, dv, win, sinks != null);
            if (mma) {
                assertTrue(CudaMmaAttention.fits(gqIn, gkIn, gvIn, goIn), "the tensor-core kernels take " + what);
                String path = CudaMmaAttention.variant() + " attentionBackward ";
                assertCloseToScale(path + "dq " + what, rq.toFloatArray(), gpu.toHost(gq).toFloatArray(), mmaTol);
                assertCloseToScale(path + "dk " + what, rk.toFloatArray(), gpu.toHost(gk).toFloatArray(), mmaTol);
                assertCloseToScale(path + "dv " + what, rv.toFloatArray(), gpu.toHost(gv).toFloatArray(), mmaTol);
                continue;
            }
            assertClose("attentionBackward dq " + what, rq.toFloatArray(), gpu.toHost(gq).toFloatArray(), 1e-5, 1e-4);
            assertClose("attentionBackward dk " + what, rk.toFloatArray(), gpu.toHost(gk).toFloatArray(), 1e-5, 1e-4);
            assertClose("attentionBackward dv " + what, rv.toFloatArray(), gpu.toHost(gv).toFloatArray(), 1e-5, 1e-4);
        }
    }
}
