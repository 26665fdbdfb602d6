package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.MoeHostOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * The expert LoRA operations of one training step's MoE layer at the Qwen3-30B-A3B shape (16,384
 * tokens, top-8 of 128 experts: 131,072 grouped rows, hidden 2048, expert width 768, rank 32, f32
 * LoRA factors, a skewed routing with some experts idle), each timed (20 runs issued back to back, the host preparing
 * each while the device runs the last) with the narrow-side kernels
 * on tensor cores (3xTF32, the default), with their f32 kernels ({@code orbit.cuda.moeLora=f32}) and
 * with {@code orbit.cuda.narrowExperts=off} (the grouped f32 cuBLAS products, and a product plus an
 * axpy for the accumulating form), and against the device copy bandwidth measured in the same run
 * (bytes the operation must read and write over its time, as a fraction of the copy's); the gate's and the up's A
 * products in one call ({@code moeExpertMatmulShared}) against a call each. moeGroup: the counting sort against the
 * single-block grouping ({@code orbit.cuda.moeGroup=single}).
 * Usage: {@code MoeLoraOpsBench [OUT_DIR]}; prints a table and writes {@code moe-lora-ops.md}.
 */
public final class MoeLoraOpsBench {
    private static final GpuBench TABLE = new GpuBench(72, 20, 22);
    private static final int TOKENS = 16384;
    private static final int TOPK = 8;
    private static final int E = 128;
    private static final int HIDDEN = 2048;
    private static final int WIDTH = 768;
    private static final int RANK = 32;
    private static final String NARROW = "orbit.cuda.narrowExperts";
    private static final String KERNELS = "orbit.cuda.moeLora";
    private static final String GROUP = "orbit.cuda.moeGroup";

    private MoeLoraOpsBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("MoeLoraOpsBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path out = args.length > 0 ? Path.of(args[0]) : null;
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device());
            double copy = TABLE.copyBandwidthRow(gpu);
            SplittableRandom r = new SplittableRandom(7);
            int[] ids = skewedIds(r, Double.parseDouble(System.getProperty("orbit.bench.skew", "1.5")));
            int p = ids.length;
            Tensor hIds = Tensor.ofInts(ids, TOKENS, TOPK);
            Tensor[] grouping = {Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, E + 1),
                    Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, p),
                    Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, p)};
            MoeHostOps.group(hIds, E, grouping[0], grouping[1], grouping[2]);
            int[] offsets = new int[E + 1];
            long[] off = grouping[0].toLongArray();
            for (int e = 0; e <= E; e++) {
                offsets[e] = (int) off[e];
            }
            group(gpu, hIds, p);

            CudaAllocator al = gpu.allocator();
            List<Tensor> owned = new ArrayList<>();
            Tensor x = filled(gpu, r, owned, p, HIDDEN);        // [P, hidden] gathered rows
            Tensor h = filled(gpu, r, owned, p, WIDTH);         // [P, width] (dy of gate/up, or the down input)
            Tensor xa = filled(gpu, r, owned, p, RANK);         // [P, r]
            Tensor outR = filled(gpu, r, owned, p, RANK);       // [P, r]
            Tensor outH = filled(gpu, r, owned, p, HIDDEN);     // [P, hidden]
            Tensor outW = filled(gpu, r, owned, p, WIDTH);      // [P, width]
            ExpertWeights aGate = CudaBenchData.denseExperts(gpu, r, owned, E, RANK, HIDDEN);   // gate/up A [r, hidden]
            ExpertWeights bGate = CudaBenchData.denseExperts(gpu, r, owned, E, WIDTH, RANK);    // gate/up B [width, r]
            ExpertWeights aDown = CudaBenchData.denseExperts(gpu, r, owned, E, RANK, WIDTH);    // down A [r, width]
            ExpertWeights bDown = CudaBenchData.denseExperts(gpu, r, owned, E, HIDDEN, RANK);   // down B [hidden, r]
            Tensor[] gA = grads(gpu, owned, RANK, HIDDEN);
            Tensor[] gB = grads(gpu, owned, WIDTH, RANK);
            Tensor[] gADown = grads(gpu, owned, RANK, WIDTH);
            Tensor[] gBDown = grads(gpu, owned, HIDDEN, RANK);

            long f = 4;
            op(gpu, copy, "x·Aᵀ [P,2048]->[P,32] (gate/up)", f * p * (HIDDEN + RANK),
                    () -> gpu.moeExpertMatmul(x, aGate, offsets, outR, 0));
            ExpertWeights aUp = CudaBenchData.denseExperts(gpu, r, owned, E, RANK, HIDDEN);
            Tensor outR2 = filled(gpu, r, owned, p, RANK);
            double both = GpuBench.pipelinedMs(gpu, 20, () -> gpu.moeExpertMatmulShared(x, new ExpertWeights[]{aGate, aUp}, offsets,
                    new Tensor[]{outR, outR2}, 0));
            double each = GpuBench.pipelinedMs(gpu, 20, () -> {
                gpu.moeExpertMatmul(x, aGate, offsets, outR, 0);
                gpu.moeExpertMatmul(x, aUp, offsets, outR2, 0);
            });
            TABLE.bandwidthRow(String.format("x·Aᵀ of gate and up in one call (shared) %.3f ms", both), f * p * (HIDDEN + 2L * RANK)
                    / (both * 1e6), copy);
            TABLE.row("  shared vs a call each", String.format("%.3f ms", each), "shared", each / both);
            op(gpu, copy, "h·Aᵀ [P,768]->[P,32] (down)", f * p * (WIDTH + RANK),
                    () -> gpu.moeExpertMatmul(h, aDown, offsets, outR, 0));
            op(gpu, copy, "y += s·xa·Bᵀ [P,32]->[P,768] (gate/up)", f * p * (RANK + 2L * WIDTH),
                    () -> gpu.moeExpertMatmulAccumulate(xa, bGate, offsets, 0.5f, outW, false));
            op(gpu, copy, "y += s·xa·Bᵀ [P,32]->[P,2048] (down)", f * p * (RANK + 2L * HIDDEN),
                    () -> gpu.moeExpertMatmulAccumulate(xa, bDown, offsets, 0.5f, outH, false));
            op(gpu, copy, "dy·B [P,768]->[P,32] (gate/up)", f * p * (WIDTH + RANK),
                    () -> gpu.moeExpertMatmulTransposed(h, bGate, offsets, outR, 0));
            op(gpu, copy, "dx += s·(dy·B)·A [P,32]->[P,2048] (gate/up)", f * p * (RANK + 2L * HIDDEN),
                    () -> gpu.moeExpertMatmulAccumulate(xa, aGate, offsets, 0.5f, outH, true));
            op(gpu, copy, "dA += s·(dy·B)ᵀ·x [r,2048] (gate/up)", f * p * (RANK + HIDDEN),
                    () -> gpu.moeExpertWeightGrad(xa, x, offsets, 0.5f, gA));
            op(gpu, copy, "dB += s·dyᵀ·xa [768,r] (gate/up)", f * p * (WIDTH + RANK),
                    () -> gpu.moeExpertWeightGrad(h, xa, offsets, 0.5f, gB));
            op(gpu, copy, "dy·B [P,2048]->[P,32] (down)", f * p * (HIDDEN + RANK),
                    () -> gpu.moeExpertMatmulTransposed(outH, bDown, offsets, outR, 0));
            op(gpu, copy, "dh += s·(dy·B)·A [P,32]->[P,768] (down)", f * p * (RANK + 2L * WIDTH),
                    () -> gpu.moeExpertMatmulAccumulate(xa, aDown, offsets, 0.5f, outW, true));
            op(gpu, copy, "dA += s·(dy·B)ᵀ·h [r,768] (down)", f * p * (RANK + WIDTH),
                    () -> gpu.moeExpertWeightGrad(xa, h, offsets, 0.5f, gADown));
            op(gpu, copy, "dB += s·dyᵀ·xa [2048,r] (down)", f * p * (HIDDEN + RANK),
                    () -> gpu.moeExpertWeightGrad(outH, xa, offsets, 0.5f, gBDown));
            gpu.synchronize();
            for (Tensor t : owned) {
                al.free(t);
            }
            TABLE.write("MoE expert LoRA operations on " + gpu.device() + " (" + p + " grouped rows, " + E + " experts, rank "
                    + RANK + ")", out, "moe-lora-ops.md");
        }
    }

    /**
     * Times {@code work} with the tensor-core narrow kernels, their f32 kernels and the narrow kernels
     * off; rows: GB/s of both narrow kernels against the copy, and the tensor cores' speed-ups.
     */
    private static void op(CudaBackend gpu, double copy, String name, long bytes, Runnable work) {
        double fast = GpuBench.pipelinedMs(gpu, 20, work);
        double f32 = timeWith(gpu, KERNELS, "f32", work);
        double old = timeWith(gpu, NARROW, "off", work);
        TABLE.bandwidthRow(name + String.format(" %.3f ms", fast), bytes / (fast * 1e6), copy);
        TABLE.bandwidthRow(String.format("  f32 kernels (moeLora=f32) %.3f ms", f32), bytes / (f32 * 1e6), copy);
        TABLE.row("  tensor cores vs f32 kernels", String.format("%.3f ms", f32), "the tensor cores", f32 / fast);
        TABLE.row("  tensor cores vs narrowExperts=off", String.format("%.3f ms", old), "the tensor cores", old / fast);
    }

    private static double timeWith(CudaBackend gpu, String key, String value, Runnable work) {
        System.setProperty(key, value);
        try {
            return GpuBench.pipelinedMs(gpu, 20, work);
        } finally {
            System.clearProperty(key);
        }
    }

    private static void group(CudaBackend gpu, Tensor hIds, int p) {
        CudaAllocator al = gpu.allocator();
        Tensor ids = gpu.toDevice(hIds, MemoryCategory.OTHER);
        Tensor off = al.allocate(MemoryCategory.OTHER, DType.I32, E + 1);
        Tensor order = al.allocate(MemoryCategory.OTHER, DType.I32, p);
        Tensor pos = al.allocate(MemoryCategory.OTHER, DType.I32, p);
        double sort = GpuBench.timeMs(gpu, 20, () -> gpu.moeGroup(ids, E, off, order, pos));
        System.setProperty(GROUP, "single");
        double single;
        try {
            single = GpuBench.timeMs(gpu, 5, () -> gpu.moeGroup(ids, E, off, order, pos));
        } finally {
            System.clearProperty(GROUP);
        }
        TABLE.row("moeGroup " + TOKENS + "x" + TOPK + " ids, " + E + " experts", String.format("%.1f us", sort * 1e3),
                String.format("single block %.1f us", single * 1e3), single / sort);
        gpu.synchronize();
        al.free(ids);
        al.free(off);
        al.free(order);
        al.free(pos);
    }

    private static Tensor filled(CudaBackend gpu, SplittableRandom r, List<Tensor> owned, long rows, long cols) {
        Tensor t = CudaBenchData.repeatedBlock(gpu, r, rows, cols);
        owned.add(t);
        return t;
    }

    private static Tensor[] grads(CudaBackend gpu, List<Tensor> owned, int rows, int cols) {
        Tensor[] g = new Tensor[E];
        for (int e = 0; e < E; e++) {
            g[e] = gpu.toDevice(Tensor.of(new float[rows * cols], rows, cols), MemoryCategory.OTHER);
            owned.add(g[e]);
        }
        return g;
    }

    /**
     * Ids [tokens, 8], distinct within a token, expert ⌊used·u^skew⌋ for uniform u: skewed towards low experts (skew 1.5,
     * the default; experts 120..127 never chosen), or spread evenly over all 128 ({@code -Dorbit.bench.skew=1}, a
     * training step of random weights: blocks of many experts run side by side, not of a few).
     */
    private static int[] skewedIds(SplittableRandom r, double skew) {
        int used = skew == 1.0 ? E : E - 8;
        int[] ids = new int[TOKENS * TOPK];
        for (int t = 0; t < TOKENS; t++) {
            int taken = 0;
            long mask0 = 0;
            long mask1 = 0;
            while (taken < TOPK) {
                int e = Math.min(used - 1, (int) (used * Math.pow(r.nextDouble(), skew)));
                boolean seen = e < 64 ? (mask0 >> e & 1) != 0 : (mask1 >> (e - 64) & 1) != 0;
                if (!seen) {
                    if (e < 64) {
                        mask0 |= 1L << e;
                    } else {
                        mask1 |= 1L << (e - 64);
                    }
                    ids[t * TOPK + taken++] = e;
                }
            }
        }
        return ids;
    }
}
