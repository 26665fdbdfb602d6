package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's lightning-indexer scores on the device ({@link org.orbitrl.kernels.Backend#indexerScores}:
 * {@code Σ_h relu(q[t, h]·keys[m]) · qScale · weights[t, h]} for the entries a query has closed, -inf past them)
 * against the closed form in double, within 2e-5 of the scores' scale (f32 cuBLAS products without TF32 against double
 * sums); the entries past each query's count -inf exactly. Shapes: V4-Flash's indexer (64 heads of 128) over 300
 * entries for 37 queries, and 5 queries of 3 heads of 16 over 7 entries; counts from 0 to all; chunks of queries forced
 * down to 4. Exact mode: the same closed form within 2e-5, its two forms (tiles of queries, a block a query) the same
 * bits, and each query's scores the same bits when it runs alone over only the entries it has closed (as a decode step
 * has it). Wrong shapes are refused, naming each.
 */
class CudaIndexerScoresTest extends CudaTestBase {
    /** {T, H, D, M}. */
    private static final int[][] CASES = {{37, 64, 128, 300}, {5, 3, 16, 7}};

    @Test
    void scoresMatchTheClosedForm() {
        SplittableRandom r = rng(8101);
        for (int[] c : CASES) {
            Case k = new Case(r, c);
            check(k, "default chunks");
            String four = "" + 4L * c[1] * c[3] * DType.F32.bytes();
            withProperty(CudaMqaAttention.CHUNK_PROPERTY, four, () -> check(k, "chunks of 4 queries"));
        }
    }

    @Test
    void exactModeMatchesTheClosedFormAndEachQueryIsTheSameBitsAlone() {
        SplittableRandom r = rng(8102);
        try (CudaBackend exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
            for (int[] c : CASES) {
                Case k = new Case(r, c);
                float[][] forms = new float[2][];
                String[] names = {"tiles", "rows"};
                for (int f = 0; f < 2; f++) {
                    int ff = f;
                    withProperty(CudaMqaAttention.EXACT_INDEXER_PROPERTY, names[f],
                            () -> forms[ff] = scores(exact, k.q, k.keys, k.w, k.closed, k.scale, k.t, k.m));
                }
                float[] all = forms[0];
                assertMatchesTheClosedForm(k, all, "exact mode");
                assertBitsEqual(String.format("exact indexer scores by rows against tiles, T=%d H=%d D=%d M=%d", k.t, k.h, k.d,
                        k.m), all, forms[1]);
                // each query as a decode step has it: alone, over only the entries it has closed
                float[] q = k.q.toFloatArray(), keys = k.keys.toFloatArray(), w = k.w.toFloatArray();
                int row = k.h * k.d;
                for (int i = 0; i < k.t; i++) {
                    int n = Math.max(1, k.counts[i]);
                    float[] alone = scores(exact, Tensor.of(Arrays.copyOfRange(q, i * row, (i + 1) * row), 1, k.h, k.d),
                            Tensor.of(Arrays.copyOf(keys, n * k.d), n, k.d),
                            Tensor.of(Arrays.copyOfRange(w, i * k.h, (i + 1) * k.h), 1, k.h),
                            Tensor.ofInts(new int[]{k.counts[i]}, 1), k.scale, 1, n);
                    assertBitsEqual(String.format("exact indexer scores of query %d alone over its %d entries, T=%d H=%d D=%d M=%d",
                            i, n, k.t, k.h, k.d, k.m), Arrays.copyOfRange(all, i * k.m, i * k.m + n), alone);
                }
            }
        }
    }

    @Test
    void wrongShapesAreRefusedNamingThem() {
        Case k = new Case(rng(8103), CASES[1]);
        Tensor out = poisoned(DType.F32, k.t, k.m + 1);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gpu.indexerScores(dev(k.q), dev(k.keys), dev(k.w), dev(k.closed), k.scale, out));
        assertTrue(e.getMessage().contains("out [" + k.t + ", " + (k.m + 1) + "]") && e.getMessage().contains("keys [" + k.m),
                e.getMessage());
    }

    private static float[] scores(CudaBackend b, Tensor q, Tensor keys, Tensor w, Tensor closed, float scale, int t, int m) {
        float[] nan = new float[t * m];
        Arrays.fill(nan, Float.NaN);
        Tensor out = b.toDevice(Tensor.of(nan, t, m));
        assertTrue(b.indexerScores(b.toDevice(q), b.toDevice(keys), b.toDevice(w), b.toDevice(closed), scale, out),
                b.name() + " takes the indexer's scores");
        return b.toHost(out).toFloatArray();
    }

    private static final class Case {
        final int t, h, d, m;
        final float scale;
        final Tensor q, keys, w, closed;
        final int[] counts;

        Case(SplittableRandom r, int[] c) {
            t = c[0];
            h = c[1];
            d = c[2];
            m = c[3];
            scale = (float) (1 / Math.sqrt(d));
            q = randn(r, 1f, t, h, d);
            keys = randn(r, 1f, m, d);
            w = randn(r, 0.2f, t, h);
            int[] n = new int[t];
            for (int i = 0; i < t; i++) {
                n[i] = i == 0 ? 0 : i == t - 1 ? m : r.nextInt(m + 1);
            }
            counts = n;
            closed = Tensor.ofInts(n, t);
        }
    }

    private void check(Case k, String how) {
        Tensor out = poisoned(DType.F32, k.t, k.m);
        assertTrue(gpu.indexerScores(dev(k.q), dev(k.keys), dev(k.w), dev(k.closed), k.scale, out));
        assertMatchesTheClosedForm(k, gpu.toHost(out).toFloatArray(), how);
    }

    private static void assertMatchesTheClosedForm(Case k, float[] got, String how) {
        float[] q = k.q.toFloatArray(), keys = k.keys.toFloatArray(), w = k.w.toFloatArray();
        int[] n = k.counts;
        float[] ref = new float[k.t * k.m];
        for (int t = 0; t < k.t; t++) {
            for (int e = 0; e < k.m; e++) {
                if (e >= n[t]) {
                    ref[t * k.m + e] = Float.NEGATIVE_INFINITY;
                    continue;
                }
                double acc = 0;
                for (int h = 0; h < k.h; h++) {
                    double dot = 0;
                    for (int c = 0; c < k.d; c++) {
                        dot += (double) q[(t * k.h + h) * k.d + c] * keys[e * k.d + c];
                    }
                    acc += Math.max(dot, 0) * k.scale * w[t * k.h + h];
                }
                ref[t * k.m + e] = (float) acc;
            }
        }
        float[] refOpen = ref.clone();
        float[] gotOpen = got.clone();
        for (int i = 0; i < ref.length; i++) {
            if (ref[i] == Float.NEGATIVE_INFINITY) {
                assertEquals(Float.NEGATIVE_INFINITY, got[i], "entry " + (i % k.m) + " of query " + (i / k.m) + " is not closed");
                refOpen[i] = 0;
                gotOpen[i] = 0;
            }
        }
        assertCloseToScale(String.format("indexer scores T=%d H=%d D=%d M=%d, %s", k.t, k.h, k.d, k.m, how), refOpen, gotOpen, 2e-5);
    }
}
