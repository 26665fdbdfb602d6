package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Float arrays to and from the device through page-locked staging ({@code CudaAllocator#uploadFloats},
 * {@code #toFloats}): bit for bit against the pageable path ({@code upload}, {@code toHost}) for sizes below one piece,
 * at one piece and across several (32 MiB pieces: 40,000,003 floats are four of them and a remainder), after device
 * work on the stream (the download waits for it); a host or strided tensor falls back to the pageable path; a wrong
 * count is refused naming the shape.
 */
class CudaPinnedStagingTest extends CudaTestBase {

    @Test
    void arraysRoundTripBitForBitAcrossPieces() {
        CudaAllocator a = gpu.allocator();
        SplittableRandom r = rng(71);
        for (int n : new int[]{1, 1000, (int) (PinnedStaging.MAX_BYTES / 4), 40_000_003}) {
            float[] v = new float[n];
            for (int i = 0; i < n; i++) {
                v[i] = (float) r.nextGaussian();
            }
            Tensor dev = a.uploadFloats(MemoryCategory.ACTIVATIONS, v, n);
            assertTrue(a.owns(dev), "device memory");
            assertArrayEquals(v, a.toHost(dev).toFloatArray(), "pinned upload, pageable read, " + n + " floats");
            Tensor pageable = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(v, n));
            gpu.scale(pageable, 2f, pageable);   // work on the stream the pinned read must wait for
            float[] got = a.toFloats(pageable);
            assertEquals(n, got.length);
            for (int i = 0; i < n; i += Math.max(1, n / 997)) {
                assertEquals(2 * v[i], got[i], "element " + i + " of " + n + " after the scale");
            }
            assertEquals(2 * v[n - 1], got[n - 1], "the last element of " + n);
            a.release(dev);
            a.release(pageable);
        }
    }

    /**
     * Uploads return with their last pieces still in flight: two arrays of several pieces uploaded back to back, the
     * first array overwritten on the host at once, then both read back through the staging (each half waited for
     * before it is written again) equal what was uploaded.
     */
    @Test
    void uploadsInFlightKeepTheirValues() {
        CudaAllocator a = gpu.allocator();
        SplittableRandom r = rng(72);
        int n = 25_000_001;   // three pieces of a half and a remainder
        float[] first = new float[n];
        float[] second = new float[n];
        for (int i = 0; i < n; i++) {
            first[i] = (float) r.nextGaussian();
            second[i] = (float) r.nextGaussian();
        }
        float[] firstCopy = first.clone();
        Tensor da = a.uploadFloats(MemoryCategory.ACTIVATIONS, first, n);
        java.util.Arrays.fill(first, Float.NaN);
        Tensor db = a.uploadFloats(MemoryCategory.ACTIVATIONS, second, n);
        assertArrayEquals(firstCopy, a.toFloats(da), "the first array as it was when uploaded");
        assertArrayEquals(second, a.toFloats(db), "the second array");
        a.release(da);
        a.release(db);
    }

    /**
     * Host tensors of {@link CudaAllocator#STAGED_BYTES} and more go through the staging too ({@code upload},
     * {@code copy} into a host tensor, {@code toHost}): bf16 and f32 of odd sizes around a piece, read back bit for bit
     * into a whole tensor and into a view at an offset of a larger one, the source overwritten as soon as the upload
     * returns; below the threshold the pageable copy, the same bits.
     */
    @Test
    void hostTensorsOfAnySizeRoundTripThroughTheStaging() {
        CudaAllocator a = gpu.allocator();
        SplittableRandom r = rng(73);
        long half = PinnedStaging.MAX_BYTES / 2;
        for (long n : new long[]{CudaAllocator.STAGED_BYTES / 2 - 1, CudaAllocator.STAGED_BYTES / 2 + 7, half / 2 + 3, 3 * half / 2 + 1}) {
            for (DType dt : new DType[]{DType.BF16, DType.F32}) {
                float[] v = new float[Math.toIntExact(n)];
                for (int i = 0; i < v.length; i++) {
                    v[i] = (float) r.nextGaussian();
                }
                Tensor host = Tensor.of(v, n).to(dt);
                float[] want = host.toFloatArray();
                Tensor dev = a.upload(MemoryCategory.ACTIVATIONS, host);
                host.fill(Float.NaN);   // the upload has copied it out
                assertArrayEquals(want, a.toHost(dev).toFloatArray(), dt + " x " + n + " through toHost");
                Tensor big = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), dt, n + 5);
                a.copy(dev, big.slice(0, 5, n + 5));
                assertArrayEquals(want, big.slice(0, 5, n + 5).contiguous().toFloatArray(), dt + " x " + n + " into a view");
                a.release(dev);
            }
        }
    }

    @Test
    void otherTensorsAndWrongCounts() {
        CudaAllocator a = gpu.allocator();
        float[] v = {1, 2, 3, 4, 5, 6};
        Tensor host = Tensor.of(v, 2, 3);
        assertArrayEquals(v, a.toFloats(host), "a host tensor passes through");
        Tensor dev = a.uploadFloats(MemoryCategory.ACTIVATIONS, v, 2, 3);
        Tensor t = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 3, 2);
        gpu.copy(dev.transpose(0, 1), t);
        assertArrayEquals(new float[]{1, 4, 2, 5, 3, 6}, a.toFloats(t), "a transposed copy read back");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> a.uploadFloats(MemoryCategory.ACTIVATIONS, v, 4, 2));
        assertTrue(e.getMessage().contains("[4, 2]"), e.getMessage());
    }

    /**
     * Page-locked host tensors ({@code allocatePinnedHost}): a copy into one is issued without waiting and lands in
     * order with the stream's work (the values of the work before it, not of the work after it, nor of a tensor that
     * reuses the source's memory once it is released); read back to the device in order without a wait, and on the host
     * after {@code awaitCopies}; freed once, and a tensor not of them refused.
     */
    @Test
    void pinnedHostTensorsTakeCopiesInOrderWithTheStream() {
        CudaAllocator a = gpu.allocator();
        SplittableRandom r = rng(73);
        int n = 5_000_003;
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) r.nextGaussian();
        }
        Tensor x = a.uploadFloats(MemoryCategory.ACTIVATIONS, v, n);
        gpu.scale(x, 2f, x);                 // queued work the copy must follow
        Tensor pinned = a.allocatePinnedHost(DType.F32, n);
        a.copyToHostAsync(x, pinned);
        gpu.scale(x, 3f, x);                 // queued work the copy must precede
        a.release(x);
        Tensor reuse = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n);
        Tensor five = a.uploadFloats(MemoryCategory.ACTIVATIONS, v, n);
        gpu.scale(five, 5f, reuse);   // reuse may have taken x's memory
        a.release(five);
        Tensor back = a.upload(MemoryCategory.ACTIVATIONS, pinned);   // in order, no wait
        float[] got = a.toFloats(back);
        a.awaitCopies();
        float[] host = pinned.toFloatArray();
        for (int i = 0; i < n; i += 997) {
            assertEquals(2f * v[i], got[i], "element " + i + " back on the device");
            assertEquals(2f * v[i], host[i], "element " + i + " on the host after awaitCopies");
        }
        assertEquals(2f * v[n - 1], host[n - 1]);
        a.freePinnedHost(pinned);
        assertThrows(IllegalArgumentException.class, () -> a.freePinnedHost(pinned), "freed twice");
        assertThrows(IllegalArgumentException.class, () -> a.freePinnedHost(Tensor.of(new float[3], 3)), "not pinned");
        a.release(back);
        a.release(reuse);
    }
}
