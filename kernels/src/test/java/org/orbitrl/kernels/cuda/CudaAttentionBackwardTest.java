package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

/**
 * RoPE backward and attention backward on the device against the scalar backend's host
 * reference (BackwardOps), and RoPE backward against the closed form "backward of forward is the
 * identity" (the rotation is orthogonal). Tolerances: rope 1e-6 + 1e-6·|ref| (the same four
 * products per pair); attention 1e-5 + 1e-4·|ref| (exp and dot products summed in another order
 * than the reference's sequential loops), for the tiled kernels (head dims up to 128) and for the
 * warp-per-row kernels (larger head dims, or {@code -Dorbit.cuda.attentionBackward=warp}). The
 * backward must also repeat bit for bit.
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

    @Test
    void attentionBackwardMatchesReference() {
        check(CASES, rng(82));
    }

    @Test
    void warpKernelsMatchReference() {
        String key = CudaAttentionBackward.KERNELS_PROPERTY;
        String old = System.getProperty(key);
        System.setProperty(key, "warp");
        try {
            check(WARP_CASES, rng(83));
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
                    assertClose("attentionBackward run " + run + " against run 0, output " + "qkv".charAt(i), first[i], got[i], 0, 0);
                }
            }
        }
    }

    private void check(int[][] cases, SplittableRandom r) {
        for (int[] c : cases) {
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
            gpu.attentionBackward(dev(q), dKv.slice(1, 0, hkv).slice(2, 0, d), dKv.slice(1, hkv, 2 * hkv).slice(2, 0, dv),
                    dev(dout), qs, specGpu, gq, gk, gv);
            String what = String.format("T=%d S=%d start=%d Hq=%d Hkv=%d D=%d Dv=%d window=%d sinks=%b",
                    t, s, qs, hq, hkv, d, dv, win, sinks != null);
            assertClose("attentionBackward dq " + what, rq.toFloatArray(), gpu.toHost(gq).toFloatArray(), 1e-5, 1e-4);
            assertClose("attentionBackward dk " + what, rk.toFloatArray(), gpu.toHost(gk).toFloatArray(), 1e-5, 1e-4);
            assertClose("attentionBackward dv " + what, rv.toFloatArray(), gpu.toHost(gv).toFloatArray(), 1e-5, 1e-4);
        }
    }
}
