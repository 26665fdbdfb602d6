package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A copy into one backend's memory from another's (an adapter version published to a rollout engine on another GPU):
 * GPU 0 to GPU 1 where there are two ({@code cudaMemcpyPeerAsync}), else between two backends of GPU 0 (their own
 * allocators and streams). The values arrive bit for bit, after the source's stream has written them (a source written
 * by a kernel just before the copy, not waited for by the caller); mismatched dtypes are refused naming both tensors.
 */
class CudaPeerCopyTest {
    @BeforeAll
    static void needCuda() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
    }

    @Test
    void valuesArriveBitForBitFromAnotherBackendsMemory() {
        int other = Cuda.deviceCount() >= 2 ? 1 : 0;
        try (CudaBackend a = new CudaBackend(0, CudaBackend.defaultCacheDir());
             CudaBackend b = new CudaBackend(other, CudaBackend.defaultCacheDir())) {
            SplittableRandom r = new SplittableRandom(17);
            int n = 3 << 20;   // 12 MiB: more than the staging threshold of host copies
            float[] v = new float[n];
            for (int i = 0; i < n; i++) {
                v[i] = (float) (r.nextDouble() * 2 - 1);
            }
            Tensor src = a.allocator().uploadFloats(MemoryCategory.ADAPTER_PARAMS, v, n);
            a.scale(src, 3f, src);   // written by a kernel on a's stream, not waited for here
            Tensor dst = b.allocator().allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, n);
            b.allocator().copy(src, dst);
            float[] want = new float[n];
            for (int i = 0; i < n; i++) {
                want[i] = v[i] * 3f;
            }
            assertArrayEquals(want, b.allocator().toFloats(dst), "GPU 0 -> GPU " + other + ", 12 MiB");
            Tensor ints = b.allocator().allocate(MemoryCategory.ADAPTER_PARAMS, DType.I32, n);
            var e = assertThrows(IllegalArgumentException.class, () -> b.allocator().copy(src, ints));
            assertTrue(e.getMessage().contains("dtypes differ"), e.getMessage());
        }
    }
}
