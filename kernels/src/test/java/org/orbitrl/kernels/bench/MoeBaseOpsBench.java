package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.MoeHostOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.SplittableRandom;

/**
 * The base expert products of one training step's MoE layer at the Qwen3-30B-A3B shape (16,384
 * tokens, top-8 of 128 experts drawn uniformly: 131,072 grouped rows, hidden 2048, expert width 768,
 * INT4 group-32 experts dequantized {@code chunk} at a time): the forward products of gate (and up)
 * and down and the two transposed products of the backward, each as TFLOP/s against one dense bf16
 * cuBLAS product of the same FLOPs measured in the same run (x rounded to bf16 the same way), and with
 * bf16 experts (no dequantization) to show what the dequantization costs; each also with cuBLAS's
 * grouped call ({@code orbit.cuda.expertTile=0}), 128- and 512-row tiles (the default is 256) and the
 * dequantization not overlapped ({@code orbit.cuda.dequantOverlap=off}); ratio: their time over the default's.
 * Usage: {@code MoeBaseOpsBench [OUT_DIR [CHUNK]]}; prints a table and writes {@code moe-base-ops.md}.
 */
public final class MoeBaseOpsBench {
    private static final GpuBench TABLE = new GpuBench(76, 22, 22);
    private static final int TOKENS = 16384;
    private static final int TOPK = 8;
    private static final int E = 128;
    private static final int HIDDEN = 2048;
    private static final int WIDTH = 768;
    private static final String TILE = "orbit.cuda.expertTile";
    private static final String OVERLAP = "orbit.cuda.dequantOverlap";

    private MoeBaseOpsBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("MoeBaseOpsBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path out = args.length > 0 ? Path.of(args[0]) : null;
        int chunk = args.length > 1 ? Integer.parseInt(args[1]) : 32;
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device());
            TABLE.copyBandwidthRow(gpu);
            SplittableRandom r = new SplittableRandom(5);
            int[] ids = CudaBenchData.randomRouting(r, TOKENS, TOPK, E, new HashSet<>());
            int p = ids.length;
            Tensor[] grouping = {Tensor.allocate(Arena.ofAuto(), DType.I32, E + 1), Tensor.allocate(Arena.ofAuto(), DType.I32, p),
                    Tensor.allocate(Arena.ofAuto(), DType.I32, p)};
            MoeHostOps.group(Tensor.ofInts(ids, TOKENS, TOPK), E, grouping[0], grouping[1], grouping[2]);
            int[] offsets = new int[E + 1];
            long[] off = grouping[0].toLongArray();
            for (int e = 0; e <= E; e++) {
                offsets[e] = (int) off[e];
            }
            CudaAllocator al = gpu.allocator();
            List<Tensor> owned = new ArrayList<>();
            Tensor x = filled(gpu, r, owned, p, HIDDEN);
            Tensor h = filled(gpu, r, owned, p, WIDTH);
            Tensor outH = filled(gpu, r, owned, p, HIDDEN);
            Tensor outW = filled(gpu, r, owned, p, WIDTH);
            ExpertWeights gateQ = int4(gpu, r, WIDTH, HIDDEN);
            ExpertWeights downQ = int4(gpu, r, HIDDEN, WIDTH);
            ExpertWeights gateB = bf16(gpu, r, owned, WIDTH, HIDDEN);
            ExpertWeights downB = bf16(gpu, r, owned, HIDDEN, WIDTH);
            Tensor denseGate = CudaBenchData.randomDevice(gpu, r, DType.BF16, WIDTH, HIDDEN);
            Tensor denseDown = CudaBenchData.randomDevice(gpu, r, DType.BF16, HIDDEN, WIDTH);
            owned.add(denseGate);
            owned.add(denseDown);
            double flops = 2.0 * p * HIDDEN * WIDTH;

