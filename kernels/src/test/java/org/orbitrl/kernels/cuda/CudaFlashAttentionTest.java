package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;

/**
 * The tiled prefill kernel (taken from 16 queries on) and the paged decode kernel against the
 * scalar backend's attention: GQA/MQA/MHA, sliding windows cutting through tiles, sinks, chunked
 * prefill offsets, ragged sequence lengths over shuffled cache blocks, query counts that leave a
 * block's last warps idle. Tolerance |err| ≤ 2e-6 + 2e-5·|ref| (f32 throughout, outputs are convex
 * combinations of values of magnitude ≤ 1); the f32 prefill kernel is checked with the tensor-core
 * path turned off.
 *
 * <p>The tensor-core prefill ({@link CudaMmaAttention}, D = Dv ∈ {64, 128}) against the same
 * reference, both variants. TF32 with |err| ≤ 5e-3·max|ref| + 5e-3·|ref|: its inputs are rounded to
 * TF32 (relative error 2^-11 ≈ 4.9e-4 each), which moves the scores by about 1e-3 for these
 * unit-scale inputs and the outputs, convex combinations of values, by a few 1e-4 of their scale;
 * 5e-3 leaves a margin of about 10. bf16 with |err| ≤ 2e-2·max|ref| + 2e-2·|ref|: q, k, v and the
 * probabilities are rounded to bf16 (relative error 2^-9 ≈ 2e-3 each), so a score (D products)
 * moves by about 4e-3 and an output by up to about 3.5e-3 of (max|ref| + |ref|) at these shapes
 * (the same rounding simulated in f64 on the host gives 2e-3 .. 3.5e-3; worst measured on the H200:
 * 0.14 of the bound); 2e-2 leaves a margin of about 5. Either way a misplaced key, mask or fragment shows up as an error of order the scale.
 */
class CudaFlashAttentionTest extends CudaTestBase {

    /** T, queryStart, Hq, Hkv, D, Dv, window, sinks(0/1). */
    private static final int[][] PREFILL = {
            {16, 0, 4, 2, 64, 64, 0, 0},
            {37, 0, 8, 2, 128, 128, 0, 1},
            {70, 30, 4, 1, 64, 32, 0, 0},
            {100, 0, 6, 3, 128, 128, 40, 0},
            {50, 11, 4, 4, 96, 64, 7, 1},
            {129, 0, 2, 1, 32, 128, 0, 0}};

