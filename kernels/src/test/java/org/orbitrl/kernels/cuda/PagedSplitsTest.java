package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The key splits of the tiled paged decode on a 132-SM device (target 4 blocks an SM: 528) over tables of 1024 keys:
 * a batch that fills the device alone takes one split; a smaller one at least enough splits to fill it, and blocks of
 * at most 128 keys; never more splits than 32-key tiles. The tensor-core kernels': the most splits that keep the
 * blocks within two an SM (264), at most one per 64 keys, and up to one per 32 keys while the blocks stay within one
 * an SM (132); {@code -Dorbit.cuda.pagedSplitKeys} sets the keys a split takes at least in place of that rule.
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
        int sms = 132;
        assertEquals(1, CudaFlashAttention.mmaSplits(256L * 4, sms, 1024, 0), "256 sequences: one split");
        assertEquals(1, CudaFlashAttention.mmaSplits(64L * 4, sms, 1024, 0), "64 sequences x 4 kv heads: 256 blocks, one split");
        assertEquals(8, CudaFlashAttention.mmaSplits(8L * 4, sms, 1024, 0), "8 sequences: 8 splits, 256 blocks");
        assertEquals(16, CudaFlashAttention.mmaSplits(2L * 4, sms, 1024, 0), "2 sequences: 16 splits of 64 keys, 128 blocks");
        assertEquals(32, CudaFlashAttention.mmaSplits(4, sms, 1024, 0), "one sequence: 32 splits of 32 keys, 128 blocks");
        assertEquals(16, CudaFlashAttention.mmaSplits(16, sms, 1024, 0), "16 kv heads, one sequence: 32-key splits would pass 132 blocks");
        assertEquals(4, CudaFlashAttention.mmaSplits(4, sms, 100, 0), "a 100-key capacity: four 32-key splits");
        assertEquals(1, CudaFlashAttention.mmaSplits(4, sms, 16, 0), "one tile of keys: one split");
    }

    /** {@code -Dorbit.cuda.pagedSplitKeys}: two blocks an SM, at most one split per that many keys. */
    @Test
    void splitKeysSetByHandBindTheSplitsAlone() {
        int sms = 132;
        int[] expected64 = {16, 16, 16, 8, 1};
        int[] expected32 = {32, 32, 16, 8, 1};
        int[] batches = {1, 2, 4, 8, 64};
        for (int i = 0; i < batches.length; i++) {
            long base = 4L * batches[i];
            assertEquals(expected64[i], CudaFlashAttention.mmaSplits(base, sms, 1024, 64), batches[i] + " sequences, 64 keys a split");
            assertEquals(expected32[i], CudaFlashAttention.mmaSplits(base, sms, 1024, 32), batches[i] + " sequences, 32 keys a split");
        }
        assertEquals(64, CudaFlashAttention.mmaSplits(4, sms, 1024, 16), "one sequence, 16 keys a split: 64");
        for (String v : new String[]{"8", "80", "24", "x"}) {
            withSplitKeys(v, () -> {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, CudaFlashAttention::mmaSplitKeys);
                assertTrue(e.getMessage().contains("pagedSplitKeys=" + v), e.getMessage());
            });
        }
        withSplitKeys("32", () -> assertEquals(32, CudaFlashAttention.mmaSplitKeys()));
        assertEquals(0, CudaFlashAttention.mmaSplitKeys(), "unset: the default rule");
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
