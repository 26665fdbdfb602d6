package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.bench.GpuBench;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.SplittableRandom;

/**
 * Exact mode's grouped expert products ({@link CudaExactExperts}) by weight kind, on gpt-oss-20b's expert widths (32
 * experts, K = N = 2880): a decode step's pairs (64 tokens x 4 experts, 8 an expert) and a training micro-batch's
 * (4096 x 4, 512 an expert). Each kind's time (median of 20 calls, CUDA events) against the time its weight bytes
 * (codes and scales of every expert) take at the copy bandwidth measured in the same run, and against the bf16
 * weight's time at the same size in the same run. MXFP4 and NVFP4 read the same codes; MXFP4 takes one weight
 * plane (its values are bf16 exactly), NVFP4 three, INT4 one (the codes form).
 *
 * <pre>java ... org.orbitrl.kernels.cuda.ExactExpertsBench</pre>
 */
public final class ExactExpertsBench {
    private ExactExpertsBench() {
    }

    public static void main(String[] args) {
        if (!Cuda.available()) {
            System.out.println("ExactExpertsBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        int experts = 32;
        int k = 2880;
        int n = 2880;
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
            double copy = GpuBench.copyBandwidth(gpu);
            System.out.printf("copy bandwidth %.0f GB/s (read + write); %d experts, K %d, N %d%n", copy, experts, k, n);
            System.out.println("| kind | pairs | µs a call | weight bytes at copy bandwidth | of that limit | of bf16's time |");
            System.out.println("|---|---|---|---|---|---|");
            for (int pairsAnExpert : new int[]{8, 512}) {
                double bf16 = Double.NaN;
                for (String kind : new String[]{"bf16", "int4-g32", "mxfp4", "nvfp4"}) {
                    SplittableRandom r = new SplittableRandom(7);
                    Tensor[] dense = new Tensor[experts];
                    QuantizedTensor[] quant = new QuantizedTensor[experts];
                    long bytes = 0;
                    for (int e = 0; e < experts; e++) {
                        if (kind.equals("bf16")) {
                            Tensor f = CudaTestBase.randn(r, 0.5f, n, k);
                            Tensor b = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.BF16, n, k);
                            b.copyFrom(f);
                            dense[e] = gpu.toDevice(b);
                            bytes += b.byteSize();
                        } else {
                            QuantizedTensor q = CudaQuantTest.random(kind, r, n, k);
                            quant[e] = gpu.toDevice(q);
                            bytes += q.codes().byteSize() + q.scales().byteSize() + (q.zeros() == null ? 0 : q.zeros().byteSize());
                        }
                    }
                    ExpertWeights w = new ExpertWeights(n, k, dense, quant);
                    int[] offsets = new int[experts + 1];
                    for (int e = 0; e < experts; e++) {
                        offsets[e + 1] = offsets[e] + pairsAnExpert;
                    }
                    int pairs = offsets[experts];
                    Tensor x = gpu.toDevice(CudaTestBase.randn(r, 1f, pairs, k));
                    Tensor y = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, pairs, n);
                    double us = GpuBench.timeMs(gpu, 20, () -> gpu.moeExpertMatmul(x, w, offsets, y, 0)) * 1e3;
                    double limitUs = bytes / (copy * 1e3);   // the weights read once at the copy's bytes a second
                    if (kind.equals("bf16")) {
                        bf16 = us;
                    }
                    System.out.printf("| %s | %d | %.1f | %.1f µs | %.3f | %.2f |%n", kind, pairs, us, limitUs, limitUs / us, bf16 / us);
                    gpu.synchronize();
                    gpu.free(x);
                    gpu.free(y);
                    for (int e = 0; e < experts; e++) {
                        if (dense[e] != null) {
                            gpu.free(dense[e]);
                        }
                        if (quant[e] != null) {
                            gpu.free(quant[e]);
                        }
                    }
                }
            }
        }
    }
}
