package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * How exact mode's tensor-core products ({@code exact_mma.cu}) cut their work (no GPU needed): the ranges of K, which
 * depend on the tiles of weight rows, K and the SM count alone (two waves of blocks at one tile of 64 tokens, at least
 * 4 stages of 32 values a range, at most 64 ranges), and the rows a launch takes so that the ranges' sums stay within
 * their bound. A row's sums are the same in every batch only because nothing here reads the row count. The grouped
 * expert products' tiles of rows ({@link CudaExactExperts#tileRows}), which may read it: every output's sum is the same
 * at either tile.
 */
class ExactSplitsTest {

    @Test
    void rangesOfKForTheProjectionsOfQwen3At132Sms() {
        // blocks of 128 rows for a bf16 weight: q 4096 x 2560, k/v 1024 x 2560, o 2560 x 4096, gate/up 9728 x 2560,
        // down 2560 x 9728, the head 151936 x 2560
        assertEquals(9, CudaExactOps.splits(32, 2560, 132), "q: 264 / 32 = 8.25, rounded up");
        assertEquals(20, CudaExactOps.splits(8, 2560, 132), "k/v: 33 wanted, 80 chunks allow 20");
        assertEquals(14, CudaExactOps.splits(20, 4096, 132), "o: 264 / 20 = 13.2, rounded up");
        assertEquals(4, CudaExactOps.splits(76, 2560, 132), "gate/up: 264 / 76 = 3.47, rounded up");
        assertEquals(14, CudaExactOps.splits(20, 9728, 132), "down");
        assertEquals(1, CudaExactOps.splits(1187, 2560, 132), "the head: more tiles than two waves");
        // a LoRA factor's 16 rows: one tile, as many ranges as K allows up to 64
        assertEquals(20, CudaExactOps.splits(1, 2560, 132), "x . A^T over K = 2560");
        assertEquals(64, CudaExactOps.splits(1, 9728, 132), "x . A^T over K = 9728: at most 64");
        assertEquals(1, CudaExactOps.splits(152, 16, 132), "lo . B^T over K = 16: one chunk");
    }

    @Test
    void everyRangeHoldsFourStagesAndTheCountStaysInItsBounds() {
        for (int sms : new int[]{1, 78, 132, 148}) {
            for (int tiles = 1; tiles <= 400; tiles += 7) {
                for (int k = 8; k <= 20000; k += 376) {
                    int s = CudaExactOps.splits(tiles, k, sms);
                    int chunks = (k + 31) / 32;
                    assertTrue(s >= 1 && s <= 64, "ranges " + s + " for " + tiles + " tiles, K " + k);
                    assertTrue(s == 1 || chunks / s >= 4, "ranges of fewer than 4 chunks: " + s + " of " + chunks);
                    assertTrue(s == 1 || (long) tiles * (s - 1) < 2L * sms, "more ranges than two waves need: " + s);
                }
            }
        }
    }

    @Test
    void rowsALaunchKeepTheSplitSumsWithinTheirBound() {
        assertEquals(Integer.MAX_VALUE, CudaExactOps.rowsPerLaunch(1, 9728), "unsplit: one launch");
        // 64 MiB / (4 B x 20 ranges x 1024 columns) = 819 rows, whole tiles of 64: 768
        assertEquals(768, CudaExactOps.rowsPerLaunch(20, 1024));
        for (int splits : new int[]{2, 7, 20, 64}) {
            for (int n : new int[]{16, 1024, 2560, 9728, 151936}) {
                int rows = CudaExactOps.rowsPerLaunch(splits, n);
                assertEquals(0, rows % 64, "whole tiles of tokens");
                assertTrue(rows == 64 || 4L * splits * n * rows <= 64L << 20, splits + " x " + n + ": " + rows + " rows");
            }
        }
        System.setProperty("orbit.cuda.exactSplitBytes", "65536");
        try {
            assertEquals(64, CudaExactOps.rowsPerLaunch(20, 96), "a bound below one tile still takes one tile");
        } finally {
            System.clearProperty("orbit.cuda.exactSplitBytes");
        }
    }

