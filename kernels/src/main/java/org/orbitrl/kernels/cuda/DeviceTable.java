package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.DevicePointer;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static org.bytedeco.cuda.global.cudart.cudaMemcpyAsync;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyHostToDevice;

/**
 * A per-call table of u64 words (device pointers, packed indices) that an op writes on the host and
 * uploads to the device by one stream-ordered copy: a host buffer and a device buffer, each grown on
 * demand (at least 1024 words) and reused by later calls of the op that owns it. The host buffer is
 * pageable (kept as long as this object refers to it): the driver stages a pageable host-to-device
 * copy before {@code cudaMemcpyAsync} returns, so the next call may overwrite it.
 */
final class DeviceTable {
    private final CudaContext ctx;
    private final String what;           // named in the copy's error
    private Tensor device;               // i64 [words], grown on demand
    private MemorySegment host = MemorySegment.NULL;

    DeviceTable(CudaContext ctx, String what) {
        this.ctx = ctx;
        this.what = what;
    }

    /** The host table, at least {@code words} u64 words. */
    MemorySegment host(long words) {
        if (host.byteSize() < 8 * words) {
            host = Arena.ofAuto().allocate(8 * Math.max(words, 1024), 16);
        }
        return host;
    }

    /** Copies the first {@code words} words of {@code h} to the device table (one copy); returns its address. */
    long upload(MemorySegment h, long words) {
        if (device == null || device.numel() < words) {
            if (device != null) {
                ctx.allocator.free(device);
            }
            device = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.I64, Math.max(words, 1024));
        }
        long dst = CudaAllocator.address(device);
        CudaCheck.check(cudaMemcpyAsync(new DevicePointer(dst), new DevicePointer(h.address()), 8 * words, cudaMemcpyHostToDevice,
                ctx.stream.handle()), "cudaMemcpyAsync host->device (" + what + ")", words + " words");
        return dst;
    }
}
