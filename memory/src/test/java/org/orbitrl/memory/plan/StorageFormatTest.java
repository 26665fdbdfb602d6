package org.orbitrl.memory.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** Storage bytes against the formats' closed forms, on seeded random shapes. */
class StorageFormatTest {

    @Test
    void closedForms() {
        SplittableRandom rnd = new SplittableRandom(11);
        for (int i = 0; i < 200; i++) {
            long rows = 1 + rnd.nextInt(3000);
            long cols = 128L * (1 + rnd.nextInt(60));
            long n = rows * cols;
            assertEquals(2 * n, StorageFormat.BF16.bytes(rows, cols));
            // INT4 g32: half a byte per value + a bf16 scale per 32 values.
            assertEquals(n / 2 + n / 32 * 2, StorageFormat.INT4_G32.bytes(rows, cols), rows + "x" + cols);
            // MXFP4: half a byte per value + one E8M0 byte per 32.
            assertEquals(n / 2 + n / 32, StorageFormat.MXFP4.bytes(rows, cols), rows + "x" + cols);
            // NVFP4: half a byte + one E4M3 byte per 16 + one f32 global scale.
            assertEquals(n / 2 + n / 16 + 4, StorageFormat.NVFP4.bytes(rows, cols), rows + "x" + cols);
            // FP8 block 128: a byte per value + an f32 per started 128x128 block.
            long blocks = ((rows + 127) / 128) * (cols / 128);
            assertEquals(n + 4 * blocks, StorageFormat.FP8_BLOCK128.bytes(rows, cols), rows + "x" + cols);
            assertEquals(n + blocks, StorageFormat.FP8_BLOCK128_UE8M0.bytes(rows, cols), rows + "x" + cols);
        }
        // Kimi-K2 expert gate_up [4096, 7168] in INT4: 14,680,064 B codes + 1,835,008 B scales.
        assertEquals(14_680_064L + 1_835_008L, StorageFormat.INT4_G32.bytes(4096, 7168));
    }

    @Test
    void partialGroupsAreRefusedNamingTheShape() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> StorageFormat.INT4_G32.bytes(64, 48));
        assertTrue(e.getMessage().contains("[64, 48]") && e.getMessage().contains("int4-g32"), e.getMessage());
    }

    @Test
    void namesParse() {
        assertEquals(StorageFormat.MXFP4, StorageFormat.parse("fp4"));
        assertEquals(StorageFormat.INT4_G32, StorageFormat.parse("int4-g32"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> StorageFormat.parse("int3"));
        assertTrue(e.getMessage().contains("int3"), e.getMessage());
    }
}
