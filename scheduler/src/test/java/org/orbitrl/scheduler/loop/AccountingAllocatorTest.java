package org.orbitrl.scheduler.loop;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

/** The host allocator's live count: per-step tensors leave it when released, the rest when collected, never twice. */
class AccountingAllocatorTest {
    private static long live(AccountingAllocator a, MemoryCategory c) {
        return a.live().get(c);
    }

    @Test
    void aReleasedActivationLeavesTheLiveCountAtOnceAndOnlyOnce() throws Exception {
        AccountingAllocator a = new AccountingAllocator();
        Tensor x = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 256, 1024);   // 1 MiB
        Tensor y = a.allocate(MemoryCategory.ACTIVATIONS, DType.BF16, 3, 1000);    // 6000 B
        Tensor logits = a.allocate(MemoryCategory.LOGITS, DType.F32, 7, 11);       // 308 B
        assertEquals(1048576 + 6000, live(a, MemoryCategory.ACTIVATIONS));
        a.release(x.reshape(1024, 256));   // a whole view of the allocation is the allocation
        assertEquals(6000, live(a, MemoryCategory.ACTIVATIONS));
        a.release(x);                      // twice: counted once
        assertEquals(6000, live(a, MemoryCategory.ACTIVATIONS));
        a.release(y.slice(0, 0, 2));       // part of an allocation: nothing
        assertEquals(6000, live(a, MemoryCategory.ACTIVATIONS));
        a.release(logits);
        assertEquals(0, live(a, MemoryCategory.LOGITS));
        assertEquals(1048576 + 6000, a.peak().get(MemoryCategory.ACTIVATIONS));

        // Collected after its release: the cleaner takes nothing more out (the count would go negative).
        x = null;
        logits = null;
        awaitCollections();
        assertEquals(6000, live(a, MemoryCategory.ACTIVATIONS));
        assertEquals(0, live(a, MemoryCategory.LOGITS));
        y = null;
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (live(a, MemoryCategory.ACTIVATIONS) != 0 && System.nanoTime() < deadline) {
            awaitCollections();
        }
        assertEquals(0, live(a, MemoryCategory.ACTIVATIONS), "an unreleased activation leaves when it is collected");
    }

    @Test
    void otherCategoriesStayCountedUntilCollected() {
        AccountingAllocator a = new AccountingAllocator();
        Tensor state = a.allocate(MemoryCategory.OPTIMIZER_STATE, DType.F32, 64, 64);
        Tensor params = a.allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, 8, 64);
        a.release(state);
        a.release(params);
        assertEquals(16384, live(a, MemoryCategory.OPTIMIZER_STATE));
        assertEquals(2048, live(a, MemoryCategory.ADAPTER_PARAMS));
        assertEquals(64, state.size(0) + params.size(0) - 8);   // both stay reachable (and counted) to here
    }

    @Test
    void aFreedTensorOfAnyCategoryLeavesAtOnceAndOnlyOnce() {
        AccountingAllocator a = new AccountingAllocator();
        Tensor kv = a.allocate(MemoryCategory.KV_CACHE, DType.F32, 159, 512);      // a V4 window's allocation
        Tensor other = a.allocate(MemoryCategory.KV_CACHE, DType.F32, 16, 512);
        a.release(kv);                      // not a per-step category: release leaves it counted
        assertEquals(4L * 175 * 512, live(a, MemoryCategory.KV_CACHE));
        a.free(kv.slice(0, 0, 3));          // part of an allocation: nothing
        assertEquals(4L * 175 * 512, live(a, MemoryCategory.KV_CACHE));
        a.free(kv);
        assertEquals(4L * 16 * 512, live(a, MemoryCategory.KV_CACHE));
        a.free(kv);                         // twice: counted once
        assertEquals(4L * 16 * 512, live(a, MemoryCategory.KV_CACHE));
        assertEquals(4L * 175 * 512, a.peak().get(MemoryCategory.KV_CACHE));
        assertEquals(16, other.size(0));    // reachable (and counted) to here
    }

    private static void awaitCollections() throws InterruptedException {
        for (int i = 0; i < 5; i++) {
            System.gc();
            Thread.sleep(20);
        }
    }
}
