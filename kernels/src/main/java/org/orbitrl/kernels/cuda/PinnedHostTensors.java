package org.orbitrl.kernels.cuda;

import org.bytedeco.javacpp.Pointer;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.DevicePointer;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.Map;
import java.util.TreeMap;

import static org.bytedeco.cuda.global.cudart.cudaFreeHost;
import static org.bytedeco.cuda.global.cudart.cudaMallocHost;

/**
 * The page-locked host tensors of one allocator ({@link CudaAllocator#allocatePinnedHost}): each a {@code cudaMallocHost}
 * allocation, known by its address range so that a copy can tell one (or a view inside one) from pageable memory. The
 * caller orders a free after the device work that may still use the tensor.
 */
final class PinnedHostTensors {
    private final TreeMap<Long, Long> live = new TreeMap<>();   // address -> bytes

    /** A new page-locked host tensor of {@code dtype} and {@code shape} (the device bound by the caller). */
    synchronized Tensor allocate(DType dtype, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        long bytes = Math.max(1, n * dtype.bytes());
        Pointer p = new Pointer();
        CudaCheck.check(cudaMallocHost(p, bytes), "cudaMallocHost", bytes + " bytes of pinned host memory for " + dtype + " "
                + Arrays.toString(shape));
        live.put(p.address(), bytes);
        return Tensor.wrap(MemorySegment.ofAddress(p.address()).reinterpret(n * dtype.bytes()), dtype, shape);
    }

    /** Forgets the allocation {@code t} starts; returns its bytes, or null where {@code t} starts none of them. */
    synchronized Long remove(Tensor t) {
        return live.remove(CudaAllocator.address(t));
    }

    /** Frees an allocation {@link #remove} returned the bytes of (its work done). */
    static void free(Tensor t, long bytes) {
        CudaCheck.check(cudaFreeHost(new DevicePointer(CudaAllocator.address(t))), "cudaFreeHost",
                bytes + " bytes of pinned host memory");
    }

    /** Whether {@code t} lies inside one of these tensors. */
    synchronized boolean contains(Tensor t) {
        long a = CudaAllocator.address(t);
        Map.Entry<Long, Long> e = live.floorEntry(a);
        return e != null && a + t.byteSize() <= e.getKey() + e.getValue();
    }

    /** Frees every one still allocated (their work done). */
    synchronized void freeAll() {
        for (Map.Entry<Long, Long> e : live.entrySet()) {
            CudaCheck.check(cudaFreeHost(new DevicePointer(e.getKey())), "cudaFreeHost", e.getValue() + " bytes of pinned host memory");
        }
        live.clear();
    }
}
