package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The key splits of the tiled paged decode on a 132-SM device (target 4 blocks an SM: 528) over tables of 1024 keys:
 * a batch that fills the device alone takes one split; a smaller one at least enough splits to fill it, and blocks of
 * at most 128 keys; never more splits than 32-key tiles. The tensor-core kernels' (target 2 blocks an SM: 264): the
 * most splits that keep the blocks within the target, at least one, at most one per 64 keys (or per 16-48 keys asked
 * for by {@code -Dorbit.cuda.pagedSplitKeys}, which at these tables splits only one and two sequences more finely).
 */
class PagedSplitsTest {
    private static final int TARGET = 4 * 132;

    @Test
    void splitsFollowTheBatchAndTheCapacity() {
        assertEquals(1, CudaFlashAttention.tiledSplits(256L * 4, TARGET, 1024), "256 sequences x 4 kv heads fill the device");
        assertEquals(8, CudaFlashAttention.tiledSplits(64L * 4, TARGET, 1024), "64 sequences: 128-key blocks");
        assertEquals(17, CudaFlashAttention.tiledSplits(8L * 4, TARGET, 1024), "8 sequences: enough blocks to fill the device");
        assertEquals(32, CudaFlashAttention.tiledSplits(4, TARGET, 1024), "one sequence: a 32-key tile a block at most");
        assertEquals(4, CudaFlashAttention.tiledSplits(64L * 4, TARGET, 512), "a 512-key capacity: four 128-key blocks");
        assertEquals(1, CudaFlashAttention.tiledSplits(64L * 4, TARGET, 16), "one block of keys: one split");
    }

    @Test
    void tensorCoreSplitsKeepBlocksWithinTheTarget() {
        int target = 2 * 132;
        assertEquals(1, CudaFlashAttention.mmaSplits(256L * 4, target, 1024, 64), "256 sequences: one split");
        assertEquals(1, CudaFlashAttention.mmaSplits(64L * 4, target, 1024, 64), "64 sequences x 4 kv heads: 256 blocks, one split");
        assertEquals(8, CudaFlashAttention.mmaSplits(8L * 4, target, 1024, 64), "8 sequences: 8 splits, 256 blocks");
        assertEquals(16, CudaFlashAttention.mmaSplits(4, target, 1024, 64), "one sequence: 64 keys a block at least");
        assertEquals(2, CudaFlashAttention.mmaSplits(4, target, 100, 64), "a 100-key capacity: two splits");
        assertEquals(1, CudaFlashAttention.mmaSplits(4, target, 16, 64), "one tile of keys: one split");
    }

    /** {@code -Dorbit.cuda.pagedSplitKeys}: finer splits at one or two sequences only (from four the target binds first). */
    @Test
    void fewerKeysASplitSplitOnlyTheSmallestBatchesMore() {
        int target = 2 * 132;
        int k = CudaFlashAttention.MMA_SPLIT_KEYS;
        for (int b : new int[]{1, 2, 4, 8, 64}) {
            long base = 4L * b;
            int finer = CudaFlashAttention.mmaSplits(base, target, 1024, 32);
            int normal = CudaFlashAttention.mmaSplits(base, target, 1024, k);
            assertEquals(b <= 2 ? 2 * normal : normal, finer, b + " sequences, 4 kv heads, tables of 1024 keys");
        }
        assertEquals(64, CudaFlashAttention.mmaSplits(4, target, 1024, 16), "one sequence, 16 keys a split: 64");
        for (String v : new String[]{"8", "80", "24", "x"}) {
            withSplitKeys(v, () -> {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, CudaFlashAttention::mmaSplitKeys);
                assertTrue(e.getMessage().contains("pagedSplitKeys=" + v), e.getMessage());
            });
        }
        withSplitKeys("32", () -> assertEquals(32, CudaFlashAttention.mmaSplitKeys()));
        assertEquals(k, CudaFlashAttention.mmaSplitKeys(), "64 by default");
    }

    /** Runs {@code body} with {@code -Dorbit.cuda.pagedSplitKeys=v}, cleared after. */
    private static void withSplitKeys(String v, Runnable body) {
        System.setProperty(CudaFlashAttention.SPLIT_KEYS_PROPERTY, v);
        try {
            body.run();
        } finally {
            System.clearProperty(CudaFlashAttention.SPLIT_KEYS_PROPERTY);
        }
    }
}
