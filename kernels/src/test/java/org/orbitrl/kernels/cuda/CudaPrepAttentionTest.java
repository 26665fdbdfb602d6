package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * A decode step's q/k/v preparation folded into the tensor-core decode attention over a bf16 cache ({@code
 * pagedDecodePrepAttention}, {@code paged_decode_mma_prep_*}: the blocks of a sequence's kv head one thread block cluster)
 * against the two operations it replaces ({@code pagedDecodePrep}, then {@code pagedDecodeAttention}) on copies of the
 * same caches, over the Qwen3-30B-A3B shape at one sequence, ragged batches of 3 and 64, groups of 1, 4, 8 and 16,
 * head dims 128 and 64, cache blocks of 16 and 32 in a shuffled order, sliding windows, sinks, f32, bf16 and no head
 * norms, half and interleaved rope; each with the cluster the launcher picks and with clusters of 1, 2, 5, 8 and 16 blocks
 * forced.
 * <ul>
 *   <li>Caches: every row but the new keys' bit for bit the two operations'; the new values bit for bit; each new key
 *   value within one bf16 unit in the last place of theirs (the head norm's sum of squares is reduced in another order),
 *   and most equal.</li>
 *   <li>Output: within the tensor-core kernel's rounding bound ({@link CudaPagedDecodeTest#mmaBound}, q rounded to bf16
 *   and the probabilities too), plus 1% and 1e-5 for q's own f32 rounding before that, of the exact attention of the
 *   prepared q (the two operations' q) over the keys and values the fused launch left in its cache.</li>
 *   <li>With the preparation's and the combine's kernels left out of the launches ({@code orbit.cuda.omitKernels}) the
 *   same bits: the fused launch does both itself. The same cluster twice: the same bits.</li>
 *   <li>A sequence whose slot is negative: the same outputs, its row of the cache untouched.</li>
 *   <li>Where it does not apply (an f32 cache, a head dim of 96, a rope over part of the head, the switch off) it returns
 *   false and writes nothing.</li>
 * </ul>
 */
class CudaPrepAttentionTest extends CudaTestBase {
    private static final float EPS = 1e-6f;
    private static final String[] CLUSTERS = {"on", "1", "2", "5", "8", "16"};

    /** One step: heads, head dim, cache block size, window, sinks, norm ("f32", "bf16", "none"), rope style, key counts. */
    private record Case(int hq, int hkv, int d, int blockSize, int window, boolean sinks, String norm, RopeTable.Style style, int[] lens) {
        @Override
        public String toString() {
            return String.format("Hq=%d Hkv=%d D=%d block=%d window=%d sinks=%b norm=%s rope=%s B=%d lens=%s", hq, hkv, d, blockSize, window,
                    sinks, norm, style, lens.length, lens.length <= 8 ? Arrays.toString(lens) : Arrays.toString(Arrays.copyOf(lens, 8)) + "...");
        }
    }

    private static List<Case> cases() {
        SplittableRandom r = rng(301);
        int[] many = new int[64];
        for (int i = 0; i < many.length; i++) {
            many[i] = i < 4 ? new int[]{1, 17, 512, 1000}[i] : 1 + r.nextInt(1000);
        }
        return List.of(
                new Case(32, 4, 128, 16, 0, false, "bf16", RopeTable.Style.HALF, new int[]{512}),   // Qwen3-30B-A3B, one sequence
                new Case(32, 4, 128, 16, 0, false, "bf16", RopeTable.Style.HALF, new int[]{1, 17, 1000}),
                new Case(8, 1, 128, 32, 0, true, "f32", RopeTable.Style.INTERLEAVED, new int[]{1000, 33}),
                new Case(16, 2, 128, 16, 100, true, "none", RopeTable.Style.HALF, new int[]{512, 1000, 17}),
                new Case(8, 8, 64, 16, 37, false, "f32", RopeTable.Style.HALF, many),
                new Case(16, 1, 64, 32, 0, true, "bf16", RopeTable.Style.INTERLEAVED, new int[]{5, 70, 512}));
    }

    /** One step's inputs on the device: the raw projections, norms, rope, positions, slots, tables, lens and a cache. */
    private final class Step {
        final Case c;
        final int b;
        final int maxBlocks;
        final int[] tables;
        final int[] slots;
        final Tensor q;
        final Tensor k;
        final Tensor v;
        final Tensor qNorm;
        final Tensor kNorm;
        final RopeTable rope;
        final Tensor positions;
        final Tensor slotsDev;
        final Tensor tablesDev;
        final Tensor lensDev;
        final Tensor kc;   // host f32 holding bf16 values, the new keys' rows garbage
        final Tensor vc;
        final AttentionSpec spec;
        final Tensor sinksHost;

        Step(Case c, SplittableRandom r) {
            this.c = c;
            b = c.lens().length;
            int bs = c.blockSize();
            int most = 0;
            int total = 0;
            for (int len : c.lens()) {
                most = Math.max(most, (len + bs - 1) / bs);
                total += (len + bs - 1) / bs;
            }
            maxBlocks = most + 1;   // tables wider than any sequence
            int poolBlocks = total + 3;
            List<Integer> perm = new ArrayList<>();
            for (int i = 0; i < poolBlocks; i++) {
                perm.add(i);
            }
            Collections.shuffle(perm, new Random(r.nextLong()));
            tables = new int[b * maxBlocks];
            Arrays.fill(tables, -1);
            slots = new int[b];
            int[] pos = new int[b];
            int next = 0;
            for (int i = 0; i < b; i++) {
                int len = c.lens()[i];
                for (int j = 0; j < (len + bs - 1) / bs; j++) {
                    tables[i * maxBlocks + j] = perm.get(next++);
                }
                pos[i] = len - 1;
                slots[i] = tables[i * maxBlocks + pos[i] / bs] * bs + pos[i] % bs;
            }
            int d = c.d();
            kc = Tensor.of(bf16Round(randn(r, 1f, (long) poolBlocks * bs, (long) c.hkv() * d).toFloatArray()), (long) poolBlocks * bs,
                    (long) c.hkv() * d);
            vc = Tensor.of(bf16Round(randn(r, 1f, (long) poolBlocks * bs, (long) c.hkv() * d).toFloatArray()), (long) poolBlocks * bs,
                    (long) c.hkv() * d);
            q = dev(randn(r, 2f, b, c.hq(), d));
            k = dev(randn(r, 2f, b, c.hkv(), d));
            v = dev(randn(r, 1f, b, c.hkv(), d));
            Tensor qn = null;
            Tensor kn = null;
            if (!c.norm().equals("none")) {
                qn = randn(r, 1f, d);
                kn = randn(r, 1f, d);
                if (c.norm().equals("bf16")) {
                    qn = Tensor.of(bf16Round(qn.toFloatArray()), d).to(DType.BF16);
                    kn = Tensor.of(bf16Round(kn.toFloatArray()), d).to(DType.BF16);
                }
            }
            qNorm = qn == null ? null : dev(qn);
            kNorm = kn == null ? null : dev(kn);
            float[] inv = new float[d / 2];
            for (int i = 0; i < inv.length; i++) {
                inv[i] = (float) Math.pow(1_000_000, -2.0 * i / d);
            }
            rope = new RopeTable(inv, 1f, 2048, c.style());
            positions = dev(Tensor.ofInts(pos, b));
            slotsDev = dev(Tensor.ofInts(slots, b));
            tablesDev = dev(Tensor.ofInts(tables, b, maxBlocks));
            lensDev = dev(Tensor.ofInts(c.lens(), b));
            sinksHost = c.sinks() ? randn(r, 2f, c.hq()) : null;
            spec = new AttentionSpec((float) (1 / Math.sqrt(d)), c.window(), sinksHost == null ? null : dev(sinksHost));
        }

        Tensor keys() {
            return dev(kc.to(DType.BF16));
        }

        Tensor values() {
            return dev(vc.to(DType.BF16));
        }
    }

    /** What a run left: its output [B, Hq, D] and its caches, as f32. */
    private record Result(float[] out, float[] keys, float[] values) {
    }

    /** The two operations on fresh copies of the step's caches; also returns the prepared q in {@code qOut}. */
    private Result separate(Step s, float[][] qOut) {
        Tensor kc = s.keys();
        Tensor vc = s.values();
        Tensor q3 = poisoned(DType.F32, s.b, s.c.hq(), s.c.d());
        Tensor out = poisoned(DType.F32, s.b, s.c.hq(), s.c.d());
        withProperty(CudaFlashAttention.PREP_ATTENTION_PROPERTY, "off", () -> {
            gpu.pagedDecodePrep(s.q, s.k, s.v, s.qNorm, s.kNorm, EPS, s.positions, s.rope, q3, kc, vc, s.slotsDev);
            gpu.pagedDecodeAttention(q3, kc, vc, s.tablesDev, s.lensDev, s.c.blockSize(), s.c.hkv(), out, s.spec);
        });
        qOut[0] = gpu.toHost(q3).toFloatArray();
        return new Result(gpu.toHost(out).toFloatArray(), gpu.toHost(kc).toFloatArray(), gpu.toHost(vc).toFloatArray());
    }

    /** The fused call on fresh copies of the step's caches under {@code -Dorbit.cuda.prepAttention=setting} (and {@code omit}); null where it declined. */
    private Result fused(Step s, String setting, String omit) {
        return fused(s, setting, omit, s.slotsDev);
    }

    /** {@link #fused} writing the new rows at {@code slots}. */
    private Result fused(Step s, String setting, String omit, Tensor slots) {
        Tensor kc = s.keys();
        Tensor vc = s.values();
        Tensor out = poisoned(DType.F32, s.b, s.c.hq(), s.c.d());
        boolean[] took = new boolean[1];
        Runnable call = () -> took[0] = gpu.pagedDecodePrepAttention(s.q, s.k, s.v, s.qNorm, s.kNorm, EPS, s.positions, s.rope, kc, vc,
                slots, s.tablesDev, s.lensDev, s.c.blockSize(), out, s.spec);
        withProperty(CudaFlashAttention.PREP_ATTENTION_PROPERTY, setting, omit == null ? call
                : () -> withProperty("orbit.cuda.omitKernels", omit, call));
        gpu.synchronize();
        return took[0] ? new Result(gpu.toHost(out).toFloatArray(), gpu.toHost(kc).toFloatArray(), gpu.toHost(vc).toFloatArray()) : null;
    }

    @Test
    void foldedPreparationMatchesTheTwoOperations() {
        SplittableRandom r = rng(302);
        for (Case c : cases()) {
            Step s = new Step(c, r);
            float[][] q3 = new float[1][];
            Result sep = separate(s, q3);
            Result first = null;
            for (String setting : CLUSTERS) {
                String what = c + ", prepAttention=" + setting;
                Result got = fused(s, setting, null);
                assertTrue(got != null, what + ": the fused form declined a case it takes");
                checkCaches(what, s, sep, got);
                checkOut(what, s, q3[0], got);
                if (setting.equals("on")) {
                    first = got;
                    Result again = fused(s, setting, null);
                    assertBitsEqual(what + ": run again", got.out(), again.out());
                    Result alone = fused(s, setting, "qkv_prep|attention_combine");
                    assertBitsEqual(what + ": with the preparation's and the combine's kernels left out", got.out(), alone.out());
                    assertBitsEqual(what + ": keys with those kernels left out", got.keys(), alone.keys());
                }
            }
            assertTrue(first != null, "the default setting ran");
        }
    }

    /**
     * {@code -Dorbit.cuda.prepQFirst} (on by default: {@code paged_decode_mma_prep_qf_*}, q made before the first tiles'
     * copies are issued) gives the output and caches of the kernel that makes q after them ({@code =off}) bit for bit, in
     * every case above with the cluster the launcher picks and with 1, 5 and 16 blocks forced, with dependent launches off
     * and on; the launch is the q-first kernel's: with it left out the output keeps its poison. The kernels for groups of
     * at most 8 off ({@code -Dorbit.cuda.prepGroup8=off}; their own test is the next).
     */
    @Test
    void qMadeFirstGivesTheKernelsBits() {
        SplittableRandom r = rng(308);
        for (Case c : cases()) {
            Step s = new Step(c, r);
            for (String setting : new String[]{"on", "1", "5", "16"}) {
                for (boolean dependent : new boolean[]{false, true}) {
                    String what = c + ", prepAttention=" + setting + (dependent ? ", a dependent launch" : "");
                    Result[] got = new Result[3];
                    String q1 = CudaFlashAttention.PREP_Q_FIRST_PROPERTY;
                    withProperty(CudaFlashAttention.PREP_GROUP8_PROPERTY, "off", () -> {
                        withProperty(q1, "off", () -> got[0] = chained(s, setting, dependent, null));
                        withProperty(q1, "on", () -> got[1] = chained(s, setting, dependent, null));
                        withProperty(q1, "on", () -> got[2] = chained(s, setting, dependent, "_prep_qfl?_"));
                    });
                    assertTrue(got[0] != null && got[1] != null, what + ": declined a case it takes");
                    assertSameBits(what, got[0], got[1]);
                    assertUnwritten(what + ": an output written with the q-first kernel left out", got[2]);
                }
            }
        }
    }

    /**
     * {@code -Dorbit.cuda.prepGroup8=on} ({@code paged_decode_mma_prep_qf8_*}, for groups of at most 8 query heads with the
     * rope in halves) gives the q-first kernel's output and caches bit for bit, in every such case above (groups of 8, 8
     * and 1; D 128 and 64; sinks, windows, f32 and bf16 norms and none) with the cluster the launcher picks and with 1, 5
     * and 16 blocks forced, with dependent launches off and on; the launch is its own (left out: poison); the cases with
     * interleaved rope or groups of 16 keep the q-first kernel (the group-8 kernel left out changes nothing there).
     */
    @Test
    void groupsOfEightGiveTheQFirstKernelsBits() {
        SplittableRandom r = rng(309);
        int taken = 0;
        for (Case c : cases()) {
            Step s = new Step(c, r);
            boolean fits = c.hq() / c.hkv() <= 8 && c.style() != RopeTable.Style.INTERLEAVED;
            taken += fits ? 1 : 0;
            for (String setting : new String[]{"on", "1", "5", "16"}) {
                for (boolean dependent : new boolean[]{false, true}) {
                    String what = c + ", prepAttention=" + setting + (dependent ? ", a dependent launch" : "");
                    Result[] got = new Result[3];
                    withProperty(CudaFlashAttention.PREP_GROUP8_PROPERTY, "off", () -> got[0] = chained(s, setting, dependent, "_prep_qf8l?_"));
                    withProperty(CudaFlashAttention.PREP_GROUP8_PROPERTY, "on", () -> got[1] = chained(s, setting, dependent, "_prep_qfl?_"));
                    withProperty(CudaFlashAttention.PREP_GROUP8_PROPERTY, "on", () -> got[2] = chained(s, setting, dependent, "_prep_qf8l?_"));
                    assertTrue(got[0] != null && got[1] != null && got[2] != null, what + ": declined a case it takes");
                    if (fits) {
                        assertSameBits(what, got[0], got[1]);
                        assertUnwritten(what + ": an output written with the group-8 kernel left out", got[2]);
                    } else {
                        assertBitsEqual(what + ": output, the q-first kernel", got[0].out(), got[2].out());
                        assertUnwritten(what + ": an output written with the q-first kernel left out", got[1]);
                    }
                }
            }
        }
        assertEquals(4, taken, "the cases the group-8 kernel takes");
    }

    /**
     * The loads issued by rounds ({@code -Dorbit.cuda.prepLoadsFirst=on}, {@code _prep_qfl_} / {@code _prep_qf8l_}) give the
     * q-first kernels' output and caches bit for bit, with the cluster from the key splits and at 1, 5 and 16 blocks,
     * every case, as a plain and a dependent launch: each form shown to be the launch by leaving the other out.
     */
    @Test
    void loadsByRoundsGiveTheQFirstKernelsBits() {
        SplittableRandom r = rng(313);
        for (Case c : cases()) {
            Step s = new Step(c, r);
            for (String setting : new String[]{"on", "1", "5", "16"}) {
                for (boolean dependent : new boolean[]{false, true}) {
                    String what = c + ", prepAttention=" + setting + (dependent ? ", a dependent launch" : "");
                    Result[] got = new Result[3];
                    String lf = CudaFlashAttention.PREP_LOADS_FIRST_PROPERTY;
                    withProperty(lf, "off", () -> got[0] = chained(s, setting, dependent, "_prep_qf8?l_"));
                    withProperty(lf, "on", () -> got[1] = chained(s, setting, dependent, "_prep_qf8?_d"));
                    withProperty(lf, "on", () -> got[2] = chained(s, setting, dependent, "_prep_qf8?l_"));
                    assertTrue(got[0] != null && got[1] != null && got[2] != null, what + ": declined a case it takes");
                    assertSameBits(what, got[0], got[1]);
                    assertUnwritten(what + ": an output written with the loads-first kernels left out", got[2]);
                }
            }
        }
    }

    /**
     * The group-8 loads-first kernel with its first tiles' pages read in round one ({@code -Dorbit.cuda.prepPagesFirst=on},
     * {@code _prep_qf8p_}) gives {@code _prep_qf8l_}'s output and caches bit for bit, with the cluster from the key splits
     * and at 1, 5 and 16 blocks, every case (sliding windows past their length among them, where it reads the pages after
     * the length), as a plain and a dependent launch; each form shown to be the launch by leaving the other out. The
     * cases it does not take (groups past 8, an interleaved rope) take the kernels they took.
     */
    @Test
    void pagesReadFirstGiveTheLoadsFirstKernelsBits() {
        SplittableRandom r = rng(319);
        int taken = 0;
        for (Case c : cases()) {
            Step s = new Step(c, r);
            boolean group8 = c.hq() / c.hkv() <= 8 && c.style() != RopeTable.Style.INTERLEAVED;
            taken += group8 ? 1 : 0;
            for (String setting : new String[]{"on", "1", "5", "16"}) {
                for (boolean dependent : new boolean[]{false, true}) {
                    String what = c + ", prepAttention=" + setting + (dependent ? ", a dependent launch" : "");
                    Result[] got = new Result[3];
                    String pf = CudaFlashAttention.PREP_PAGES_FIRST_PROPERTY;
                    withProperty(pf, "off", () -> got[0] = chained(s, setting, dependent, "_prep_qf8p_"));
                    withProperty(pf, "on", () -> got[1] = chained(s, setting, dependent, group8 ? "_prep_qf8l_" : "_prep_qf8p_"));
                    withProperty(pf, "on", () -> got[2] = chained(s, setting, dependent, group8 ? "_prep_qf8p_" : "_prep_qf8l_"));
                    assertTrue(got[0] != null && got[1] != null && got[2] != null, what + ": declined a case it takes");
                    assertSameBits(what, got[0], got[1]);
                    if (group8) {
                        assertUnwritten(what + ": an output written with the pages-first kernel left out", got[2]);
                    } else {
                        assertSameBits(what + ": the pages-first kernel is not this case's", got[0], got[2]);
                    }
                }
            }
        }
        assertTrue(taken >= 4, "the cases the pages-first kernel takes: " + taken);
    }

    /**
     * Where the loads-first kernels let the launch after them start ({@code -Dorbit.cuda.attentionTrigger=start|copies|tiles})
     * changes no value: as dependent launches between a launch that writes q and one that reads the attention's output
     * (a residual add and norm of it), the output, both caches and the reader's rows bit for bit the same under each, with
     * the cluster from the key splits and at 1, 5 and 16 blocks, every case.
     */
    @Test
    void whereTheAttentionTriggersChangesNoValue() {
        SplittableRandom r = rng(317);
        for (Case c : cases()) {
            Step s = new Step(c, r);
            for (String setting : new String[]{"on", "1", "5", "16"}) {
                float[][] read = new float[3][];
                Result[] got = new Result[3];
                String[] where = {"start", "copies", "tiles"};
                for (int i = 0; i < 3; i++) {
                    int at = i;
                    withProperty(CudaFlashAttention.TRIGGER_PROPERTY, where[i], () -> {
                        float[][] after = new float[1][];
                        got[at] = chained(s, setting, true, "_prep_qf8?_d", after);
                        read[at] = after[0];
                    });
                }
                for (int i = 1; i < 3; i++) {
                    String what = c + ", prepAttention=" + setting + ", attentionTrigger=" + where[i];
                    assertTrue(got[0] != null && got[i] != null, what + ": declined a case it takes");
                    assertSameBits(what, got[0], got[i]);
                    assertBitsEqual(what + ": the dependent reader's rows", read[0], read[i]);
                }
                for (float v : read[0]) {
                    assertTrue(Float.isFinite(v), c + ", prepAttention=" + setting + ": the reader's rows are its own");
                }
            }
        }
    }

    /**
     * The fused call on fresh copies of the step's caches right after a launch that writes its q (the step's q plus
     * zeros, by {@code addRmsNorm}), under {@code -Dorbit.cuda.prepAttention=setting}, with dependent launches on or off,
     * {@code omit} left out; null where it declined.
     */
    private Result chained(Step s, String setting, boolean dependent, String omit) {
        return chained(s, setting, dependent, omit, null);
    }

    /**
     * {@link #chained(Step, String, boolean, String)}, and where {@code after} is given, a residual add and norm of
     * the attention's output launched right after it (a dependent launch with them on), its rows into {@code after[0]}.
     */
    private Result chained(Step s, String setting, boolean dependent, String omit, float[][] after) {
        Tensor kc = s.keys();
        Tensor vc = s.values();
        Tensor out = poisoned(DType.F32, s.b, s.c.hq(), s.c.d());
        long row = (long) s.c.hq() * s.c.d();
        Tensor q = poisoned(DType.F32, s.b, s.c.hq(), s.c.d());
        Tensor zeros = dev(Tensor.of(new float[Math.toIntExact(s.b * row)], s.b, row));
        Tensor nw = dev(Tensor.of(CudaFusedDecodeTest.normWeights(rng(307), Math.toIntExact(row), false), row));
        Tensor normed = poisoned(DType.F32, s.b, row);
        Tensor sum2 = poisoned(DType.F32, s.b, row);
        Tensor normed2 = poisoned(DType.F32, s.b, row);
        boolean[] took = new boolean[1];
        gpu.dependentLaunches(dependent);
        try {
            withProperty(CudaFlashAttention.PREP_ATTENTION_PROPERTY, setting, () -> withProperty("orbit.cuda.omitKernels", omit,
                    () -> {
                        gpu.addRmsNorm(s.q.reshape(s.b, row), zeros, q.reshape(s.b, row), nw, EPS, normed);
                        took[0] = gpu.pagedDecodePrepAttention(q, s.k, s.v, s.qNorm, s.kNorm, EPS, s.positions, s.rope, kc, vc,
                                s.slotsDev, s.tablesDev, s.lensDev, s.c.blockSize(), out, s.spec);
                        if (after != null) {
                            gpu.addRmsNorm(out.reshape(s.b, row), zeros, sum2, nw, EPS, normed2);
                        }
                    }));
        } finally {
            gpu.dependentLaunches(false);
        }
        gpu.synchronize();
        if (after != null) {
            after[0] = gpu.toHost(normed2).toFloatArray();
        }
        return took[0] ? new Result(gpu.toHost(out).toFloatArray(), gpu.toHost(kc).toFloatArray(), gpu.toHost(vc).toFloatArray()) : null;
    }

    /** The output and both caches of {@code got} bit for bit those of {@code want}. */
    private static void assertSameBits(String what, Result want, Result got) {
        assertBitsEqual(what + ": output", want.out(), got.out());
        assertBitsEqual(what + ": keys", want.keys(), got.keys());
        assertBitsEqual(what + ": values", want.values(), got.values());
    }

    /** Every output of {@code got} still the poison it was given: the kernel left out was the one that writes it. */
    private static void assertUnwritten(String what, Result got) {
        for (float v : got.out()) {
            assertTrue(Float.isNaN(v), what);
        }
    }

    /** Every cache row but the new keys' bit for bit; new keys within one bf16 ulp, most equal. */
    private static void checkCaches(String what, Step s, Result sep, Result got) {
        assertBitsEqual(what + ": value cache", sep.values(), got.values());
        int w = s.c.hkv() * s.c.d();
        boolean[] fresh = new boolean[sep.keys().length / w];
        for (int slot : s.slots) {
            fresh[slot] = true;
        }
        int differ = 0;
        for (int i = 0; i < sep.keys().length; i++) {
            float a = sep.keys()[i];
            float g = got.keys()[i];
            if (Float.floatToRawIntBits(a) == Float.floatToRawIntBits(g)) {
                continue;
            }
            if (!fresh[i / w]) {
                fail(what + ": key cache row " + i / w + " (not a new key's) channel " + i % w + ": " + g + " where the two operations left " + a);
            }
            double ulp = Math.scalb(1.0, Math.getExponent(Math.max(Math.abs(a), Math.abs(g))) - 7);
            assertTrue(Math.abs(a - g) <= ulp, what + ": new key row " + i / w + " channel " + i % w + ": " + g + " against " + a
                    + ", more than one bf16 ulp apart");
            differ++;
        }
        int fromNew = s.b * w;
        assertTrue(differ <= Math.max(2, fromNew / 20), what + ": " + differ + " of " + fromNew + " new key values differ from the two operations'");
    }

    /** The output within the tensor-core bound of the exact attention of the prepared q over the fused run's cache. */
    private static void checkOut(String what, Step s, float[] q3, Result got) {
        Case c = s.c;
        int d = c.d();
        int hq = c.hq();
        int hkv = c.hkv();
        int bs = c.blockSize();
        AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), c.window(), s.sinksHost);
        for (int i = 0; i < s.b; i++) {
            int len = c.lens()[i];
            Tensor k = Tensor.allocate(Arena.ofAuto(), DType.F32, len, hkv, d);
            Tensor v = Tensor.allocate(Arena.ofAuto(), DType.F32, len, hkv, d);
            for (int p = 0; p < len; p++) {
                int row = s.tables[i * s.maxBlocks + p / bs] * bs + p % bs;
                k.select(0, p).copyFrom(Tensor.of(Arrays.copyOfRange(got.keys(), row * hkv * d, (row + 1) * hkv * d), hkv, d));
                v.select(0, p).copyFrom(Tensor.of(Arrays.copyOfRange(got.values(), row * hkv * d, (row + 1) * hkv * d), hkv, d));
            }
            Tensor qi = Tensor.of(Arrays.copyOfRange(q3, i * hq * d, (i + 1) * hq * d), 1, hq, d);
            Tensor o = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, hq, d);
            cpu.attention(qi, k, v, o, len - 1, spec);
            float[] ref = o.toFloatArray();
            for (int h = 0; h < hq; h++) {
                float[] qRow = Arrays.copyOfRange(q3, (i * hq + h) * d, (i * hq + h + 1) * d);
                double tol = 1.01 * CudaPagedDecodeTest.mmaBound(qRow, k, v, h / (hq / hkv), len, c.window(), spec.scale()) + 1e-5;
                for (int x = 0; x < d; x++) {
                    float g = got.out()[(i * hq + h) * d + x];
                    if (!(Math.abs(g - ref[h * d + x]) <= tol)) {
                        fail(what + ": sequence " + i + " head " + h + " channel " + x + ": " + g + ", reference " + ref[h * d + x]
                                + ", bound " + tol);
                    }
                }
            }
        }
    }

    /**
     * A sequence whose slot is negative (a padded row of a captured batch): the fused launch attends over its prepared key
     * and value all the same, so every output has the bits of the run with the slot given, and the cache keeps that row
     * as it was, every other row as the run with the slot given left it.
     */
    @Test
    void aSequenceWithoutASlotAttendsOverItsRowAndWritesNothing() {
        SplittableRandom r = rng(304);
        Case c = new Case(32, 4, 128, 16, 0, false, "bf16", RopeTable.Style.HALF, new int[]{40, 300, 7});
        Step s = new Step(c, r);
        Result given = fused(s, "on", null);
        int[] slots = s.slots.clone();
        slots[1] = -1;
        Result none = fused(s, "on", null, dev(Tensor.ofInts(slots, s.b)));
        assertBitsEqual(c + ": outputs with sequence 1's slot withheld", given.out(), none.out());
        int w = c.hkv() * c.d();
        float[] k0 = s.kc.toFloatArray();
        float[] v0 = s.vc.toFloatArray();
        for (int i = 0; i < k0.length; i++) {
            boolean withheld = i / w == s.slots[1];
            float wantK = withheld ? k0[i] : given.keys()[i];
            float wantV = withheld ? v0[i] : given.values()[i];
            if (Float.floatToRawIntBits(wantK) != Float.floatToRawIntBits(none.keys()[i])
                    || Float.floatToRawIntBits(wantV) != Float.floatToRawIntBits(none.values()[i])) {
                fail(c + ": cache row " + i / w + " channel " + i % w + (withheld ? " (the withheld slot, to stay as it was)" : "")
                        + ": key " + none.keys()[i] + " / value " + none.values()[i] + ", expected " + wantK + " / " + wantV);
            }
        }
    }

    @Test
    void declinesWhatItDoesNotTakeAndWritesNothing() {
        SplittableRandom r = rng(303);
        Case c = new Case(8, 2, 64, 16, 0, false, "f32", RopeTable.Style.HALF, new int[]{40, 7});
        Step s = new Step(c, r);
        assertEquals(null, fused(s, "off", null), "the switch off");
        // an f32 cache
        Tensor kc = dev(s.kc);
        Tensor vc = dev(s.vc);
        Tensor out = poisoned(DType.F32, s.b, c.hq(), c.d());
        assertFalse(gpu.pagedDecodePrepAttention(s.q, s.k, s.v, s.qNorm, s.kNorm, EPS, s.positions, s.rope, kc, vc, s.slotsDev, s.tablesDev,
                s.lensDev, c.blockSize(), out, s.spec), "an f32 cache");
        // a rope over half the head
        float[] inv = new float[c.d() / 4];
        for (int i = 0; i < inv.length; i++) {
            inv[i] = (float) Math.pow(10000, -4.0 * i / c.d());
        }
        Tensor kb = s.keys();
        assertFalse(gpu.pagedDecodePrepAttention(s.q, s.k, s.v, s.qNorm, s.kNorm, EPS, s.positions, new RopeTable(inv, 1f, 2048,
                RopeTable.Style.HALF), kb, s.values(), s.slotsDev, s.tablesDev, s.lensDev, c.blockSize(), out, s.spec), "a partial rope");
        assertBitsEqual("the key cache after the calls that declined", s.kc.toFloatArray(), gpu.toHost(kb).toFloatArray());
        for (float x : gpu.toHost(out).toFloatArray()) {
            assertTrue(Float.isNaN(x), "out written by a call that declined");
        }
        // a head dim of 96
        Case c96 = new Case(8, 2, 96, 16, 0, false, "none", RopeTable.Style.HALF, new int[]{40, 7});
        Step s96 = new Step(c96, r);
        assertEquals(null, fused(s96, "on", null), "a head dim of 96");
    }
}
