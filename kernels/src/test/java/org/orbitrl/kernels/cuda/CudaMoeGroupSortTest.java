package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MoeHostOps;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link org.orbitrl.kernels.Backend#moeGroup} on the device (the counting sort over tiles of 2048
 * pairs: counts, scan, stable scatter; above 1024 experts the single-block grouping) against the host
 * grouping ({@link MoeHostOps#group}), exactly: offsets, order and position, for pair counts of one
 * partial tile up to several tiles with a partial last one, 8 experts a token, skewed choices (some
 * experts with many pairs, some without any), one expert taking every pair, and 128, 384 and 1100
 * experts; the single-block grouping ({@code orbit.cuda.moeGroup=single}) as well, on both sides of the 1024 pairs
 * up to which it places every pair at once. An expert id outside
 * the layer is reported at the next synchronisation.
 */
class CudaMoeGroupSortTest extends CudaTestBase {
    private static final int TOPK = 8;

    @Test
    void groupingIsTheHostsStableSortForEveryTileCountAndExpertCount() {
        SplittableRandom r = rng(951);
        for (int experts : new int[]{128, 384, 1100}) {
            for (int tokens : new int[]{37, 256, 1000, 1500}) {   // 296 pairs .. 12000 pairs (5 tiles, the last partial)
                check("skewed, " + experts + " experts, " + tokens + " tokens", skewed(r, tokens, experts), tokens, experts);
            }
        }
        int tokens = 700;
        int[] one = new int[tokens * TOPK];
        java.util.Arrays.fill(one, 5);   // every pair on expert 5 (not a valid top-k, but a valid grouping input)
        check("one expert", one, tokens, 128);
    }

    @Test
    void singleBlockGroupingStillMatches() {
        SplittableRandom r = rng(952);
        String before = System.getProperty(CudaMoeTrain.GROUP_PROPERTY);
        System.setProperty(CudaMoeTrain.GROUP_PROPERTY, "single");
        try {
            check("single block, 128 experts", skewed(r, 1000, 128), 1000, 128);
            // up to 1024 pairs every pair is placed at once, above it warp 0 scatters tiles: the same order
            for (int experts : new int[]{128, 384}) {
                for (int tokens : new int[]{1, 64, 128, 129}) {
                    check("single block, " + experts + " experts, " + tokens + " tokens", skewed(r, tokens, experts), tokens, experts);
                }
            }
        } finally {
            if (before == null) {
                System.clearProperty(CudaMoeTrain.GROUP_PROPERTY);
            } else {
                System.setProperty(CudaMoeTrain.GROUP_PROPERTY, before);
            }
        }
    }

    @Test
    void expertIdOutsideTheLayerIsReported() {
        int[] ids = new int[64 * TOPK];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = i % 128;
        }
        ids[300] = 128;
        Tensor hIds = Tensor.ofInts(ids, 64, TOPK);
        Tensor off = poisoned(DType.I32, 129);
        Tensor order = poisoned(DType.I32, ids.length);
        Tensor pos = poisoned(DType.I32, ids.length);
        gpu.moeGroup(dev(hIds), 128, off, order, pos);
        IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        assertTrue(e.getMessage().contains("expert id 128"), e.getMessage());
    }

    private void check(String what, int[] ids, int tokens, int experts) {
        int p = ids.length;
        Tensor hIds = Tensor.ofInts(ids, tokens, TOPK);
        Tensor[] ref = {host(experts + 1), host(p), host(p)};
        MoeHostOps.group(hIds, experts, ref[0], ref[1], ref[2]);
        Tensor off = poisoned(DType.I32, experts + 1);
        Tensor order = poisoned(DType.I32, p);
        Tensor pos = poisoned(DType.I32, p);
        gpu.moeGroup(dev(hIds), experts, off, order, pos);
        assertExact("moeGroup offsets, " + what, ref[0].toLongArray(), gpu.toHost(off).toLongArray());
        assertExact("moeGroup order, " + what, ref[1].toLongArray(), gpu.toHost(order).toLongArray());
        assertExact("moeGroup position, " + what, ref[2].toLongArray(), gpu.toHost(pos).toLongArray());
    }

    /** Ids [tokens, 8], distinct within a token, skewed towards low experts; the top quarter of experts never chosen. */
    private static int[] skewed(SplittableRandom r, int tokens, int experts) {
        int used = experts - experts / 4;
        int[] ids = new int[tokens * TOPK];
        for (int t = 0; t < tokens; t++) {
            List<Integer> taken = new ArrayList<>();
            while (taken.size() < TOPK) {
                int e = Math.min(used - 1, (int) (used * Math.pow(r.nextDouble(), 2.0)));
                if (!taken.contains(e)) {
                    taken.add(e);
                }
            }
            for (int j = 0; j < TOPK; j++) {
                ids[t * TOPK + j] = taken.get(j);
            }
        }
        return ids;
    }

    private static Tensor host(long n) {
        return Tensor.allocate(Arena.ofAuto(), DType.I32, n);
    }
}
