package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.KernelCompiler;

import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Allocator accounting, host/device copies, device-tensor safety, error messages and the kernel cache. */
class CudaInfraTest extends CudaTestBase {

    @Test
    void allocatorAccountsLiveAndPeakByCategory() {
        CudaAllocator a = gpu.allocator();
        long kv0 = a.liveBytes(MemoryCategory.KV_CACHE);
        long base0 = a.liveBytes(MemoryCategory.BASE_WEIGHTS);
        Tensor t1 = a.allocate(MemoryCategory.KV_CACHE, DType.BF16, 1000, 3);      // 6000 B -> 6144
        Tensor t2 = a.allocate(MemoryCategory.KV_CACHE, DType.F32, 1);             // 4 B -> 256
        Tensor t3 = a.allocate(MemoryCategory.BASE_WEIGHTS, DType.U8, 1 << 20);    // 1 MiB
        assertEquals(kv0 + 6144 + 256, a.liveBytes(MemoryCategory.KV_CACHE));
        assertEquals(base0 + (1 << 20), a.liveBytes(MemoryCategory.BASE_WEIGHTS));
        a.free(t1);
        assertEquals(kv0 + 256, a.liveBytes(MemoryCategory.KV_CACHE));
        assertTrue(a.peakBytes(MemoryCategory.KV_CACHE) >= kv0 + 6144 + 256);
        a.free(t2);
        a.free(t3);
        assertEquals(kv0, a.liveBytes(MemoryCategory.KV_CACHE));
        assertEquals(base0, a.liveBytes(MemoryCategory.BASE_WEIGHTS));
        // allocations are zero-filled
        Tensor z = dev(Tensor.allocate(Arena.ofAuto(), DType.F32, 4));
        Tensor fresh = a.allocate(MemoryCategory.OTHER, DType.F32, 300);
        float[] v = gpu.toHost(fresh).toFloatArray();
        a.free(fresh);
        for (float f : v) {
            assertEquals(0f, f);
        }
        assertThrows(IllegalArgumentException.class, () -> a.free(z.slice(0, 1, 3)), "a view is not an allocation");
    }

    @Test
    void siblingBackendStreamHasTheDevicesHighestPriority() {
        int[] least = new int[1];
        int[] greatest = new int[1];
        CudaCheck.check(org.bytedeco.cuda.global.cudart.cudaDeviceGetStreamPriorityRange(least, greatest), "range");
        assertTrue(greatest[0] < least[0], "the H100/H200 class has stream priorities: " + least[0] + ".." + greatest[0]);
        int[] mine = new int[1];
        int[] sibling = new int[1];
        try (CudaBackend rollout = new CudaBackend(gpu)) {
            CudaCheck.check(org.bytedeco.cuda.global.cudart.cudaStreamGetPriority(gpu.stream().handle(), mine), "priority");
            CudaCheck.check(org.bytedeco.cuda.global.cudart.cudaStreamGetPriority(rollout.stream().handle(), sibling), "priority");
        }
        assertEquals(least[0], mine[0], "the first backend's stream has the default (least) priority");
        assertEquals(greatest[0], sibling[0], "the sibling (rollout) backend's stream has the highest priority");
    }

    @Test
    void roundTripEveryDtypeAndStridedHostViews() {
        SplittableRandom r = rng(71);
        for (DType dt : DType.values()) {
            Tensor h = Tensor.allocate(Arena.ofAuto(), dt, 3, 5, 7);
            for (int i = 0; i < 105; i++) {
                h.setLong(r.nextInt(100) - (dt == DType.U8 ? 0 : 50), i / 35, (i / 7) % 5, i % 7);
            }
            Tensor back = gpu.toHost(dev(h));
            assertArrayEquals(h.toLongArray(), back.toLongArray(), "round trip " + dt);
            Tensor view = h.transpose(0, 2); // strided host view
            assertArrayEquals(view.toLongArray(), gpu.toHost(dev(view)).toLongArray(), "strided round trip " + dt);
        }
    }

    @Test
    void deviceTensorsAreNeverReadOnTheHost() {
        Tensor d = dev(Tensor.of(new float[]{1, 2, 3}, 3));
        assertThrows(IllegalStateException.class, () -> d.getFloat(0));
        assertThrows(IllegalStateException.class, d::toFloatArray);
        assertEquals(3f, gpu.toHost(d.slice(0, 2, 3)).getFloat(0));
    }

    @Test
    void hostTensorsAreRefusedByKernels() {
        Tensor h = Tensor.of(new float[]{1, 2}, 2);
        Tensor d = dev(h);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.add(h, d, d));
        assertTrue(e.getMessage().contains("toDevice"), e.getMessage());
    }

    @Test
    void failedCallNamesOperationSizesAndError() {
        long huge = 1L << 58; // 2^60 bytes of f32
        CudaException e = assertThrows(CudaException.class, () -> gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, huge));
        assertTrue(e.getMessage().contains("cudaMalloc"), e.getMessage());
        assertTrue(e.getMessage().contains(String.valueOf(huge * 4)), e.getMessage());
        assertTrue(e.getMessage().toLowerCase().contains("memory"), e.getMessage());
        assertEquals(2, e.code(), "cudaErrorMemoryAllocation");
    }

    @Test
    void graphReplaysCapturedKernels() {
        Tensor a = dev(Tensor.of(new float[]{1, 2, 3}, 3));
        Tensor b = dev(Tensor.of(new float[]{10, 20, 30}, 3));
        try (CudaGraph g = CudaGraph.capture(gpu.stream(), () -> gpu.add(a, b, a))) {
            assertArrayEquals(new float[]{1, 2, 3}, gpu.toHost(a).toFloatArray(), "capture records, it does not run");
            g.launch(gpu.stream());
            g.launch(gpu.stream());
            assertArrayEquals(new float[]{21, 42, 63}, gpu.toHost(a).toFloatArray(), "two replays add b twice");
        }
    }

    @Test
    void kernelCacheHitsOnSecondCompile() throws Exception {
        Path dir = Files.createTempDirectory("orbit-kernel-cache");
        CudaDevice d = gpu.device();
        String src = "extern \"C\" __global__ void k(float* x) { x[threadIdx.x] += 1.0f; }\n";
        KernelCompiler c1 = new KernelCompiler(dir, d.computeCapabilityMajor(), d.computeCapabilityMinor());
        KernelCompiler.Image first = c1.compile("cachetest", src);
        KernelCompiler.Image second = new KernelCompiler(dir, d.computeCapabilityMajor(), d.computeCapabilityMinor()).compile("cachetest", src);
        assertFalse(first.fromCache());
        assertTrue(second.fromCache());
        assertArrayEquals(first.bytes(), second.bytes());
        assertEquals("sm_" + d.computeCapabilityMajor() + d.computeCapabilityMinor(), c1.arch(), "CUBIN for the device's own architecture");
        IllegalStateException bad = assertThrows(IllegalStateException.class, () -> c1.compile("broken", "this is not CUDA"));
        assertTrue(bad.getMessage().contains("broken"), bad.getMessage());
    }
}