    /**
     * Which products take every range of K in one block: those with ranges and 8 blocks an SM without them (a training
     * step's 4096 rows through q/k/v, not a decode batch's 64); the switch takes it wherever there are ranges, or never,
     * and names itself when set to anything else.
     */
    @Test
    void rangesOfKInOneBlockAtTrainingSizes() {
        int q = CudaExactOps.splits(32, 2560, 132);
        assertTrue(CudaExactOps.folds(64L * 32, q, 132), "4096 rows (64 tiles) x 32 weight tiles");
        assertTrue(!CudaExactOps.folds(32, q, 132), "a decode batch: 1 tile of rows x 32 weight tiles keeps its " + q + " ranges");
        assertTrue(CudaExactOps.folds(122L * 12, CudaExactOps.splits(12, 2048, 132), 132),
                "a decode step's grouped experts: about 122 experts' tiles of 16 rows x 12 blocks of 64 weight rows (768)");
        assertTrue(!CudaExactOps.folds(1_000_000, 1, 132), "nothing to fold without ranges");
        assertTrue(CudaExactOps.folds(1056, 4, 132), "the bound: 8 blocks an SM (1056 at 132 SMs)");
        assertTrue(!CudaExactOps.folds(1055, 4, 132));
        System.setProperty("orbit.cuda.exactFold", "on");
        try {
            assertTrue(CudaExactOps.folds(1, 2, 132));
            assertTrue(!CudaExactOps.folds(1, 1, 132));
            System.setProperty("orbit.cuda.exactFold", "off");
            assertTrue(!CudaExactOps.folds(1_000_000, 16, 132));
            System.setProperty("orbit.cuda.exactFold", "yes");
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> CudaExactOps.folds(1_000_000, 16, 132));
            assertTrue(e.getMessage().contains("orbit.cuda.exactFold=yes"), e.getMessage());
        } finally {
            System.clearProperty("orbit.cuda.exactFold");
        }
    }

    @Test
    void tilesOfWeightRows() {
        assertEquals(128, CudaExactOps.blockRows(1), "a bf16 weight: 4 warps of 32 rows");
        assertEquals(64, CudaExactOps.blockRows(3), "three planes: 4 warps of 16 rows");
        System.setProperty("orbit.cuda.exactMmaRows", "1");
        try {
            assertEquals(128, CudaExactOps.blockRows(1), "16 rows a warp: 8 warps");
            assertEquals(8, CudaExactOps.warps(1));
            System.setProperty("orbit.cuda.exactMmaWarps", "4");
            assertEquals(64, CudaExactOps.blockRows(1), "16 rows a warp, 4 warps");
        } finally {
            System.clearProperty("orbit.cuda.exactMmaRows");
            System.clearProperty("orbit.cuda.exactMmaWarps");
        }
    }

    /**
     * The grouped expert products' tiles of x rows: 16 where the experts with rows average at most 24 (a decode step of
     * 64 tokens x 8 of 128 experts: 512 rows over about 122 experts), 64 above (a training micro-batch), 64 for the
     * transposed products; the switch names itself and what it takes when given anything else.
     */
    @Test
    void expertTilesFollowTheRowsAnExpert() {
        assertEquals(16, CudaExactExperts.tileRows(false, 512, 122), "a decode step: about 4 rows an expert");
        assertEquals(16, CudaExactExperts.tileRows(false, 24 * 10, 10), "24 rows an expert");
        assertEquals(64, CudaExactExperts.tileRows(false, 24 * 10 + 1, 10), "just over 24");
        assertEquals(64, CudaExactExperts.tileRows(false, 32768, 128), "a training micro-batch of 4096 tokens x 8");
        assertEquals(64, CudaExactExperts.tileRows(true, 512, 122), "transposed: 64 always");
        System.setProperty("orbit.cuda.exactExpertTile", "64");
        try {
            assertEquals(64, CudaExactExperts.tileRows(false, 512, 122), "set to 64");
            System.setProperty("orbit.cuda.exactExpertTile", "32");
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> CudaExactExperts.tileRows(false, 512, 122));
            assertTrue(e.getMessage().contains("-Dorbit.cuda.exactExpertTile=32") && e.getMessage().contains("16 or 64"),
                    e.getMessage());
        } finally {
            System.clearProperty("orbit.cuda.exactExpertTile");
        }
    }

    /**
     * Exact mode's INT4 form: the codes form unless the switch says planes; anything else is refused, the message naming
     * the property and what it takes (the two forms round differently, so a typo must not pick one silently).
     */
    @Test
    void int4FormSwitch() {
        assertTrue(CudaExactExperts.int4Codes(), "the codes form by default");
        System.setProperty("orbit.cuda.exactInt4", "planes");
        try {
            assertTrue(!CudaExactExperts.int4Codes(), "planes");
            System.setProperty("orbit.cuda.exactInt4", "codes");
            assertTrue(CudaExactExperts.int4Codes(), "codes");
            System.setProperty("orbit.cuda.exactInt4", "dequantized");
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    CudaExactExperts::int4Codes);
            assertTrue(e.getMessage().contains("-Dorbit.cuda.exactInt4=dequantized") && e.getMessage().contains("codes or planes"),
                    e.getMessage());
        } finally {
            System.clearProperty("orbit.cuda.exactInt4");
        }
    }
}
