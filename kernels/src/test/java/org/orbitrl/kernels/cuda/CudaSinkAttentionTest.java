package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's attention on the device ({@link org.orbitrl.kernels.Backend#sinkAttention}: queries [T, H, d] over one
 * shared key-and-value head [S, d], an additive mask [T, S] of 0 and -inf, a sink logit a head) against the closed
 * form in double precision, forward and backward, within 2e-5 of each output's scale (f32 cuBLAS products without TF32
 * and an f32 softmax against double sums). Shapes: a decode query over 70 keys at V4's width (64 heads of 512),
 * prefills of 13, 37 and 9 queries at 16, 8 and 3 heads, ragged everywhere; masks as V4 builds them (a causal sliding
 * window over the tokens, then compressed entries each query may or may not see) with one row that sees nothing (its
 * output and gradients 0: the sink takes all of its weight); chunks of queries forced down to 3 a chunk so that dKV
 * adds over chunks. Exact mode: the same closed form within 2e-5 (its own kernel forward, the default backward), the
 * same bits with 1, 2, 4 or 8 heads a block and with a block a (query, head), and each query the same bits when it
 * runs alone over only the keys it sees (as a decode step has it) and in a half of the queries over the keys any of
 * them sees (as the model's blocks of queries have it). {@code -Dorbit.cuda.mqa=off} says it does not take it;
 * operands of the wrong shape are refused, naming every shape.
 */
class CudaSinkAttentionTest extends CudaTestBase {
    /** {T, tokens S0 (the window's keys), compressed entries, H, d, window}. */
    private static final int[][] CASES = {{1, 64, 6, 64, 512, 128}, {13, 30, 10, 16, 64, 8}, {37, 37, 8, 8, 128, 16},
            {9, 9, 0, 3, 16, 4}};
    /**
     * Exact mode's cases: the above, queries seeing 400-530 keys of 900 (several scans of the mask, chunks carried
     * across them), V4-Pro's width (128 heads of 512), and a head of 18 channels (rows copied 4 bytes at a time).
     */
    private static final int[][] EXACT_CASES = {CASES[0], CASES[1], CASES[2], CASES[3], {6, 700, 200, 16, 128, 400},
            {2, 300, 40, 128, 512, 128}, {7, 20, 6, 5, 18, 6}};

    @Test
    void forwardAndBackwardMatchTheClosedForm() {
        SplittableRandom r = rng(7101);
        for (int[] c : CASES) {
            Case k = new Case(r, c);
            check(k, "default chunks");
            String three = "" + 3L * c[3] * (c[1] + c[2]) * DType.F32.bytes();   // three queries' scores a chunk
            withProperty(CudaMqaAttention.CHUNK_PROPERTY, three, () -> check(k, "chunks of 3 queries"));
        }
    }

    @Test
    void exactModeMatchesTheClosedFormAndEachQueryIsTheSameBitsAlone() {
        assertTrue(gpu.takesDeepseekV4Attention(), "the default kernels say they take it");
        withProperty("orbit.cuda.mqa", "off", () -> assertFalse(gpu.takesDeepseekV4Attention(), "not with orbit.cuda.mqa=off"));
        SplittableRandom r = rng(7102);
        try (CudaBackend exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
            assertTrue(exact.takesDeepseekV4Attention(), "exact mode takes it too");
            for (int[] c : EXACT_CASES) {
                Case k = new Case(r, c);
                float[][] ref = reference(k);
                String[] layouts = {"8", "4", "2", "1", "row"};   // heads a block, or a block a (query, head)
                float[][] byLayout = new float[layouts.length][];
                for (int w = 0; w < layouts.length; w++) {
                    float[][] got = new float[1][];
                    withProperty(CudaMqaAttention.EXACT_WARPS_PROPERTY, layouts[w],
                            () -> got[0] = exactForward(exact, k.q, k.kv, k.mask, k.sinks, k.scale, k.t, k.h, k.d));
                    byLayout[w] = got[0];
                }
                float[] all = byLayout[0];
                assertCloseToScale("exact sink attention " + k.what, ref[0], all, 2e-5);
                for (int w = 1; w < layouts.length; w++) {
                    assertBitsEqual("exact sink attention, layout " + layouts[w] + " against 8 heads a block, " + k.what, all,
                            byLayout[w]);
                }
                Tensor q = exact.toDevice(k.q), kv = exact.toDevice(k.kv), mask = exact.toDevice(k.mask);
                Tensor sinks = exact.toDevice(k.sinks);
                Tensor dq = exact.toDevice(nan(k.t, k.h, k.d)), dkv = exact.toDevice(nan(k.s, k.d));
                assertTrue(exact.sinkAttentionBackward(q, kv, mask, sinks, k.scale, exact.toDevice(k.dout), dq, dkv));
                assertCloseToScale("exact mode's sink attention dq " + k.what, ref[1], exact.toHost(dq).toFloatArray(), 2e-5);
                assertCloseToScale("exact mode's sink attention dkv " + k.what, ref[2], exact.toHost(dkv).toFloatArray(), 2e-5);
                assertAloneIsTheSameBits(exact, k, all);
            }
        }
    }

    /**
     * A decode step's queries, one a sequence, in one launch ({@link org.orbitrl.kernels.Backend#sinkDecodeAttention}):
     * each over its window's rows, its new key and its chosen entries, against the closed form in double within 2e-5
     * of the output's scale. V4's width (64 heads of 512) with windows of 0-127 rows and 0-600 entries, all or a
     * chosen 512 of them (out of order, as the indexer returns them, then sorted as the model hands them over); 4
     * heads of 32 (half a block's warps idle). Exact mode and {@code -Dorbit.cuda.mqa=off} decline; a choice outside
     * its entries is refused, naming the sequence.
     */
    @Test
    void decodeQueriesOfEverySequenceInOneLaunchMatchTheClosedForm() {
        SplittableRandom r = rng(7103);
        int[][] windows = {{0, 1, 127, 40, 127}, {3, 0, 7}};
        int[][] entries = {{0, 3, 300, 600, 50}, {5, 0, 2}};
        int[][] shapes = {{64, 512}, {4, 32}};
        for (int c = 0; c < shapes.length; c++) {
            int b = windows[c].length;
            int h = shapes[c][0];
            int d = shapes[c][1];
            float scale = (float) (1 / Math.sqrt(d));
            Tensor q = randn(r, 1f, b, h, d);
            Tensor k = randn(r, 1f, b, d);
            Tensor sinks = randn(r, 2f, h);
            Tensor[] win = new Tensor[b];
            Tensor[] ent = new Tensor[b];
            int[][] chosen = new int[b][];
            Tensor[] winDev = new Tensor[b];
            Tensor[] entDev = new Tensor[b];
            for (int i = 0; i < b; i++) {
                win[i] = windows[c][i] == 0 ? null : randn(r, 1f, windows[c][i], d);
                ent[i] = entries[c][i] == 0 ? null : randn(r, 1f, entries[c][i], d);
                winDev[i] = win[i] == null ? null : dev(win[i]);
                entDev[i] = ent[i] == null ? null : dev(ent[i]);
                if (entries[c][i] == 600) {   // the indexer's top 512 of 600, ascending
                    int[] all = java.util.stream.IntStream.range(0, 600).toArray();
                    for (int j = all.length - 1; j > 0; j--) {
                        int o = r.nextInt(j + 1);
                        int x = all[j];
                        all[j] = all[o];
                        all[o] = x;
                    }
                    chosen[i] = Arrays.stream(all, 0, 512).sorted().toArray();
                } else if (entries[c][i] == 5) {
                    chosen[i] = new int[]{1, 4};
                }
            }
            Tensor out = dev(nan(b, h, d));
            assertTrue(gpu.sinkDecodeAttention(dev(q), winDev, dev(k), entDev, chosen, dev(sinks),
                    scale, out), "the default kernels take it");
            float[] ref = decodeReference(q, win, k, ent, chosen, sinks, scale);
            assertCloseToScale("sink decode attention, " + b + " sequences of " + h + " heads of " + d, ref,
                    gpu.toHost(out).toFloatArray(), 2e-5);
            if (c == 0) {
                withProperty("orbit.cuda.mqa", "off", () -> assertFalse(gpu.sinkDecodeAttention(dev(q), winDev,
                        dev(k), entDev, chosen, dev(sinks), scale, out), "not with orbit.cuda.mqa=off"));
                try (CudaBackend exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
                    assertFalse(exact.sinkDecodeAttention(exact.toDevice(q), winDev, exact.toDevice(k), entDev, chosen,
                            exact.toDevice(sinks), scale, exact.toDevice(nan(b, h, d))), "exact mode declines");
                }
                int[][] bad = chosen.clone();
                bad[1] = new int[]{3};
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.sinkDecodeAttention(
                        dev(q), winDev, dev(k), entDev, bad, dev(sinks), scale, out));
                assertTrue(e.getMessage().contains("sequence 1 chose entry 3 of 3"), e.getMessage());
            }
        }
    }

    /**
     * The decode attention's keys split over several blocks, each split's partial softmax merged with the sink, against
     * the same closed form within 2e-5 of the output's scale: f32 products and sums against double, the splits' partial
     * sums and the merge's rescaling rounding as one block's online softmax does, orders of magnitude below the bound
     * at these key counts, while one key left out or counted twice, or the sink's share kept, moves some output by far
     * more than the bound. Cases at V4's width (64 heads of 512): one sequence of 1,713 keys (1,200 window rows, the
     * new key, 512 chosen of 900 entries; queries three times as wide, so that the running maximum grows across tiles)
     * and two of 1,104 and 1,504 keys (every entry; the short one's last splits take no keys), each at the default
     * split count, forced to 1 (one block walks every tile), 3 and 64; one sequence of 9 keys forced to 64 splits (all
     * but one take none); 32 sequences of 0-130 window rows and 0-400 entries, some chosen (V4's decode batch: one
     * split by default on an H100), by default and forced to 4; 12 heads of 160 (a half-idle block of heads, channels
     * not a multiple of 128) forced to 5. A split count out of range refused (the rule's counts:
     * {@link SinkDecodeSplitsTest}).
     */
    @Test
    void decodeKeysSplitOverBlocksMatchTheClosedForm() {
        SplittableRandom r = rng(7104);
        String[] forced = {null, "1", "3", "64"};
        DecodeInputs one = decodeInputs(r, 64, 512, 3f, new int[]{1200}, new int[]{900}, new int[]{512});
        checkSplitDecode("1 sequence of 1713 keys", one, forced);
        DecodeInputs two = decodeInputs(r, 64, 512, 1f, new int[]{1100, 3}, new int[]{3, 1500}, new int[]{-1, -1});
        checkSplitDecode("2 sequences of 1104 and 1504 keys", two, forced);
        DecodeInputs few = decodeInputs(r, 64, 512, 1f, new int[]{5}, new int[]{10}, new int[]{3});
        checkSplitDecode("1 sequence of 9 keys", few, new String[]{"64"});
        int b = 32;
        int[] windows = new int[b];
        int[] entries = new int[b];
        int[] picks = new int[b];
        for (int i = 0; i < b; i++) {
            windows[i] = r.nextInt(131);
            entries[i] = r.nextInt(401);
            picks[i] = i % 2 == 1 && entries[i] > 0 ? Math.min(entries[i], 256) : -1;
        }
        DecodeInputs batch = decodeInputs(r, 64, 512, 1f, windows, entries, picks);
        checkSplitDecode("32 sequences", batch, new String[]{null, "4"});
        DecodeInputs narrow = decodeInputs(r, 12, 160, 1f, new int[]{70, 0, 33}, new int[]{40, 90, 0},
                new int[]{17, -1, -1});
        checkSplitDecode("3 sequences of 12 heads of 160", narrow, new String[]{"5"});
        Tensor out = dev(nan(1, 64, 512));
        withProperty(CudaSinkDecode.DECODE_SPLITS_PROPERTY, "0", () -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.sinkDecodeAttention(
                    dev(few.q), devAll(few.win), dev(few.k), devAll(few.ent), few.chosen, dev(few.sinks), few.scale, out));
            assertTrue(e.getMessage().contains(CudaSinkDecode.DECODE_SPLITS_PROPERTY + "=0"), e.getMessage());
        });
    }

    /** A decode step's operands on the host: q [B, H, d], k [B, d], sinks [H], each sequence's window, entries, choice. */
    private record DecodeInputs(Tensor q, Tensor k, Tensor sinks, Tensor[] win, Tensor[] ent, int[][] chosen, float scale) {
    }

    /**
     * Seeded operands of a decode step: q uniform in ±qScale, keys and entries in ±1, sinks in ±2; sequence i's window
     * has windows[i] rows (none: null), its entries entries[i], of which it sees all (picks[i] = -1) or picks[i] chosen
     * at random, in ascending order.
     */
    private static DecodeInputs decodeInputs(SplittableRandom r, int h, int d, float qScale, int[] windows, int[] entries,
                                             int[] picks) {
        int b = windows.length;
        Tensor[] win = new Tensor[b];
        Tensor[] ent = new Tensor[b];
        int[][] chosen = new int[b][];
        for (int i = 0; i < b; i++) {
            win[i] = windows[i] == 0 ? null : randn(r, 1f, windows[i], d);
            ent[i] = entries[i] == 0 ? null : randn(r, 1f, entries[i], d);
            if (picks[i] >= 0) {
                int[] all = java.util.stream.IntStream.range(0, entries[i]).toArray();
                for (int j = all.length - 1; j > 0; j--) {
                    int o = r.nextInt(j + 1);
                    int x = all[j];
                    all[j] = all[o];
                    all[o] = x;
                }
                chosen[i] = Arrays.stream(all, 0, picks[i]).sorted().toArray();
            }
        }
        return new DecodeInputs(randn(r, qScale, b, h, d), randn(r, 1f, b, d), randn(r, 2f, h), win, ent, chosen,
                (float) (1 / Math.sqrt(d)));
    }

    /** Device copies of the tensors that are there (nulls stay null), freed after the test. */
    private Tensor[] devAll(Tensor[] host) {
        Tensor[] t = new Tensor[host.length];
        for (int i = 0; i < host.length; i++) {
            t[i] = host[i] == null ? null : dev(host[i]);
        }
        return t;
    }

    /** in's decode attention at each split count (null: the default) against the closed form within 2e-5 of its scale. */
    private void checkSplitDecode(String what, DecodeInputs in, String[] splitCounts) {
        int b = in.q.size(0), h = in.q.size(1), d = in.q.size(2);
        float[] ref = decodeReference(in.q, in.win, in.k, in.ent, in.chosen, in.sinks, in.scale);
        Tensor q = dev(in.q), k = dev(in.k), sinks = dev(in.sinks);
        Tensor[] win = devAll(in.win), ent = devAll(in.ent);
        for (String splits : splitCounts) {
            Tensor out = dev(nan(b, h, d));
            Runnable call = () -> assertTrue(gpu.sinkDecodeAttention(q, win, k, ent, in.chosen, sinks, in.scale, out),
                    "the default kernels take it");
            if (splits == null) {
                call.run();
            } else {
                withProperty(CudaSinkDecode.DECODE_SPLITS_PROPERTY, splits, call);
            }
            assertCloseToScale("sink decode attention, " + what + " of " + h + " heads of " + d + ", "
                    + (splits == null ? "default splits" : splits + " splits"), ref, gpu.toHost(out).toFloatArray(), 2e-5);
        }
    }

    /** The closed form of a decode step in double: each sequence's query over its window, its key, its chosen entries. */
    private static float[] decodeReference(Tensor qt, Tensor[] win, Tensor kt, Tensor[] ent, int[][] chosen, Tensor st,
                                           float scale) {
        int b = qt.size(0), h = qt.size(1), d = qt.size(2);
        float[] q = qt.toFloatArray(), k = kt.toFloatArray(), sinks = st.toFloatArray();
        double[] out = new double[b * h * d];
        for (int i = 0; i < b; i++) {
            java.util.List<float[]> keys = new java.util.ArrayList<>();
            float[] w = win[i] == null ? new float[0] : win[i].toFloatArray();
            for (int j = 0; j < w.length / d; j++) {
                keys.add(Arrays.copyOfRange(w, j * d, (j + 1) * d));
            }
            keys.add(Arrays.copyOfRange(k, i * d, (i + 1) * d));
            float[] e = ent[i] == null ? new float[0] : ent[i].toFloatArray();
            int[] pick = chosen[i] != null ? chosen[i] : java.util.stream.IntStream.range(0, e.length / d).toArray();
            for (int j : pick) {
                keys.add(Arrays.copyOfRange(e, j * d, (j + 1) * d));
            }
            for (int hh = 0; hh < h; hh++) {
                int qo = (i * h + hh) * d;
                double[] l = new double[keys.size()];
                double max = sinks[hh];
                for (int j = 0; j < l.length; j++) {
                    double dot = 0;
                    for (int c = 0; c < d; c++) {
                        dot += (double) q[qo + c] * keys.get(j)[c];
                    }
                    l[j] = dot * scale;
                    max = Math.max(max, l[j]);
                }
                double z = Math.exp(sinks[hh] - max);
                for (int j = 0; j < l.length; j++) {
                    l[j] = Math.exp(l[j] - max);
                    z += l[j];
                }
                for (int j = 0; j < l.length; j++) {
                    for (int c = 0; c < d; c++) {
                        out[qo + c] += l[j] / z * keys.get(j)[c];
                    }
                }
            }
        }
        return toFloat(out);
    }

    /**
     * Each query of k as a decode step has it: its row alone over only the keys its mask leaves it (a mask of zeros),
     * and each of two halves of the queries over the keys any of them sees; both the same bits as the whole launch.
     */
    private static void assertAloneIsTheSameBits(CudaBackend exact, Case k, float[] all) {
        float[] q = k.q.toFloatArray(), kv = k.kv.toFloatArray(), m = k.mask.toFloatArray();
        int row = k.h * k.d;
        for (int i = 0; i < k.t; i++) {
            final int qi = i;
            int[] seen = java.util.stream.IntStream.range(0, k.s).filter(j -> m[qi * k.s + j] == 0f).toArray();
            float[] keys = new float[Math.max(1, seen.length) * k.d];
            for (int e = 0; e < seen.length; e++) {
                System.arraycopy(kv, seen[e] * k.d, keys, e * k.d, k.d);
            }
            float[] zeros = new float[Math.max(1, seen.length)];
            if (seen.length == 0) {
                zeros[0] = Float.NEGATIVE_INFINITY;   // one key, hidden: the row sees nothing
            }
            float[] alone = exactForward(exact, Tensor.of(Arrays.copyOfRange(q, i * row, (i + 1) * row), 1, k.h, k.d),
                    Tensor.of(keys, zeros.length, k.d), Tensor.of(zeros, 1, zeros.length), k.sinks, k.scale, 1, k.h, k.d);
            assertBitsEqual("exact sink attention, query " + i + " alone over its " + seen.length + " keys, " + k.what,
                    Arrays.copyOfRange(all, i * row, (i + 1) * row), alone);
        }
        int half = k.t / 2;
        for (int[] part : new int[][]{{0, half}, {half, k.t}}) {
            int rows = part[1] - part[0];
            if (rows == 0) {
                continue;
            }
            int[] union = java.util.stream.IntStream.range(0, k.s).filter(j -> java.util.stream.IntStream
                    .range(part[0], part[1]).anyMatch(i -> m[i * k.s + j] == 0f)).toArray();
            if (union.length == 0) {
                continue;
            }
            float[] keys = new float[union.length * k.d];
            float[] pm = new float[rows * union.length];
            for (int e = 0; e < union.length; e++) {
                System.arraycopy(kv, union[e] * k.d, keys, e * k.d, k.d);
                for (int i = 0; i < rows; i++) {
                    pm[i * union.length + e] = m[(part[0] + i) * k.s + union[e]];
                }
            }
            float[] got = exactForward(exact, Tensor.of(Arrays.copyOfRange(q, part[0] * row, part[1] * row), rows, k.h, k.d),
                    Tensor.of(keys, union.length, k.d), Tensor.of(pm, rows, union.length), k.sinks, k.scale, rows, k.h, k.d);
            assertBitsEqual("exact sink attention, queries " + part[0] + ".." + part[1] + " over the " + union.length
                    + " keys they see, " + k.what, Arrays.copyOfRange(all, part[0] * row, part[1] * row), got);
        }
    }

    private static float[] exactForward(CudaBackend exact, Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale,
                                        int t, int h, int d) {
        Tensor out = exact.toDevice(nan(t, h, d));
        assertTrue(exact.sinkAttention(exact.toDevice(q), exact.toDevice(kv), exact.toDevice(mask), exact.toDevice(sinks),
                scale, out), "exact mode takes V4's attention");
        return exact.toHost(out).toFloatArray();
    }

    @Test
    void wrongShapesAreRefusedNamingThem() {
        Case k = new Case(rng(7103), CASES[3]);
        Tensor out = poisoned(DType.F32, k.t, k.h, k.d);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.sinkAttention(dev(k.q),
                dev(k.kv), dev(k.mask), dev(Tensor.of(new float[k.h + 1], k.h + 1)), k.scale, out));
        assertTrue(e.getMessage().contains("sinks [" + (k.h + 1) + "]") && e.getMessage().contains("q [" + k.t + ", " + k.h),
                e.getMessage());
    }

    private static Tensor nan(long... shape) {
        float[] v = new float[Math.toIntExact(Arrays.stream(shape).reduce(1, (a, b) -> a * b))];
        Arrays.fill(v, Float.NaN);
        return Tensor.of(v, shape);
    }

    /** Random operands of one case, the mask as DeepSeek V4 builds it. */
    private static final class Case {
        final int t, s, h, d;
        final float scale;
        final Tensor q, kv, mask, sinks, dout;
        final String what;

        Case(SplittableRandom r, int[] c) {
            t = c[0];
            int tokens = c[1], entries = c[2];
            h = c[3];
            d = c[4];
            int window = c[5];
            s = tokens + entries;
            scale = (float) (1 / Math.sqrt(d));
            q = randn(r, 1f, t, h, d);
            kv = randn(r, 1f, s, d);
            sinks = randn(r, 2f, h);
            dout = randn(r, 1f, t, h, d);
            float[] m = new float[t * s];
            Arrays.fill(m, Float.NEGATIVE_INFINITY);
            int past = tokens - t;   // the queries are the last t tokens
            for (int i = 0; i < t; i++) {
                int p = past + i;
                for (int j = 0; j < tokens; j++) {
                    if (j <= p && p - j < window) {
                        m[i * s + j] = 0f;
                    }
                }
                for (int e = 0; e < entries; e++) {
                    if (r.nextInt(3) != 0) {
                        m[i * s + tokens + e] = 0f;
                    }
                }
            }
            if (t > 4) {
                Arrays.fill(m, 2 * s, 3 * s, Float.NEGATIVE_INFINITY);   // query 2 sees nothing
            }
            mask = Tensor.of(m, t, s);
            what = String.format("T=%d S=%d (%d entries) H=%d d=%d window=%d", t, s, entries, h, d, window);
        }
    }

    private void check(Case k, String how) {
        float[][] ref = reference(k);
        Tensor out = poisoned(DType.F32, k.t, k.h, k.d);
        Tensor q = dev(k.q), kv = dev(k.kv), mask = dev(k.mask), sinks = dev(k.sinks);
        assertTrue(gpu.sinkAttention(q, kv, mask, sinks, k.scale, out), "the default kernels take V4's attention");
        assertCloseToScale("sink attention " + k.what + ", " + how, ref[0], gpu.toHost(out).toFloatArray(), 2e-5);
        Tensor dq = poisoned(DType.F32, k.t, k.h, k.d);
        Tensor dkv = poisoned(DType.F32, k.s, k.d);
        assertTrue(gpu.sinkAttentionBackward(q, kv, mask, sinks, k.scale, dev(k.dout), dq, dkv));
        assertCloseToScale("sink attention dq " + k.what + ", " + how, ref[1], gpu.toHost(dq).toFloatArray(), 2e-5);
        assertCloseToScale("sink attention dkv " + k.what + ", " + how, ref[2], gpu.toHost(dkv).toFloatArray(), 2e-5);
    }

    /** out, dq, dkv of the closed form, in double: p = softmax([scale·q·kv_j + mask_j]_j ++ [sink]) without the sink. */
    private static float[][] reference(Case k) {
        float[] q = k.q.toFloatArray(), kv = k.kv.toFloatArray(), m = k.mask.toFloatArray(), sk = k.sinks.toFloatArray();
        float[] dy = k.dout.toFloatArray();
        int t = k.t, s = k.s, h = k.h, d = k.d;
        double[] out = new double[t * h * d], dq = new double[t * h * d], dkv = new double[s * d];
        double[] p = new double[s];
        for (int i = 0; i < t; i++) {
            for (int hh = 0; hh < h; hh++) {
                int qo = (i * h + hh) * d;
                double max = sk[hh];
                double[] l = new double[s];
                for (int j = 0; j < s; j++) {
                    if (m[i * s + j] == Float.NEGATIVE_INFINITY) {
                        l[j] = Double.NEGATIVE_INFINITY;
                        continue;
                    }
                    double dot = 0;
                    for (int c = 0; c < d; c++) {
                        dot += (double) q[qo + c] * kv[j * d + c];
                    }
                    l[j] = dot * k.scale + m[i * s + j];
                    max = Math.max(max, l[j]);
                }
                double z = Math.exp(sk[hh] - max);
                for (int j = 0; j < s; j++) {
                    p[j] = l[j] == Double.NEGATIVE_INFINITY ? 0 : Math.exp(l[j] - max);
                    z += p[j];
                }
                double rowDot = 0;
                double[] dp = new double[s];
                for (int j = 0; j < s; j++) {
                    p[j] /= z;
                    for (int c = 0; c < d; c++) {
                        out[qo + c] += p[j] * kv[j * d + c];
                        dp[j] += (double) dy[qo + c] * kv[j * d + c];
                    }
                    rowDot += p[j] * dp[j];
                }
                for (int j = 0; j < s; j++) {
                    double ds = p[j] * (dp[j] - rowDot) * k.scale;
                    for (int c = 0; c < d; c++) {
                        dq[qo + c] += ds * kv[j * d + c];
                        dkv[j * d + c] += ds * q[qo + c] + p[j] * dy[qo + c];
                    }
                }
            }
        }
        return new float[][]{toFloat(out), toFloat(dq), toFloat(dkv)};
    }

    private static float[] toFloat(double[] v) {
        float[] f = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            f[i] = (float) v[i];
        }
        return f;
    }
}
