package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Activations and logits on the device are released once unreachable: dropped tensors come back
 * after a collection, tensors still referenced (directly or through a view) keep their memory and
 * contents, an explicitly freed one is not freed twice, and other categories are never released
 * behind the owner's back.
 */
class CudaAllocatorReleaseTest extends CudaTestBase {

    private static void collect(CudaAllocator a) throws InterruptedException {
        for (int i = 0; i < 20; i++) {
            System.gc();
            Thread.sleep(20);
            a.releaseUnreachableNow();
        }
    }

    @Test
    void unreachableActivationsAreReleased() throws InterruptedException {
        CudaAllocator a = gpu.allocator();
        collect(a);
        long act0 = a.liveBytes(MemoryCategory.ACTIVATIONS);
        long logits0 = a.liveBytes(MemoryCategory.LOGITS);
        long kv0 = a.liveBytes(MemoryCategory.KV_CACHE);
        Tensor kept = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1000).slice(0, 10, 20); // held through a view
        gpu.copyToDevice(randn(rng(111), 1f, 10), kept.contiguous());
        float[] keptValues = gpu.toHost(kept).toFloatArray();
        Tensor freedExplicitly = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 4096);
        Tensor kv = a.allocate(MemoryCategory.KV_CACHE, DType.F32, 4096);
        for (int i = 0; i < 50; i++) {
            a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 64, 1024);  // dropped at once
            a.allocate(MemoryCategory.LOGITS, DType.F32, 8, 1024);
        }
        a.free(freedExplicitly);
        freedExplicitly = null;
        List<Tensor> after = new ArrayList<>();
        collect(a);
        assertEquals(act0 + 4096, a.liveBytes(MemoryCategory.ACTIVATIONS), "only the kept activation (4000 bytes, 4096 allocated) is live");
        assertEquals(logits0, a.liveBytes(MemoryCategory.LOGITS), "dropped logits are released");
        assertEquals(kv0 + 4096 * 4, a.liveBytes(MemoryCategory.KV_CACHE), "kv cache is never released behind the owner's back");
        for (int i = 0; i < 8; i++) {
            after.add(a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 64, 1024)); // may reuse released addresses
        }
        assertEquals(keptValues.length, gpu.toHost(kept).toFloatArray().length);
        assertTrue(java.util.Arrays.equals(keptValues, gpu.toHost(kept).toFloatArray()), "a referenced activation keeps its contents");
        a.free(kv);
        assertEquals(8, after.size());
    }
}
