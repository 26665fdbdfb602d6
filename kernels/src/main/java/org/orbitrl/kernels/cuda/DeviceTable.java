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
 *
 * <p>Not so in a step measured or captured for a graph ({@link CudaAllocator#stepRun}): a captured copy reads its
 * host source at every replay, and every call of the step needs its own table. There each call takes a table of its
 * own from the allocator (the step's arena while captured, the same allocations while measured) and copies it from a
 * host copy of its own that the captured step keeps ({@link CudaAllocator#holdForCapture}).
 */
final class DeviceTable {
    private final CudaContext ctx;
    private final String what;           // named in the copy's error
    private Tensor device;               // i64 [words], grown on demand
    private MemorySegment host = MemorySegment.NULL;
    // the tables of the step run under way (stepRun): none released within the run, so that the capture allocates from
    // the arena exactly as its measuring run did
    private final java.util.List<Tensor> stepTables = new java.util.ArrayList<>();
    private Object stepRun;

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
        Object run = ctx.allocator.stepRun();
        if (run != stepRun) {
            releaseStepTables();   // an earlier run's tables: its work is enqueued, a release is stream-ordered after it
            stepRun = run;
        }
        if (run != null) {
            return uploadInStep(h, words);
        }
        if (device == null || device.numel() < words) {
            if (device != null) {
                ctx.allocator.free(device);
            }
            device = ctx.allocator.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I64, Math.max(words, 1024));
        }
        long dst = CudaAllocator.address(device);
        CudaCheck.check(cudaMemcpyAsync(new DevicePointer(dst), new DevicePointer(h.address()), 8 * words, cudaMemcpyHostToDevice,
                ctx.stream.handle()), "cudaMemcpyAsync host->device (" + what + ")", words + " words");
        return dst;
    }

    private long uploadInStep(MemorySegment h, long words) {
        Tensor t = ctx.allocator.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I64, Math.max(words, 1));
        MemorySegment src = Arena.ofAuto().allocate(8 * Math.max(words, 1), 16);
        MemorySegment.copy(h, 0, src, 0, 8 * words);
        ctx.allocator.holdForCapture(src);
        long dst = CudaAllocator.address(t);
        CudaCheck.check(cudaMemcpyAsync(new DevicePointer(dst), new DevicePointer(src.address()), 8 * words, cudaMemcpyHostToDevice,
                ctx.stream.handle()), "cudaMemcpyAsync host->device (" + what + ", in a captured step)", words + " words");
        java.lang.ref.Reference.reachabilityFence(src);
        stepTables.add(t);
        return dst;
    }

    private void releaseStepTables() {
        stepTables.forEach(ctx.allocator::release);   // an arena's blocks stay with their step; a measured run's are freed
        stepTables.clear();
    }
}
