package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The key splits of the tiled paged decode on a 132-SM device (target 4 blocks an SM: 528) over tables of 1024 keys:
 * a batch that fills the device alone takes one split; a smaller one at least enough splits to fill it, and blocks of
 * at most 128 keys; never more splits than 32-key tiles. The tensor-core kernels' (target 2 blocks an SM: 264): the
 * most splits that keep the blocks within the target, at least one, at most one per 64 keys.
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
        assertEquals(1, CudaFlashAttention.mmaSplits(256L * 4, target, 1024), "256 sequences: one split");
        assertEquals(1, CudaFlashAttention.mmaSplits(64L * 4, target, 1024), "64 sequences x 4 kv heads: 256 blocks, one split");
        assertEquals(8, CudaFlashAttention.mmaSplits(8L * 4, target, 1024), "8 sequences: 8 splits, 256 blocks");
        assertEquals(16, CudaFlashAttention.mmaSplits(4, target, 1024), "one sequence: 64 keys a block at least");
        assertEquals(2, CudaFlashAttention.mmaSplits(4, target, 100), "a 100-key capacity: two splits");
        assertEquals(1, CudaFlashAttention.mmaSplits(4, target, 16), "one tile of keys: one split");
    }
}
