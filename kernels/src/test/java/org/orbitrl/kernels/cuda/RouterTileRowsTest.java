package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The x rows a block of {@code moe_router_tiles} stages (no GPU needed): enough that expert chunks of 8 times the tiles
 * come near one block an SM, at most 8 rows and 96 KiB of them; none (the per-token kernel) below the switch's token
 * count, with the switch off, or where a row or the selecting warps' logits pass the bytes.
 */
class RouterTileRowsTest {

    @Test
    void tilesNearOneBlockAnSm() {
        assertEquals(8, CudaDecodeRouter.tileRows(64, 128, 2048, 132, null), "Qwen3-30B-A3B, batch 64: 16 chunks x 8 tiles");
        assertEquals(1, CudaDecodeRouter.tileRows(8, 128, 2048, 132, null), "batch 8: 128 blocks of a row each");
        assertEquals(5, CudaDecodeRouter.tileRows(37, 128, 2048, 132, null), "37 x 16 / 132 = 4.5 rounds up");
        assertEquals(8, CudaDecodeRouter.tileRows(256, 128, 2048, 132, null), "at most 8 rows");
        assertEquals(3, CudaDecodeRouter.tileRows(64, 256, 7168, 132, null), "DeepSeek-V3's hidden 7168: 3 rows in 96 KiB");
        assertEquals(3, CudaDecodeRouter.tileRows(64, 384, 7168, 132, null), "Kimi-K2's 384 experts");
    }

    @Test
    void theSwitchAndTheBounds() {
        assertEquals(0, CudaDecodeRouter.tileRows(7, 128, 2048, 132, null), "below 8 tokens: a block a token");
        assertEquals(0, CudaDecodeRouter.tileRows(1, 128, 2048, 132, null), "batch 1");
        assertEquals(1, CudaDecodeRouter.tileRows(1, 128, 2048, 132, "1"), "the switch's bound set to 1 token");
        assertEquals(0, CudaDecodeRouter.tileRows(64, 128, 2048, 132, "off"), "the switch off");
        assertEquals(0, CudaDecodeRouter.tileRows(64, 128, 32768, 132, null), "a row of 128 KiB does not fit");
        assertEquals(0, CudaDecodeRouter.tileRows(64, 4096, 2048, 132, null), "8 warps' logits of 4096 experts: 128 KiB");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> CudaDecodeRouter.tileRows(64, 128, 2048, 132, "many"));
        assertTrue(e.getMessage().contains("orbit.cuda.routerTiles=many"), e.getMessage());
    }
}
