package org.orbitrl.kernels.cuda;

import org.bytedeco.javacpp.Pointer;
import org.orbitrl.kernels.cuda.internal.DevicePointer;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * Page-locked host memory through which a Java float array goes to a device tensor and back: the array is copied into
 * it (one host pass) and the DMA engine reads it at the link's speed, where a pageable source would be zero-filled into
 * a native tensor, copied, then staged again by the driver. At most {@link #MAX_BYTES} are allocated, on the first
 * transfer (as large as that transfer up to the maximum) and kept; larger arrays go in pieces of that size, each
 * piece's copy waited for before the next one is written. One thread drives the allocator that owns it.
 */
final class PinnedStaging implements AutoCloseable {
    /** Largest staging buffer: 64 MiB. */
    static final long MAX_BYTES = 64L << 20;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private final CudaStream stream;
    private long address;
    private long bytes;
    private MemorySegment host;

    PinnedStaging(CudaStream stream) {
        this.stream = stream;
    }

    /** values[from, from + n) into the device at {@code dst}, issued on the stream; returns once the host may reuse values. */
    void upload(float[] values, int from, int n, long dst) {
        long total = (long) n * Float.BYTES;
        MemorySegment h = buffer(total);
        for (long done = 0; done < total; ) {
            long piece = Math.min(bytes, total - done);
            MemorySegment.copy(values, from + (int) (done / Float.BYTES), h, F32, 0, (int) (piece / Float.BYTES));
            CudaCheck.check(cudaMemcpyAsync(new DevicePointer(dst + done), new DevicePointer(address), piece,
                    cudaMemcpyHostToDevice, stream.handle()), "cudaMemcpyAsync host->device (pinned)", piece + " bytes");
            stream.synchronize();   // the buffer is written again next
            done += piece;
        }
    }

    /** n floats at device address {@code src} into out[0, n), after the stream's work. */
    void download(long src, float[] out, int n) {
        long total = (long) n * Float.BYTES;
        MemorySegment h = buffer(total);
        for (long done = 0; done < total; ) {
            long piece = Math.min(bytes, total - done);
            CudaCheck.check(cudaMemcpyAsync(new DevicePointer(address), new DevicePointer(src + done), piece,
                    cudaMemcpyDeviceToHost, stream.handle()), "cudaMemcpyAsync device->host (pinned)", piece + " bytes");
            stream.synchronize();
            MemorySegment.copy(h, F32, 0, out, (int) (done / Float.BYTES), (int) (piece / Float.BYTES));
            done += piece;
        }
    }

    /** The buffer, allocated (or grown, up to the maximum) for a transfer of {@code want} bytes. */
    private MemorySegment buffer(long want) {
        long size = Math.min(MAX_BYTES, Math.max(want, 1L << 20));
        if (size > bytes) {
            free();
            Pointer p = new Pointer();
            CudaCheck.check(cudaMallocHost(p, size), "cudaMallocHost", size + " bytes of pinned staging");
            address = p.address();
            bytes = size;
            host = MemorySegment.ofAddress(address).reinterpret(size);
        }
        return host;
    }

    private void free() {
        if (address != 0) {
            stream.synchronize();
            CudaCheck.check(cudaFreeHost(new DevicePointer(address)), "cudaFreeHost", bytes + " bytes of pinned staging");
            address = 0;
            bytes = 0;
            host = null;
        }
    }

    @Override
    public void close() {
        free();
    }
}
