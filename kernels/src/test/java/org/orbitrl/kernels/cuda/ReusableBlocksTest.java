package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CUDA allocator's kept blocks, on the host alone: a block is taken only by an allocation of exactly its size,
 * the last kept first; the total and the largest block are capped; a drain hands back every kept block once and keeps
 * none. Checked against a plain list model over seeded random keeps and takes.
 */
class ReusableBlocksTest {

    @Test
    void blocksGoToTheirOwnSizeLastKeptFirst() {
        ReusableBlocks r = new ReusableBlocks(1 << 20, 1 << 16);
        assertTrue(r.keep(0x1000, 512));
        assertTrue(r.keep(0x2000, 512));
        assertTrue(r.keep(0x3000, 768));
        assertEquals(0, r.take(256), "no block of 256 bytes is kept");
        assertEquals(0x2000, r.take(512), "the block kept last");
        assertEquals(0x1000, r.take(512));
        assertEquals(0, r.take(512), "both 512-byte blocks taken");
        assertEquals(1, r.count());
        assertEquals(768, r.bytes());
    }

    @Test
    void theCapsLeaveBlocksToThePool() {
        ReusableBlocks r = new ReusableBlocks(2048, 1024);
        assertFalse(r.keep(0x1000, 1280), "a block above the largest size is not kept");
        assertTrue(r.keep(0x2000, 1024));
        assertTrue(r.keep(0x3000, 1024));
        assertFalse(r.keep(0x4000, 256), "the total would pass its cap");
        assertEquals(2048, r.bytes());
        r.take(1024);
        assertTrue(r.keep(0x4000, 256), "room again once a block is taken");
        assertFalse(new ReusableBlocks(0, 1 << 20).keep(0x1000, 256), "capacity 0 keeps nothing");
        assertThrows(IllegalArgumentException.class, () -> new ReusableBlocks(-1, 10));
    }

    @Test
    void randomKeepsTakesAndADrainMatchAListModel() {
        SplittableRandom rnd = new SplittableRandom(20261206L);
        long capacity = 64 * 1024;
        ReusableBlocks r = new ReusableBlocks(capacity, 8 * 1024);
        List<long[]> model = new ArrayList<>();   // {address, size}, kept order
        long next = 0x10000;
        for (int i = 0; i < 5000; i++) {
            long size = 256L * (1 + rnd.nextInt(40));   // 256 B .. 10 KiB, some above the largest
            if (rnd.nextBoolean()) {
                long held = model.stream().mapToLong(b -> b[1]).sum();
                boolean fits = size <= 8 * 1024 && held + size <= capacity;
                assertEquals(fits, r.keep(next, size), "keep of " + size + " bytes with " + held + " held");
                if (fits) {
                    model.add(new long[]{next, size});
                }
                next += 0x10000;
            } else {
                long want = 0;
                for (int j = model.size() - 1; j >= 0; j--) {
                    if (model.get(j)[1] == size) {
                        want = model.remove(j)[0];
                        break;
                    }
                }
                assertEquals(want, r.take(size), "take of " + size + " bytes at step " + i);
            }
            assertEquals(model.size(), r.count());
            assertEquals(model.stream().mapToLong(b -> b[1]).sum(), r.bytes());
        }
        List<Long> drained = new ArrayList<>();
        r.drain(drained::add);
        assertEquals(model.stream().map(b -> b[0]).sorted().toList(), drained.stream().sorted().toList(),
                "a drain hands back every kept block once");
        assertEquals(0, r.count());
        assertEquals(0, r.bytes());
        assertEquals(0, r.take(256));
    }
}