            double dense1 = GpuBench.timeMs(gpu, 5, () -> gpu.matmul(x, denseGate, outW));
            double dense2 = GpuBench.timeMs(gpu, 5, () -> gpu.matmul(h, denseDown, outH));
            TABLE.row(String.format("dense bf16 x·Wᵀ [P,2048]->[P,768] %.3f ms", dense1), tflops(flops, dense1), "-", 1);
            TABLE.row(String.format("dense bf16 x·Wᵀ [P,768]->[P,2048] %.3f ms", dense2), tflops(flops, dense2), "-", 1);
            op(gpu, flops, dense1, "gate/up x·Wᵀ [P,2048]->[P,768] int4", () -> gpu.moeExpertMatmul(x, gateQ, offsets, outW, chunk));
            op(gpu, flops, dense1, "  bf16 experts", () -> gpu.moeExpertMatmul(x, gateB, offsets, outW, chunk));
            op(gpu, flops, dense2, "down h·Wᵀ [P,768]->[P,2048] int4", () -> gpu.moeExpertMatmul(h, downQ, offsets, outH, chunk));
            op(gpu, flops, dense2, "  bf16 experts", () -> gpu.moeExpertMatmul(h, downB, offsets, outH, chunk));
            op(gpu, flops, dense2, "gate/up dy·W [P,768]->[P,2048] int4", () -> gpu.moeExpertMatmulTransposed(h, gateQ, offsets, outH, chunk));
            op(gpu, flops, dense2, "  bf16 experts", () -> gpu.moeExpertMatmulTransposed(h, gateB, offsets, outH, chunk));
            op(gpu, flops, dense1, "down dy·W [P,2048]->[P,768] int4", () -> gpu.moeExpertMatmulTransposed(outH, downQ, offsets, outW, chunk));
            op(gpu, flops, dense1, "  bf16 experts", () -> gpu.moeExpertMatmulTransposed(outH, downB, offsets, outW, chunk));
            gpu.synchronize();
            for (Tensor t : owned) {
                al.free(t);
            }
            TABLE.write("MoE base expert products on " + gpu.device() + " (" + p + " grouped rows, " + E + " experts, chunk "
                    + chunk + ")", out, "moe-base-ops.md");
        }
    }

    private static String tflops(double flops, double ms) {
        return String.format("%.0f TFLOP/s", flops / (ms * 1e9));
    }

    private static void op(CudaBackend gpu, double flops, double dense, String name, Runnable work) {
        double ms = GpuBench.timeMs(gpu, 5, work);
        TABLE.row(String.format("%s %.3f ms", name, ms), tflops(flops, ms), String.format("dense %.3f ms", dense), dense / ms);
        String[][] variants = {{TILE, "0"}, {TILE, "128"}, {TILE, "512"}, {OVERLAP, "off"}};
        for (String[] v : variants) {
            System.setProperty(v[0], v[1]);
            try {
                double other = GpuBench.timeMs(gpu, 5, work);
                TABLE.row(String.format("    %s=%s %.3f ms", v[0].substring("orbit.cuda.".length()), v[1], other), tflops(flops, other),
                        "the default", other / ms);
            } finally {
                System.clearProperty(v[0]);
            }
        }
    }

    private static Tensor filled(CudaBackend gpu, SplittableRandom r, List<Tensor> owned, long rows, long cols) {
        Tensor t = CudaBenchData.repeatedBlock(gpu, r, rows, cols);
        owned.add(t);
        return t;
    }

    /** 128 INT4 experts made of 4 distinct random matrices (the bytes read and the products are what count). */
    private static ExpertWeights int4(CudaBackend gpu, SplittableRandom r, int rows, int cols) {
        QuantizedTensor[] protos = new QuantizedTensor[4];
        for (int i = 0; i < protos.length; i++) {
            protos[i] = CudaBenchData.randomInt4(r, rows, cols);
        }
        QuantizedTensor[] q = new QuantizedTensor[E];
        for (int e = 0; e < E; e++) {
            q[e] = gpu.toDevice(protos[e % protos.length]);
        }
        return new ExpertWeights(rows, cols, new Tensor[E], q);
    }

    private static ExpertWeights bf16(CudaBackend gpu, SplittableRandom r, List<Tensor> owned, int rows, int cols) {
        Tensor proto = CudaBenchData.randomDevice(gpu, r, DType.BF16, rows, cols);
        Tensor[] dense = new Tensor[E];
        for (int e = 0; e < E; e++) {
            dense[e] = gpu.allocator().allocate(MemoryCategory.OTHER, DType.BF16, rows, cols);
            gpu.copy(proto, dense[e]);
            owned.add(dense[e]);
        }
        owned.add(proto);
        return new ExpertWeights(rows, cols, dense, new QuantizedTensor[E]);
    }
}
