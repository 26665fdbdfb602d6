package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;

import java.util.Arrays;

/**
 * How fast the blocks of a one-block-an-SM launch read their own regions of memory into shared memory (or registers):
 * bulk copies issued by one thread (chunk sizes 4, 16 and 64 KiB), 16-byte cp.async by every thread, and 16-byte loads
 * eight a thread in flight; 160 KiB and 1 MiB a block (the decode layer's shares are 50-170 KiB), against the copy
 * bandwidth measured in the same run. GB/s of bytes read, median of 20 launches.
 */
public final class StreamProbe {
    private StreamProbe() {
    }

    public static void main(String[] args) {
        if (!Cuda.available()) {
            System.out.println("StreamProbe: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        try (CudaBackend gpu = new CudaBackend()) {
            CudaContext ctx = gpu.context();
            int grid = ctx.device.multiprocessors();
            long most = 1 << 20;
            Tensor src = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.U8, grid * most);
            ctx.allocator.zero(src);
            Tensor sink = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.I32, grid);
            double copy = org.orbitrl.kernels.bench.GpuBench.copyBandwidth(gpu);
            System.out.printf("copy bandwidth %.0f GB/s; %d blocks, one an SM%n", copy, grid);
            int ring = 192 * 1024;
            for (String name : new String[]{"probe_bulk", "probe_cpasync", "probe_ld"}) {
                Kernel k = ctx.kernel("stream_probe", name);
                k.allowDynamicShared(ring);
                int[] chunks = name.equals("probe_bulk") ? new int[]{4096, 16384, 65536} : new int[]{16};
                for (long per : new long[]{160 * 1024, most}) {
                    for (int chunk : chunks) {
                        int shared = name.equals("probe_ld") ? 0 : ring;
                        double[] ms = new double[20];
                        try (CudaEvent a = new CudaEvent(); CudaEvent b = new CudaEvent()) {
                            for (int i = -3; i < ms.length; i++) {
                                a.record(gpu.stream());
                                Launcher.launch(k, ctx.stream.handle(), grid, 1, 256, shared, src, per, chunk, ring, sink);
                                b.record(gpu.stream());
                                b.synchronize();
                                if (i >= 0) {
                                    ms[i] = b.elapsedMillisSince(a);
                                }
                            }
                        }
                        Arrays.sort(ms);
                        double gbs = grid * per / (ms[ms.length / 2] * 1e6);
                        System.out.printf("%-14s %5d KiB a block, chunk %6d: %.1f µs, %.0f GB/s (%.2f of copy)%n", name, per / 1024, chunk,
                                ms[ms.length / 2] * 1e3, gbs, gbs / copy);
                    }
                }
            }
            ctx.allocator.free(src);
            ctx.allocator.free(sink);
        }
    }
}
