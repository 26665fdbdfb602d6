package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * RoPE (both pairings, full and partial rotary, strided heads, i32 and i64 positions) and causal
 * attention (GQA, sliding window, sinks, decode and chunked prefill offsets, strided q/k/v, head
 * dims up to 576) against the scalar backend. RoPE: |err| ≤ 1e-6 + 1e-6·|ref| (the device may
 * fuse multiply-adds). Attention: |err| ≤ 2e-6 + 2e-5·|ref| (online versus two-pass softmax, tree
 * versus sequential dot products), on the f32 kernels (the tensor-core prefill is turned off here;
 * CudaFlashAttentionTest checks it).
 */
class CudaRopeAttentionTest extends CudaTestBase {

    @Test
    void ropeBothStylesFullAndPartial() {
        SplittableRandom r = rng(51);
        int[][] cases = {{1, 1, 64, 64}, {7, 4, 128, 128}, {37, 3, 128, 64}, {5, 8, 64, 32}, {3, 2, 96, 96}}; // T, H, D, rotary
        for (RopeTable.Style style : RopeTable.Style.values()) {
            for (int[] c : cases) {
                int t = c[0];
                int h = c[1];
                int d = c[2];
                RopeTable table = RopeTable.of(RopeScaling.defaults(1_000_000, 4096), c[3], 4096, style);
                for (DType pt : new DType[]{DType.I32, DType.I64}) {
                    Tensor pos = Tensor.allocate(Arena.ofAuto(), pt, t);
                    for (int i = 0; i < t; i++) {
                        pos.setLong(r.nextInt(4096), i);
                    }
                    // x is a strided view: heads 1..h of a [T, h + 2, D] buffer
                    Tensor buf = randn(r, 2f, t, h + 2, d);
                    Tensor ref = buf.to(DType.F32);
                    cpu.rope(ref.slice(1, 1, h + 1), pos, table);
                    Tensor dbuf = dev(buf);
                    gpu.rope(dbuf.slice(1, 1, h + 1), dev(pos), table);
                    assertClose("rope " + style + " T=" + t + " H=" + h + " D=" + d + " rotary=" + c[3] + " " + pt,
                            ref.toFloatArray(), gpu.toHost(dbuf).toFloatArray(), 1e-6, 1e-6);
                }
            }
        }
    }

    @Test
    void ropePositionOutsideTableIsReported() {
        RopeTable table = RopeTable.of(RopeScaling.defaults(10_000, 16), 8, 16, RopeTable.Style.HALF);
        Tensor x = dev(randn(rng(52), 1f, 2, 1, 8));
        gpu.rope(x, dev(Tensor.ofInts(new int[]{3, 16}, 2)), table);
        IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("position 16"), e.getMessage());
    }

    /** T, S, queryStart, Hq, Hkv, D, Dv, window, sinks(0/1). */
    private static final int[][] ATTENTION = {
            {17, 17, 0, 4, 2, 64, 64, 0, 0},      // prefill, GQA 2
            {1, 100, 99, 8, 2, 128, 128, 0, 0},   // decode
            {5, 40, 35, 4, 4, 64, 64, 0, 0},      // chunked prefill, MHA
            {33, 33, 0, 4, 1, 64, 64, 8, 0},      // sliding window 8, MQA
            {20, 20, 0, 8, 2, 64, 64, 0, 1},      // sinks
            {9, 30, 21, 4, 2, 64, 64, 5, 1},      // window + sinks + offset
            {6, 6, 0, 2, 1, 192, 128, 0, 0},      // qk 192, v 128 (MLA-like)
            {3, 7, 4, 2, 1, 576, 512, 0, 0},      // absorbed-MLA-like head dims
            {2, 2, 0, 3, 3, 40, 24, 0, 0},        // head dims not multiples of 32
            {2, 5, 3, 2, 1, 6, 6, 0, 0},          // head dim not a multiple of 4 (scalar key loads)
            {2, 9, 7, 2, 1, 36, 20, 0, 0},        // an odd number of float4 per key row
            {3, 300, 297, 4, 2, 64, 64, 0, 1},    // many key tiles per warp, sinks
            {4, 260, 256, 2, 2, 128, 128, 100, 0}, // window cutting through a tile
            {40, 40, 0, 4, 2, 128, 128, 0, 0}};    // prefill over more than one tile

    @Test
    void causalAttentionMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "off", this::causalAttentionF32);
    }

    private void causalAttentionF32() {
        SplittableRandom r = rng(53);
        for (int[] c : ATTENTION) {
            int t = c[0], s = c[1], qs = c[2], hq = c[3], hkv = c[4], d = c[5], dv = c[6], win = c[7];
            Tensor sinks = c[8] == 1 ? randn(r, 2f, hq) : null;
            // q, k, v are views into one fused [T or S, Hq + 2*Hkv + 1, max(D, Dv)] buffer where shapes allow
            Tensor q = randn(r, 1f, t, hq, d);
            Tensor kvBuf = randn(r, 1f, s, 2 * hkv + 1, Math.max(d, dv));
            Tensor k = kvBuf.slice(1, 0, hkv).slice(2, 0, d);
            Tensor v = kvBuf.slice(1, hkv, 2 * hkv).slice(2, 0, dv);
            AttentionSpec specCpu = new AttentionSpec((float) (1 / Math.sqrt(d)), win, sinks);
            Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, t, hq, dv);
            cpu.attention(q, k, v, ref, qs, specCpu);

            Tensor dKv = dev(kvBuf);
            Tensor dk = dKv.slice(1, 0, hkv).slice(2, 0, d);
            Tensor dvv = dKv.slice(1, hkv, 2 * hkv).slice(2, 0, dv);
            AttentionSpec specGpu = new AttentionSpec(specCpu.scale(), win, sinks == null ? null : dev(sinks));
            Tensor out = poisoned(DType.F32, t, hq, dv);
            gpu.attention(dev(q), dk, dvv, out, qs, specGpu);
            assertClose(String.format("attention T=%d S=%d start=%d Hq=%d Hkv=%d D=%d Dv=%d window=%d sinks=%b",
                    t, s, qs, hq, hkv, d, dv, win, sinks != null), ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 2e-6, 2e-5);
        }
    }
}
