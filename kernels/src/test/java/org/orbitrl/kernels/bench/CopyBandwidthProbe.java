package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.lang.foreign.Arena;

/**
 * Host-device copy bandwidth of the CUDA allocator's {@code upload} and {@code toHost} for host tensors off the heap,
 * as a layer's offloaded input takes them: the median of 5 copies of each size, in GB/s, and a device-to-device copy of
 * the same size in the same run for scale. Run it with {@code -Dorbit.cuda.stagedCopyBytes=N} to compare the
 * page-locked staging (the default above 1 MiB) with the pageable copy (a threshold above the sizes).
 *
 * <pre>java ... org.orbitrl.kernels.bench.CopyBandwidthProbe [MiB,...]</pre>
 */
public final class CopyBandwidthProbe {
    private CopyBandwidthProbe() {
    }

    public static void main(String[] args) {
        if (!Cuda.available()) {
            System.out.println("CopyBandwidthProbe: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        String sizes = args.length > 0 ? args[0] : "16,128,512";
        try (CudaBackend gpu = new CudaBackend()) {
            CudaAllocator a = (CudaAllocator) gpu.allocator();
            System.out.println("staged copies from " + Long.getLong("orbit.cuda.stagedCopyBytes", 1L << 20) + " bytes");
            for (String m : sizes.split(",")) {
                long n = Long.parseLong(m) << 18;   // f32 elements of m MiB
                Tensor host = Tensor.allocate(Arena.ofAuto(), DType.F32, n);
                host.fill(1.5f);
                Tensor dev = a.upload(MemoryCategory.ACTIVATIONS, host);
                Tensor dev2 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n);
                double up = median(() -> a.release(a.upload(MemoryCategory.ACTIVATIONS, host)), gpu);
                double down = median(() -> a.toHost(dev), gpu);
                double d2d = median(() -> a.copy(dev, dev2), gpu);
                double gb = n * 4 / 1e9;
                System.out.printf("%s MiB: upload %.2f GB/s, toHost %.2f GB/s, device copy %.1f GB/s%n", m, gb / up, gb / down,
                        2 * gb / d2d);
                a.release(dev);
                a.release(dev2);
            }
        }
    }

    private static double median(Runnable r, CudaBackend gpu) {
        double[] s = new double[5];
        r.run();
        gpu.synchronize();
        for (int i = 0; i < s.length; i++) {
            long t0 = System.nanoTime();
            r.run();
            gpu.synchronize();
            s[i] = (System.nanoTime() - t0) / 1e9;
        }
        java.util.Arrays.sort(s);
        return s[s.length / 2];
    }
}
