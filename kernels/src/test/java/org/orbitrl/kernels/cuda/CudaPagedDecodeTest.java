package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Paged decode attention (the default, non-exact path: the tiled kernels of {@code paged_decode.cu}
 * for query groups up to 8, the per-warp kernel above) against the scalar backend's attention over
 * the same keys gathered contiguously: batches of 1, 3 and 64 with ragged contexts (1, 17, 512,
 * 1000 keys and random ones) and of 140 short ones (one key split), sliding windows, sinks, GQA
 * 8:1, 3:1 and 1:1 and a 16:1 group, head dims 128, 96, 64 (Dv 32 to 128), cache blocks of 16 and
 * 32 handed out in a shuffled order with spare blocks of garbage, q and out as strided views whose padding must stay untouched. Every case
 * runs on the default backend (2 query heads a warp) and on sibling backends made with
 * {@code -Dorbit.cuda.pagedDecode=heads4} (4 heads a warp) and {@code =old} (the per-warp kernel kept
 * as the fallback). Tolerance |err| ≤ 2e-6 + 2e-5·|ref| (f32 throughout; outputs are
 * convex combinations of values of magnitude ≤ 1). A bf16 cache against an f32 one of the same values: equal bits
 * (tiled kernels). The tensor-core kernel over a bf16 cache: within its rounding bound of the exact attention.
 */
class CudaPagedDecodeTest extends CudaTestBase {
    private static final double ATOL = 2e-6;
    private static final double RTOL = 2e-5;

    /** One decode batch: heads, dims, cache block size, window, sinks and the sequences' key counts. */
    private record Case(int hq, int hkv, int d, int dv, int blockSize, int window, boolean sinks, int[] lens) {
        @Override
        public String toString() {
            return String.format("Hq=%d Hkv=%d D=%d Dv=%d block=%d window=%d sinks=%b B=%d lens=%s", hq, hkv, d, dv, blockSize, window,
                    sinks, lens.length, lens.length <= 8 ? Arrays.toString(lens) : Arrays.toString(Arrays.copyOf(lens, 8)) + "...");
        }
    }

    /** {@code b} key counts: 1, 17, 512, 1000 first, then uniform in [1, 1000]. */
    private static int[] ragged(SplittableRandom r, int b) {
        int[] fixed = {1, 17, 512, 1000};
        int[] lens = new int[b];
        for (int i = 0; i < b; i++) {
            lens[i] = i < fixed.length ? fixed[i] : 1 + r.nextInt(1000);
        }
        return lens;
    }

    /** {@code b} key counts from 1 to 90. */
    private static int[] shortContexts(int b) {
        int[] lens = new int[b];
        for (int i = 0; i < b; i++) {
            lens[i] = 1 + (i * 37) % 90;
        }
        return lens;
    }

    private static List<Case> cases() {
        SplittableRandom r = rng(64);
        return List.of(
                new Case(8, 1, 128, 128, 16, 0, false, new int[]{1000}),
                new Case(8, 1, 128, 128, 32, 0, true, new int[]{1, 17, 512}),
                new Case(4, 4, 64, 64, 16, 0, false, new int[]{17, 1000, 1}),
                new Case(16, 2, 128, 128, 16, 100, true, new int[]{512, 1000, 17}),
                new Case(32, 4, 128, 128, 16, 0, false, ragged(r, 64)),
                new Case(8, 8, 64, 64, 32, 37, false, ragged(r, 64)),
                new Case(6, 2, 96, 128, 32, 0, true, new int[]{700, 33, 64}),
                new Case(8, 2, 128, 32, 16, 16, false, new int[]{1, 40, 1000}),
                new Case(16, 1, 64, 64, 16, 0, true, new int[]{5, 70, 512}),
                new Case(8, 4, 64, 64, 16, 20, true, shortContexts(140))); // enough blocks for one split
    }

    @Test
    void everyPagedDecodeKernelMatchesReference() {
        SplittableRandom r = rng(65);
        everyKernel((c, backends, names) -> check(c, r, backends, names));
    }

    /** One case on the backends of every paged decode kernel, and their names. */
    private interface CaseCheck {
        void run(Case c, List<CudaBackend> backends, List<String> names);
    }

