package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/**
 * The introselect top-k: with distinct scores it must return exactly the k largest (checked
 * against a full sort, seeded random rows of every length 1..40 and every k); with ties, the
 * choice follows the partition order (the fixture's indexer rows exercise that against PyTorch).
 */
public class DeepseekV4TopKTest {

    @Test
    void distinctScoresGiveTheKLargest() {
        Random rnd = new Random(42);
        for (int n = 1; n <= 40; n++) {
            for (int k = 1; k <= n; k++) {
                float[] v = new float[n];
                for (int i = 0; i < n; i++) {
                    v[i] = (float) rnd.nextGaussian() + i * 1e-3f;
                }
                Integer[] order = new Integer[n];
                for (int i = 0; i < n; i++) {
                    order[i] = i;
                }
                Arrays.sort(order, (a, b) -> Float.compare(v[b], v[a]));
                int[] want = Arrays.stream(order).limit(k).mapToInt(Integer::intValue).sorted().toArray();
                int[] got = DeepseekV4TopK.select(v, k).clone();
                Arrays.sort(got);
                assertArrayEquals(want, got, "n " + n + ", k " + k + ", scores " + Arrays.toString(v));
            }
        }
    }

    @Test
    void tiedZerosNeverLoseToMaskedEntries() {
        // a row as the indexer sees it late in a sequence: entries not yet closed are -inf
        float[] v = {0.11f, 0f, 0f, 0f, 0.24f, 2.21f, Float.NEGATIVE_INFINITY, Float.NEGATIVE_INFINITY};
        int[] got = DeepseekV4TopK.select(v, 4).clone();
        Arrays.sort(got);
        // 5, 4, 0 are certain; the fourth is one of the tied zeros (1, 2 or 3), never a -inf entry
        assertArrayEquals(new int[] {0, 4, 5}, new int[] {got[0] == 0 ? 0 : -1, got[2], got[3]});
        org.junit.jupiter.api.Assertions.assertTrue(got[1] >= 1 && got[1] <= 3, Arrays.toString(got));
    }
}
