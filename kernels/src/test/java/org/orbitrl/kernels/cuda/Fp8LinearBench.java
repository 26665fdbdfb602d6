package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.bench.GpuBench;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;

/**
 * FP8 E4M3 linears with 128×128 E8M0 block scales (DeepSeek's fp8 checkpoints) on the CUDA backend with the default
 * kernels, at DeepSeek-V3's attention widths (q_a [1536, 7168], q_b [24576, 1536], kv_a [576, 7168], o [7168, 16384]):
 * {@code matmulQuantized} at 1 to 64 rows (the FP8 GEMV up to its rows, then the weight dequantized to bf16 and the bf16
 * product) against that dequantization and product called apart, against the same weight held bf16 ({@code matmul}),
 * and against the FP8 weight's bytes (codes and scales) at the copy bandwidth, all measured in the same run. A call's
 * time: 20 calls captured back to back in a CUDA graph, the replay's median over 20 (CUDA events) divided by 20.
 *
 * <pre>java ... org.orbitrl.kernels.cuda.Fp8LinearBench</pre>
 */
public final class Fp8LinearBench {
    private Fp8LinearBench() {
    }

    public static void main(String[] args) {
        if (!Cuda.available()) {
            System.out.println("Fp8LinearBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        int[][] shapes = {{1536, 7168}, {24576, 1536}, {576, 7168}, {7168, 16384}};
        String[] names = {"q_a", "q_b", "kv_a", "o"};
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), false)) {
            double copy = GpuBench.copyBandwidth(gpu);
            System.out.printf("copy bandwidth %.0f GB/s (read + write)%n", copy);
            System.out.println("| linear | rows | matmulQuantized µs | its bytes at copy bandwidth, µs | of that limit | dequantize + "
                    + "bf16 product µs | bf16 weight µs | matmulQuantized / bf16 weight |");
            System.out.println("|---|---|---|---|---|---|---|---|");
            SplittableRandom r = new SplittableRandom(9);
            for (int s = 0; s < shapes.length; s++) {
                int n = shapes[s][0];
                int k = shapes[s][1];
                Tensor full = CudaTestBase.randn(r, 0.05f, n, k);
                QuantizedTensor q = gpu.toDevice(Fp8Block128Ue8m0.INSTANCE.quantize(full));
                Tensor wb = gpu.toDevice(full.to(DType.BF16));
                Tensor scratch = gpu.toDevice(full.to(DType.BF16));
                long bytes = q.codes().byteSize() + q.scales().byteSize();
                double limitUs = bytes / (copy * 1e3);   // the copy bandwidth counts every byte moved, read or written
                for (int m : new int[]{1, 2, 4, 8, 64}) {
                    Tensor x = gpu.toDevice(CudaTestBase.randn(r, 1f, m, k));
                    Tensor y = gpu.toDevice(Tensor.of(new float[m * n], m, n));
                    double fp8 = graphUs(gpu, () -> gpu.matmulQuantized(x, q, y));
                    double viaBf16 = graphUs(gpu, () -> {
                        gpu.dequantize(q, scratch);
                        gpu.matmul(x, scratch, y);
                    });
                    double bf16 = graphUs(gpu, () -> gpu.matmul(x, wb, y));
                    System.out.printf("| %s [%d, %d] | %d | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |%n", names[s], n, k, m, fp8,
                            limitUs, limitUs / fp8, viaBf16, bf16, fp8 / bf16);
                    gpu.free(x);
                    gpu.free(y);
                }
                gpu.free(q);
                gpu.free(wb);
                gpu.free(scratch);
            }
        }
    }

    /** µs of one call of {@code work}: 20 calls captured back to back in a graph, its replays timed (median of 20). */
    private static double graphUs(CudaBackend gpu, Runnable work) {
        work.run();   // outside the capture: modules load, scratch buffers reach their size
        gpu.synchronize();
        int calls = 20;
        try (CudaGraph g = CudaGraph.capture(gpu.stream(), () -> {
            for (int i = 0; i < calls; i++) {
                work.run();
            }
        })) {
            return 1e3 * GpuBench.timeMs(gpu, 20, () -> g.launch(gpu.stream())) / calls;
        }
    }
}