    @Test
    void prefillMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "off", this::prefillF32);
    }

    private void prefillF32() {
        SplittableRandom r = rng(61);
        for (int[] c : PREFILL) {
            int t = c[0], qs = c[1], hq = c[2], hkv = c[3], d = c[4], dv = c[5], win = c[6];
            int s = qs + t;
            Tensor sinks = c[7] == 1 ? randn(r, 2f, hq) : null;
            Tensor q = randn(r, 1f, t, hq, d);
            Tensor k = randn(r, 1f, s, hkv, d);
            Tensor v = randn(r, 1f, s, hkv, dv);
            AttentionSpec specCpu = new AttentionSpec((float) (1 / Math.sqrt(d)), win, sinks);
            Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, t, hq, dv);
            cpu.attention(q, k, v, ref, qs, specCpu);
            AttentionSpec specGpu = new AttentionSpec(specCpu.scale(), win, sinks == null ? null : dev(sinks));
            Tensor out = poisoned(DType.F32, t, hq, dv);
            gpu.attention(dev(q), dev(k), dev(v), out, qs, specGpu);
            assertClose(String.format("prefill T=%d start=%d Hq=%d Hkv=%d D=%d Dv=%d window=%d sinks=%b", t, qs, hq, hkv, d, dv, win,
                    sinks != null), ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 2e-6, 2e-5);
        }
    }

    /** T, queryStart, Hq, Hkv, D (= Dv), window, sinks(0/1): the tensor-core prefill. */
    private static final int[][] MMA_PREFILL = {
            {16, 0, 4, 2, 64, 0, 0},        // one block, its last three warps idle
            {37, 0, 8, 2, 128, 0, 1},       // ragged, sinks
            {70, 30, 4, 1, 64, 0, 0},       // queries after a cached prefix, MQA
            {100, 0, 6, 3, 128, 40, 0},     // window cutting through tiles
            {130, 11, 8, 1, 64, 7, 1},      // GQA 8, short window, sinks, offset
            {512, 0, 8, 1, 128, 0, 0},      // 512 tokens, GQA 8
            {300, 212, 4, 2, 128, 48, 1},   // ragged after a prefix, window + sinks
            {65, 0, 16, 2, 64, 128, 1}};    // one query past a block, window longer than the sequence

    @Test
    void mmaPrefillMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "tf32", () -> mmaPrefill("tf32", 5e-3));
    }

    @Test
    void bf16PrefillMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "bf16", () -> mmaPrefill("bf16", 2e-2));
    }

    /** bf16v2: the bf16 roundings, the exponent in base 2; the same tolerance as bf16. */
    @Test
    void bf16v2PrefillMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "bf16v2", () -> mmaPrefill("bf16v2", 2e-2));
    }

    /** bf16v4: the bf16v2 arithmetic on bf16 copies of k and v, 64-query blocks of 4 warps; the same tolerance. */
    @Test
    void bf16v4PrefillMatchesReference() {
        withProperty(CudaMmaAttention.PROPERTY, "bf16v4", () -> mmaPrefill("bf16v4", 2e-2));
    }

    private void mmaPrefill(String variant, double tol) {
        SplittableRandom r = rng(62);
        for (int[] c : MMA_PREFILL) {
            int t = c[0], qs = c[1], hq = c[2], hkv = c[3], d = c[4], win = c[5];
            int s = qs + t;
            Tensor sinks = c[6] == 1 ? randn(r, 2f, hq) : null;
            // q a view of [T, Hq + 1, D]; k and v views of one [S, 2 Hkv + 1, D] buffer
            Tensor qBuf = randn(r, 1f, t, hq + 1, d);
            Tensor kvBuf = randn(r, 1f, s, 2 * hkv + 1, d);
            Tensor q = qBuf.slice(1, 1, hq + 1);
            Tensor k = kvBuf.slice(1, 0, hkv);
            Tensor v = kvBuf.slice(1, hkv, 2 * hkv);
            AttentionSpec specCpu = new AttentionSpec((float) (1 / Math.sqrt(d)), win, sinks);
            Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, t, hq, d);
            cpu.attention(q, k, v, ref, qs, specCpu);
            Tensor dQ = dev(qBuf).slice(1, 1, hq + 1);
            Tensor dKv = dev(kvBuf);
            Tensor dk = dKv.slice(1, 0, hkv);
            Tensor dvv = dKv.slice(1, hkv, 2 * hkv);
            org.junit.jupiter.api.Assertions.assertTrue(CudaMmaAttention.fits(dQ, dk, dvv), "the tensor-core kernels take the case");
            AttentionSpec specGpu = new AttentionSpec(specCpu.scale(), win, sinks == null ? null : dev(sinks));
            Tensor out = poisoned(DType.F32, t, hq, d);
            gpu.attention(dQ, dk, dvv, out, qs, specGpu);
            assertCloseToScale(String.format("%s prefill T=%d start=%d Hq=%d Hkv=%d D=%d window=%d sinks=%b", variant, t, qs,
                    hq, hkv, d, win, sinks != null), ref.toFloatArray(), gpu.toHost(out).toFloatArray(), tol);
        }
    }

    /** Hq, Hkv, D, Dv, blockSize, window, sinks(0/1), then the sequence lengths. */
    private static final int[][] PAGED = {
            {8, 2, 128, 128, 16, 0, 0, 1, 45, 130},
            {4, 4, 64, 64, 8, 0, 1, 17, 3},
            {8, 1, 64, 32, 32, 20, 0, 90, 33, 64, 1},
            {6, 2, 96, 128, 16, 0, 0, 700}};

    @Test
    void pagedDecodeMatchesContiguousReference() {
        SplittableRandom r = rng(62);
        for (int[] c : PAGED) {
            int hq = c[0], hkv = c[1], d = c[2], dv = c[3], bs = c[4], win = c[5];
            int b = c.length - 7;
            int[] lens = new int[b];
            int maxBlocks = 0;
            int totalBlocks = 0;
            for (int i = 0; i < b; i++) {
                lens[i] = c[7 + i];
                int nb = (lens[i] + bs - 1) / bs;
                maxBlocks = Math.max(maxBlocks, nb);
                totalBlocks += nb;
            }
            int poolBlocks = totalBlocks + 3; // spare blocks hold garbage the kernel must not read
            List<Integer> perm = new ArrayList<>();
            for (int i = 0; i < poolBlocks; i++) {
                perm.add(i);
            }
            Collections.shuffle(perm, new java.util.Random(r.nextLong()));
            int[] tables = new int[b * maxBlocks];
            java.util.Arrays.fill(tables, -1); // unused table slots are never read
            int next = 0;
            for (int i = 0; i < b; i++) {
                for (int j = 0; j < (lens[i] + bs - 1) / bs; j++) {
                    tables[i * maxBlocks + j] = perm.get(next++);
                }
            }
            Tensor kc = randn(r, 1f, (long) poolBlocks * bs, (long) hkv * d);
            Tensor vc = randn(r, 1f, (long) poolBlocks * bs, (long) hkv * dv);
            Tensor q = randn(r, 1f, b, hq, d);
            Tensor sinks = c[6] == 1 ? randn(r, 2f, hq) : null;
            AttentionSpec specCpu = new AttentionSpec((float) (1 / Math.sqrt(d)), win, sinks);

            float[] ref = new float[b * hq * dv];
            for (int i = 0; i < b; i++) {
                Tensor k = Tensor.allocate(Arena.ofAuto(), DType.F32, lens[i], hkv, d);
                Tensor v = Tensor.allocate(Arena.ofAuto(), DType.F32, lens[i], hkv, dv);
                for (int s = 0; s < lens[i]; s++) {
                    long row = (long) tables[i * maxBlocks + s / bs] * bs + s % bs;
                    k.select(0, s).copyFrom(kc.select(0, row).reshape(hkv, d));
                    v.select(0, s).copyFrom(vc.select(0, row).reshape(hkv, dv));
                }
                Tensor o = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, hq, dv);
                cpu.attention(q.slice(0, i, i + 1).contiguous(), k, v, o, lens[i] - 1, specCpu);
                System.arraycopy(o.toFloatArray(), 0, ref, i * hq * dv, hq * dv);
            }
            AttentionSpec specGpu = new AttentionSpec(specCpu.scale(), win, sinks == null ? null : dev(sinks));
            Tensor out = poisoned(DType.F32, b, hq, dv);
            gpu.pagedDecodeAttention(dev(q), dev(kc), dev(vc), dev(Tensor.ofInts(tables, b, maxBlocks)), dev(Tensor.ofInts(lens, b)),
                    bs, hkv, out, specGpu);
            assertClose(String.format("paged decode Hq=%d Hkv=%d D=%d Dv=%d block=%d window=%d sinks=%b lens=%s", hq, hkv, d, dv, bs, win,
                    sinks != null, java.util.Arrays.toString(lens)), ref, gpu.toHost(out).toFloatArray(), 2e-6, 2e-5);
        }
    }
}
