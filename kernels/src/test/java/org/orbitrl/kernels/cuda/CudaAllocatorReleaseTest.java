package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

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

    /**
     * {@link CudaAllocator#release}: the memory comes back at once; a copy issued before the release
     * still reads the released source (the free is ordered after it); a second release, a release
     * through a stale handle whose address was reused, a partial view and another category leave
     * live memory alone.
     */
    @Test
    void releaseFreesNowAfterTheWorkIssuedBefore() {
        CudaAllocator a = gpu.allocator();
        long act0 = a.liveBytes(MemoryCategory.ACTIVATIONS);
        long bytes = 512L * 512 * 4;
        float[] want = randn(rng(112), 1f, 512, 512).toFloatArray();
        Tensor src = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 512, 512);   // [512, 512]
        gpu.copyToDevice(Tensor.of(want, 512, 512), src);
        Tensor dst = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 512, 512);   // [512, 512]
        a.copy(src, dst);   // issued, not waited for
        a.release(src);
        assertEquals(act0 + bytes, a.liveBytes(MemoryCategory.ACTIVATIONS), "the released source is no longer live");
        Tensor reuse = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 512, 512); // may take the released address
        a.release(src);     // twice, through the stale handle
        a.release(dst.slice(0, 0, 256));   // a partial view
        a.release(dst.slice(0, 256, 512));
        assertEquals(act0 + 2 * bytes, a.liveBytes(MemoryCategory.ACTIVATIONS),
                "a second release, a stale handle and partial views free nothing");
        float[] got = gpu.toHost(dst).toFloatArray();
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToRawIntBits(got[i]) != Float.floatToRawIntBits(want[i])) {
                fail("copy issued before the release: element " + i + " is " + got[i] + ", expected " + want[i]);
            }
        }
        long kv0 = a.liveBytes(MemoryCategory.KV_CACHE);
        Tensor kv = a.allocate(MemoryCategory.KV_CACHE, DType.F32, 1024);
        a.release(kv);
        assertEquals(kv0 + 4096, a.liveBytes(MemoryCategory.KV_CACHE), "only activations and logits are released");
        a.free(kv);
        a.release(dst.reshape(512L * 512));
        a.release(reuse);
        assertEquals(act0, a.liveBytes(MemoryCategory.ACTIVATIONS), "whole tensors (a reshape too) are released");
        assertTrue(a.collectionThreshold() > 0 && a.collectionThreshold() <= gpu.device().totalMemory() / 4,
                "collection threshold " + a.collectionThreshold() + " is a quarter of the free memory at most");
    }

    /**
     * A released activation is kept on the host for the next allocation of its size, which takes it without a CUDA
     * call: the same address comes back, zero-filled by {@link CudaAllocator#allocate} (the values written before the
     * release are gone) and, from {@link CudaAllocator#allocateUninitialized}, poisoned under the test JVMs'
     * {@code orbit.poisonUninitialized} (NaN for f32, the most negative int for i32); another size, and a released
     * block of another category (kv cache), are not taken.
     */
    @Test
    void releasedBlocksAreReusedForTheirSizeAndFilledAsAsked() {
        org.junit.jupiter.api.Assumptions.assumeTrue(CudaAllocator.REUSE_BYTES > 0, "reuse switched off");
        org.junit.jupiter.api.Assertions.assertTrue(org.orbitrl.kernels.TensorAllocator.poisonUninitialized(),
                "the device test JVMs run with -Dorbit.poisonUninitialized=true (tools/gpu/run-suite)");
        CudaAllocator a = gpu.allocator();
        long act0 = a.liveBytes(MemoryCategory.ACTIVATIONS);
        Tensor t = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 3, 1000);   // [3, 1000]: 12032 bytes allocated
        long address = CudaAllocator.address(t);
        gpu.copyToDevice(randn(rng(113), 1f, 3, 1000), t);
        a.release(t);
        long[] kept = a.reusable();
        assertTrue(kept[0] >= 1 && kept[1] >= 12032, "the released block is kept: " + java.util.Arrays.toString(kept));
        Tensor other = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 5, 1000);   // another size
        assertTrue(CudaAllocator.address(other) != address, "a block of another size is not taken");
        Tensor again = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1000, 3);   // the same bytes
        assertEquals(address, CudaAllocator.address(again), "the kept block is taken by the same size");
        Tensor stale = t;
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> a.free(stale),
                "a free through the released handle must not free the allocation now at its address");
        float[] z = gpu.toHost(again).toFloatArray();
        for (int k = 0; k < z.length; k++) {
            if (z[k] != 0f) {
                fail("a reused block from allocate reads " + z[k] + " at " + k + ", expected 0");
            }
        }
        gpu.copyToDevice(randn(rng(114), 1f, 1000, 3), again);
        a.release(again);
        Tensor poisoned = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, 3000);
        assertEquals(address, CudaAllocator.address(poisoned), "the kept block is taken again");
        float[] p = gpu.toHost(poisoned).toFloatArray();
        for (int k = 0; k < p.length; k++) {
            if (!Float.isNaN(p[k])) {
                fail("an uninitialized f32 element reads " + p[k] + " at " + k + ", expected NaN (poisoned)");
            }
        }
        Tensor ints = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I32, 37);
        long[] iv = gpu.toHost(ints).toLongArray();
        for (int k = 0; k < iv.length; k++) {
            assertEquals(Integer.MIN_VALUE, iv[k], "uninitialized i32 element " + k);
        }
        Tensor kv = a.allocate(MemoryCategory.KV_CACHE, DType.F32, 3, 1000);
        long[] before = a.reusable();
        a.free(kv);   // not a per-step category: handed back to the pool, not kept
        org.junit.jupiter.api.Assertions.assertArrayEquals(before, a.reusable(), "a kv cache block is not kept");
        Tensor after = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 3, 1000);
        assertTrue(CudaAllocator.address(after) != address, "the poisoned block is live, not taken twice");
        a.release(other);
        a.release(poisoned);
        a.release(ints);
        a.release(after);
        assertEquals(act0, a.liveBytes(MemoryCategory.ACTIVATIONS), "every activation released; kept blocks are not live");
    }
}