    /**
     * Each case of {@link #cases} on the default backend and the siblings of the other kernels; over a bf16 cache the
     * default backend takes the tensor-core kernel where it applies, so the tiled kernel of two heads a warp runs there
     * on a sibling made with {@code -Dorbit.cuda.pagedMma=off}.
     */
    private static void everyKernel(CaseCheck check) {
        try (CudaBackend heads4 = sibling("heads4"); CudaBackend old = sibling("old"); CudaBackend tiled = sibling("orbit.cuda.pagedMma", "off")) {
            for (Case c : cases()) {
                check.run(c, List.of(tiled, heads4, old), List.of("tiled, 2 heads a warp", "tiled, 4 heads a warp", "old per-warp kernel"));
            }
        }
    }

    /**
     * A bf16 cache: every kernel gives the bits it gives over an f32 cache holding the same (bf16-representable) values,
     * since each value is widened exactly where it is read and the sums run in the same order; and the cache's own
     * operations round and widen exactly: {@code pagedKvWrite} stores each f32 value rounded to nearest even (as
     * {@link org.orbitrl.kernels.Numerics#floatToBf16}), {@code gatherRows} reads rows back as f32.
     */
    @Test
    void aBf16CacheGivesTheBitsOfAnF32CacheOfTheSameValues() {
        SplittableRandom r = rng(66);
        everyKernel((c, backends, names) -> checkBf16(c, r, backends, names));
        int rows = 40;
        int w = 96;
        Tensor k = randn(r, 3f, 5, w);
        Tensor v = randn(r, 3f, 5, w);
        int[] slots = {3, -1, 39, 0, 17};
        Tensor kc = dev(Tensor.of(bf16Round(randn(r, 1f, rows, w).toFloatArray()), rows, w).to(DType.BF16));
        Tensor vc = dev(Tensor.of(bf16Round(randn(r, 1f, rows, w).toFloatArray()), rows, w).to(DType.BF16));
        float[] kBefore = gpu.toHost(kc).toFloatArray();
        gpu.pagedKvWrite(dev(k), dev(v), kc, vc, dev(Tensor.ofInts(slots, 5)));
        float[] kAfter = gpu.toHost(kc).toFloatArray();
        float[] vAfter = gpu.toHost(vc).toFloatArray();
        float[] kf = k.toFloatArray();
        float[] vf = v.toFloatArray();
        for (int row = 0; row < rows; row++) {
            int seq = -1;
            for (int i = 0; i < slots.length; i++) {
                seq = slots[i] == row ? i : seq;
            }
            for (int x = 0; x < w; x++) {
                float wantK = seq < 0 ? kBefore[row * w + x] : org.orbitrl.kernels.Numerics.bf16ToFloat(
                        org.orbitrl.kernels.Numerics.floatToBf16(kf[seq * w + x]));
                org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(wantK), Float.floatToRawIntBits(kAfter[row * w + x]),
                        "bf16 key cache row " + row + " [" + x + "]" + (seq < 0 ? " (not written)" : ""));
                if (seq >= 0) {
                    float wantV = org.orbitrl.kernels.Numerics.bf16ToFloat(org.orbitrl.kernels.Numerics.floatToBf16(vf[seq * w + x]));
                    org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(wantV), Float.floatToRawIntBits(vAfter[row * w + x]),
                            "bf16 value cache row " + row + " [" + x + "]");
                }
            }
        }
        int[] pick = {39, 0, 3, 3, 22};
        Tensor got = poisoned(DType.F32, pick.length, w);
        gpu.gatherRows(kc, dev(Tensor.ofInts(pick, pick.length)), got);
        float[] g = gpu.toHost(got).toFloatArray();
        for (int i = 0; i < pick.length; i++) {
            for (int x = 0; x < w; x++) {
                org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(kAfter[pick[i] * w + x]), Float.floatToRawIntBits(g[i * w + x]),
                        "gatherRows of bf16 row " + pick[i] + " [" + x + "]");
            }
        }
    }

    /** {@code c} over an f32 cache of bf16-rounded values and over the same values in a bf16 cache: equal bits. */
    private void checkBf16(Case c, SplittableRandom r, List<CudaBackend> backends, List<String> names) {
        int b = c.lens().length;
        int bs = c.blockSize();
        int maxBlocks = 1;
        int total = 0;
        for (int len : c.lens()) {
            maxBlocks = Math.max(maxBlocks, (len + bs - 1) / bs + 1);
            total += (len + bs - 1) / bs;
        }
        int[] tables = new int[b * maxBlocks];
        int next = 0;
        for (int i = 0; i < b; i++) {
            for (int j = 0; j < maxBlocks; j++) {
                tables[i * maxBlocks + j] = j < (c.lens()[i] + bs - 1) / bs ? next++ : 0;
            }
        }
        long rows = (long) total * bs;
        Tensor k32 = Tensor.of(bf16Round(randn(r, 1f, rows, (long) c.hkv() * c.d()).toFloatArray()), rows, (long) c.hkv() * c.d());
        Tensor v32 = Tensor.of(bf16Round(randn(r, 1f, rows, (long) c.hkv() * c.dv()).toFloatArray()), rows, (long) c.hkv() * c.dv());
        Tensor q = dev(randn(r, 1f, b, c.hq(), c.d()));
        Tensor sinks = c.sinks() ? dev(randn(r, 2f, c.hq())) : null;
        AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(c.d())), c.window(), sinks);
        Tensor dt = dev(Tensor.ofInts(tables, b, maxBlocks));
        Tensor dl = dev(Tensor.ofInts(c.lens(), b));
        Tensor[] f32 = {dev(k32), dev(v32)};
        Tensor[] bf16 = {dev(k32.to(DType.BF16)), dev(v32.to(DType.BF16))};
        for (int i = 0; i < backends.size(); i++) {
            CudaBackend backend = backends.get(i);
            Tensor want = poisoned(DType.F32, b, c.hq(), c.dv());
            Tensor got = poisoned(DType.F32, b, c.hq(), c.dv());
            gpu.synchronize();
            backend.pagedDecodeAttention(q, f32[0], f32[1], dt, dl, bs, c.hkv(), want, spec);
            backend.pagedDecodeAttention(q, bf16[0], bf16[1], dt, dl, bs, c.hkv(), got, spec);
            float[] a = backend.toHost(want).toFloatArray();
            float[] g = backend.toHost(got).toFloatArray();
            for (int j = 0; j < a.length; j++) {
                if (Float.floatToRawIntBits(a[j]) != Float.floatToRawIntBits(g[j])) {
                    org.junit.jupiter.api.Assertions.fail("paged decode over a bf16 cache (" + names.get(i) + ") " + c + ": element " + j
                            + " " + g[j] + ", over the f32 cache of the same values " + a[j]);
                }
            }
        }
    }

    /** A backend sharing {@code gpu}'s memory, made with {@code -Dorbit.cuda.pagedDecode=choice} and the tiled kernels over bf16. */
    private static CudaBackend sibling(String choice) {
        return sibling("orbit.cuda.pagedDecode", choice, "orbit.cuda.pagedMma", "off");
    }

    /** Runs {@code c} on each backend (inputs uploaded through {@code gpu}) and compares with the scalar reference. */
    private void check(Case c, SplittableRandom r, List<CudaBackend> backends, List<String> names) {
        check(c, r, backends, names, false);
    }

    /**
     * {@code c} on each backend against the scalar reference; {@code bf16Cache}: the cache holds bf16 values (the
     * reference takes the same values in f32) and each output (sequence, head) may differ from the reference by the
     * tensor-core kernel's rounding bound {@link #mmaBound}; returns the outputs, a row of each backend.
     */
    private float[][] check(Case c, SplittableRandom r, List<CudaBackend> backends, List<String> names, boolean bf16Cache) {
        return check(c, r, backends, names, bf16Cache, null);
    }

    /** As above, backend k launching under the system properties {@code props.get(k)} (key, value, key, value...; null: none). */
    private float[][] check(Case c, SplittableRandom r, List<CudaBackend> backends, List<String> names, boolean bf16Cache,
                            List<String[]> props) {
        int b = c.lens().length;
        int bs = c.blockSize();
        int maxBlocks = 0;
        int totalBlocks = 0;
        for (int len : c.lens()) {
            int nb = (len + bs - 1) / bs;
            maxBlocks = Math.max(maxBlocks, nb);
            totalBlocks += nb;
        }
        maxBlocks += 1; // tables wider than any sequence: the split count follows the capacity, not the lengths
        int poolBlocks = totalBlocks + 3; // spare blocks hold values the kernel must not read
        List<Integer> perm = new ArrayList<>();
        for (int i = 0; i < poolBlocks; i++) {
            perm.add(i);
        }
        Collections.shuffle(perm, new Random(r.nextLong()));
        int[] tables = new int[b * maxBlocks];
        Arrays.fill(tables, -1); // unused table slots are never read
        int next = 0;
        for (int i = 0; i < b; i++) {
            for (int j = 0; j < (c.lens()[i] + bs - 1) / bs; j++) {
                tables[i * maxBlocks + j] = perm.get(next++);
            }
        }
        int hq = c.hq();
        int hkv = c.hkv();
        int d = c.d();
        int dv = c.dv();
        Tensor kc = randn(r, 1f, (long) poolBlocks * bs, (long) hkv * d);
        Tensor vc = randn(r, 1f, (long) poolBlocks * bs, (long) hkv * dv);
        if (bf16Cache) {
            kc = Tensor.of(bf16Round(kc.toFloatArray()), kc.shape());
            vc = Tensor.of(bf16Round(vc.toFloatArray()), vc.shape());
        }
        int qPad = 8;
        int oPad = 4;
        Tensor qWide = randn(r, 1f, b, hq, d + qPad);                 // q is the view [B, Hq, D] of rows D + 8 wide
        Tensor q = qWide.slice(2, 0, d).contiguous();
        Tensor sinks = c.sinks() ? randn(r, 2f, hq) : null;
        AttentionSpec specCpu = new AttentionSpec((float) (1 / Math.sqrt(d)), c.window(), sinks);

        float[] ref = new float[b * hq * dv];
        float[] bound = new float[b * hq]; // per (sequence, head): the tensor-core kernel's rounding bound
        for (int i = 0; i < b; i++) {
            int len = c.lens()[i];
            Tensor k = Tensor.allocate(Arena.ofAuto(), DType.F32, len, hkv, d);
            Tensor v = Tensor.allocate(Arena.ofAuto(), DType.F32, len, hkv, dv);
            for (int s = 0; s < len; s++) {
                long row = (long) tables[i * maxBlocks + s / bs] * bs + s % bs;
                k.select(0, s).copyFrom(kc.select(0, row).reshape(hkv, d));
                v.select(0, s).copyFrom(vc.select(0, row).reshape(hkv, dv));
            }
            Tensor o = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, hq, dv);
            cpu.attention(q.slice(0, i, i + 1).contiguous(), k, v, o, len - 1, specCpu);
            System.arraycopy(o.toFloatArray(), 0, ref, i * hq * dv, hq * dv);
            if (bf16Cache) {
                for (int h = 0; h < hq; h++) {
                    bound[i * hq + h] = mmaBound(q.select(0, i).select(0, h).toFloatArray(), k, v, h / (hq / hkv), len, c.window(),
                            specCpu.scale());
                }
            }
        }

        AttentionSpec specGpu = new AttentionSpec(specCpu.scale(), c.window(), sinks == null ? null : dev(sinks));
        Tensor dq = dev(qWide).slice(2, 0, d);                        // strides [Hq·(D+8), D+8, 1]
        Tensor dkc = dev(bf16Cache ? kc.to(DType.BF16) : kc);
        Tensor dvc = dev(bf16Cache ? vc.to(DType.BF16) : vc);
        float[][] outs = new float[backends.size()][];
        Tensor dt = dev(Tensor.ofInts(tables, b, maxBlocks));
        Tensor dl = dev(Tensor.ofInts(c.lens(), b));
        for (int k = 0; k < backends.size(); k++) {
            CudaBackend backend = backends.get(k);
            String what = "paged decode (" + names.get(k) + ") " + c;
            Tensor outWide = poisoned(DType.F32, b, hq, dv + oPad);
            gpu.synchronize();
            String[] prop = props == null ? null : props.get(k);
            Runnable launch = () -> backend.pagedDecodeAttention(dq, dkc, dvc, dt, dl, bs, hkv, outWide.slice(2, 0, dv), specGpu);
            Runnable run = launch;
            for (int i = 0; prop != null && i + 1 < prop.length; i += 2) {   // key, value pairs, each set around the ones after it
                String key = prop[i];
                String value = prop[i + 1];
                Runnable inner = run;
                run = () -> withProperty(key, value, inner);
            }
            run.run();
            float[] wide = backend.toHost(outWide).toFloatArray();
            float[] got = new float[b * hq * dv];
            int untouched = 0;
            for (int row = 0; row < b * hq; row++) {
                System.arraycopy(wide, row * (dv + oPad), got, row * dv, dv);
                for (int p = 0; p < oPad; p++) {
                    untouched += Float.isNaN(wide[row * (dv + oPad) + dv + p]) ? 1 : 0;
                }
            }
            assertTrue(untouched == b * hq * oPad, what + ": " + (b * hq * oPad - untouched) + " padding elements of out were written");
            if (bf16Cache) {
                for (int j = 0; j < got.length; j++) {
                    float tol = bound[j / dv];
                    if (!(Math.abs(got[j] - ref[j]) <= tol)) {
                        org.junit.jupiter.api.Assertions.fail(what + " over a bf16 cache: element " + j + " " + got[j] + ", reference "
                                + ref[j] + ", bound " + tol);
                    }
                }
            } else {
                assertClose(what, ref, got, ATOL, RTOL);
            }
            outs[k] = got;
        }
        return outs;
    }

    /**
     * How far the tensor-core kernel's output for one query row may be from the exact attention over the same bf16
     * keys and values: it rounds q to bf16 (each score moves by at most Δ = 2⁻⁹·scale·Σ|q_d·k_d| over the row's keys)
     * and the probabilities of the value products to bf16 (relative 2⁻⁹). A weight w_i = p_i / Σp then moves by at most
     * a factor e^{2Δ}, so |õ − o| ≤ ((e^{2Δ} − 1) + 2⁻⁹·e^{2Δ})·max|v| over the row's visible keys, plus 1e-5 for f32
     * accumulation. k, v: [len, Hkv, D|Dv] of the sequence.
     */
    static float mmaBound(float[] qRow, Tensor k, Tensor v, int kvh, int len, int window, float scale) {
        int d = qRow.length;
        int lo = window > 0 ? Math.max(0, len - window) : 0;
        double delta = 0;
        double maxV = 0;
        for (int s = lo; s < len; s++) {
            float[] kr = k.select(0, s).select(0, kvh).toFloatArray();
            double sum = 0;
            for (int x = 0; x < d; x++) {
                sum += Math.abs(qRow[x] * kr[x]);
            }
            delta = Math.max(delta, Math.scalb(scale * sum, -9));
            for (float y : v.select(0, s).select(0, kvh).toFloatArray()) {
                maxV = Math.max(maxV, Math.abs(y));
            }
        }
        double grow = Math.exp(2 * delta);
        return (float) (((grow - 1) + Math.scalb(grow, -9)) * maxV + 1e-5);
    }

    /**
     * Decode attention over a bf16 cache on tensor cores (the default where the head dims are equal and 64 or 128 and
     * the query group is at most 16) stays within its rounding bound ({@link #mmaBound}) of the exact attention over the
     * same values, over every case; where the kernel applies, its output differs from the tiled kernel's
     * ({@code -Dorbit.cuda.pagedMma=off}: exact products), which shows it ran.
     */
    @Test
    void tensorCoreDecodeOverABf16CacheIsWithinItsRoundingBound() {
        SplittableRandom r = rng(67);
        try (CudaBackend tiled = sibling("orbit.cuda.pagedMma", "off")) {
            int applied = 0;
            for (Case c : cases()) {
                float[][] outs = check(c, r, List.of(gpu, tiled), List.of("tensor cores", "tiled, 2 heads a warp"), true);
                boolean mma = tensorCores(c);
                boolean differs = !Arrays.equals(outs[0], outs[1]);
                assertTrue(differs == mma, c + ": the default backend's output " + (differs ? "differs from" : "equals")
                        + " the tiled kernel's, but the tensor-core kernel " + (mma ? "applies" : "does not apply"));
                applied += mma ? 1 : 0;
            }
            assertTrue(applied >= 6, "the tensor-core kernel applied to " + applied + " cases");
        }
    }

    /**
     * The tensor-core kernel with a ring of three stages a warp ({@code -Dorbit.cuda.pagedStages=3}: two tiles in flight
     * while one is multiplied) gives the bits of the two-stage ring (the default) over every case it applies to (the same
     * products in the same order), each within the rounding bound of {@link #mmaBound}.
     */
    @Test
    void aDeeperRingOfTilesGivesTheSameBits() {
        SplittableRandom r = rng(71);
        int applied = 0;
        for (Case c : tensorCoreCases()) {
            List<String[]> props = Arrays.asList(new String[]{"orbit.cuda.pagedStages", "2"}, new String[]{"orbit.cuda.pagedStages", "3"});
            float[][] outs = check(c, r, List.of(gpu, gpu), List.of("two stages", "three stages"), true, props);
            assertBitsEqual(c + ": three stages against two", outs[0], outs[1]);
            applied++;
        }
        assertTrue(applied >= 6, "the tensor-core kernel applied to " + applied + " cases");
    }

    /**
     * The tensor-core kernels merging their key splits in the launch ({@code -Dorbit.cuda.decodeMerge=on}: the block of a
     * sequence's kv head that finishes last merges them) give the bits of the separate merge ({@code =off}, the default:
     * {@code attention_combine}) over every case they apply to, each within the rounding bound of {@link
     * #mmaBound}; with {@code attention_combine} left out of the launches the merged form still writes every output (so
     * its merge, not that launch, wrote them), and a second run on the same backend, whose tickets the first re-armed,
     * gives the same bits again.
     */
    @Test
    void splitsMergedInTheLaunchGiveTheBitsOfTheSeparateMerge() {
        SplittableRandom r = rng(72);
        int applied = 0;
        for (Case c : tensorCoreCases()) {
            List<String[]> props = Arrays.asList(new String[]{"orbit.cuda.decodeMerge", "off"}, new String[]{"orbit.cuda.decodeMerge", "on"},
                    new String[]{"orbit.cuda.decodeMerge", "on", "orbit.cuda.omitKernels", "^attention_combine"},
                    new String[]{"orbit.cuda.decodeMerge", "on"});
            float[][] outs = check(c, r, List.of(gpu, gpu, gpu, gpu), List.of("separate merge", "merged", "merged, combine left out",
                    "merged again"), true, props);
            for (int v = 1; v < outs.length; v++) {
                assertBitsEqual(c + ": run " + v + " against the separate merge", outs[0], outs[v]);
            }
            applied += splits(c) > 1 ? 1 : 0;
        }
        assertTrue(applied >= 4, "the tensor-core kernel with more than one key split applied to " + applied + " cases");
    }

    /**
     * Finer key splits than a tile for each of a block's warps ({@code -Dorbit.cuda.pagedSplitKeys=32} and {@code 16}:
     * splits of at least 32 and 16 keys of the capacity, some of whose warps have no tile) stay within the tensor-core
     * kernel's rounding bound ({@link #mmaBound}) over every case it applies to, the separate merge and the merge in
     * the launch alike, and split at least three cases more finely than the default.
     */
    @Test
    void finerKeySplitsStayWithinTheRoundingBound() {
        SplittableRandom r = rng(73);
        int finer = 0;
        for (Case c : tensorCoreCases()) {
            List<String[]> props = Arrays.asList(new String[]{CudaFlashAttention.SPLIT_KEYS_PROPERTY, "64"},
                    new String[]{CudaFlashAttention.SPLIT_KEYS_PROPERTY, "32"},
                    new String[]{CudaFlashAttention.SPLIT_KEYS_PROPERTY, "16"},
                    new String[]{CudaFlashAttention.SPLIT_KEYS_PROPERTY, "16", "orbit.cuda.decodeMerge", "on"});
            check(c, r, List.of(gpu, gpu, gpu, gpu), List.of("64 keys a split", "32 keys", "16 keys", "16 keys, merged in the launch"),
                    true, props);
            finer += splits(c, 16) > splits(c) ? 1 : 0;
        }
        assertTrue(finer >= 3, "cases split more finely with 16 keys a split than by default: " + finer);
    }

    /** The cases the tensor-core kernel takes ({@link #tensorCores}). */
    private static List<Case> tensorCoreCases() {
        return cases().stream().filter(CudaPagedDecodeTest::tensorCores).toList();
    }

    /** Whether the tensor-core kernel takes case c over a bf16 cache: equal head dims of 64 or 128, a query group of at most 16. */
    private static boolean tensorCores(Case c) {
        return c.d() == c.dv() && (c.d() == 64 || c.d() == 128) && c.hq() / c.hkv() <= 16;
    }

    /** The key splits the tensor-core kernel takes for case c ({@link CudaFlashAttention#mmaSplits}, as the backend counts them). */
    private static int splits(Case c) {
        return splits(c, 0);
    }

    /** {@link #splits(Case)} with splits of at least {@code splitKeys} keys of the capacity (0: the default rule). */
    private static int splits(Case c, int splitKeys) {
        int b = c.lens().length;
        int maxBlocks = 0;
        for (int len : c.lens()) {
            maxBlocks = Math.max(maxBlocks, (len + c.blockSize() - 1) / c.blockSize());
        }
        maxBlocks += 1;   // as check() makes the tables
        long base = (long) (b <= 1 ? 1 : Integer.highestOneBit(b - 1) << 1) * c.hkv();
        return CudaFlashAttention.mmaSplits(base, gpu.context().device.multiprocessors(), maxBlocks * c.blockSize(), splitKeys);
    }
}
