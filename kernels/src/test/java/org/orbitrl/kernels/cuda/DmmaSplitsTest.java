package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The ranges of K the tensor-core decode products ({@code dmma.cu}) take (no GPU needed): the count nearest 1.5 blocks an
 * SM, at least one, at most 8 and the chunks of K, fewer where the partial tiles (64 rows of x, 128 rows a block, 2 Mi
 * floats in all) would not fit; a count set by hand within the same bounds. Row blocks of 128 weight rows.
 */
class DmmaSplitsTest {

    @Test
    void theCountNearestOneAndAHalfBlocksAnSm() {
        assertEquals(5, CudaLowRankOps.dmmaSplits(40, 32, 132, 0), "q/k/v of Qwen3-30B-A3B on the H200: 198 / 40 = 4.95");
        assertEquals(6, CudaLowRankOps.dmmaSplits(40, 32, 148, 0), "the same on 148 SMs: 222 / 40 = 5.55");
        assertEquals(1, CudaLowRankOps.dmmaSplits(200, 32, 132, 0), "more row blocks than the target: one range");
        assertEquals(8, CudaLowRankOps.dmmaSplits(16, 64, 132, 0), "198 / 16 = 12.4: at most 8");
        assertEquals(3, CudaLowRankOps.dmmaSplits(40, 3, 132, 0), "no more ranges than chunks of K");
        assertEquals(2, CudaLowRankOps.dmmaSplits(128, 32, 132, 0), "198 / 128 = 1.55 rounds to 2");
    }

    @Test
    void aSetCountAndThePartialTilesBound() {
        assertEquals(2, CudaLowRankOps.dmmaSplits(40, 32, 132, 2), "set by hand");
        assertEquals(8, CudaLowRankOps.dmmaSplits(20, 32, 132, 12), "a set count at most 8");
        // 2 Mi floats of partial tiles hold splits * rowBlocks * 64 * 128 floats
        assertEquals(6, CudaLowRankOps.dmmaSplits(40, 32, 132, 8), "40 row blocks: the tiles of 6 ranges fit, of 7 not");
        assertEquals(1, CudaLowRankOps.dmmaSplits(256, 32, 132, 4), "the tiles of 2 ranges would not fit");
        assertEquals(0, CudaLowRankOps.dmmaSplits(257, 32, 132, 0), "not even one range's tiles fit");
    }
}
