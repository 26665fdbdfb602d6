package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * A decode step's routed experts with rollout's adapter, launch by launch: one Qwen3-30B-A3B MoE layer (128 INT4 g32
 * experts placed back to back as the loaders place them, top-8, hidden 2048, width 768) with LoRA r=32 f32 on gate, up
 * and down (each expert's factors a matrix of its own), at 64 and 256 tokens, each backend call of the layer replayed
 * alone from a CUDA graph (the pairs' grouping made once before, as the router's launch makes it in the step), then the
 * layer whole and the layer without its terms. Each row's figure is the bytes the call must read at least (the weights
 * and factors of the distinct experts the routing picks, the pairs' input rows) over its time, against the copy
 * bandwidth measured in the same run: where the adapter's share of a large decode batch goes, free of what leaving a
 * launch out of the model's step does to the routing after it.
 * Usage: {@code MoeDecodeLoraBench [OUT_DIR [TOKENS]]} (TOKENS a comma list, 64,256 by default); prints a table and
 * writes {@code moe-decode-lora.md}.
 */
public final class MoeDecodeLoraBench {
    private static final GpuBench TABLE = new GpuBench(78, 20, 22);
    private static final int E = 128;
    private static final int HIDDEN = 2048;
    private static final int WIDTH = 768;
    private static final int TOPK = 8;
    private static final int RANK = 32;
    private static final float SCALE = 2f;

    private MoeDecodeLoraBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("MoeDecodeLoraBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path out = args.length > 0 ? Path.of(args[0]) : null;
        int[] tokens = args.length > 1 ? java.util.Arrays.stream(args[1].split(",")).mapToInt(Integer::parseInt).toArray()
                : new int[]{64, 256};
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device());
            double copy = TABLE.copyBandwidthRow(gpu);
            SplittableRandom r = new SplittableRandom(29);
            CudaBenchData.StackedExperts stack = CudaBenchData.StackedExperts.random(gpu, r, E, HIDDEN, WIDTH);
            ExpertWeights gate = views(stack.gate(), WIDTH);
            ExpertWeights up = views(stack.up(), WIDTH);
            ExpertWeights down = views(stack.down(), HIDDEN);
            List<Tensor> owned = new ArrayList<>();
            ExpertWeights gateA = CudaBenchData.denseExperts(gpu, r, owned, E, RANK, HIDDEN);
            ExpertWeights upA = CudaBenchData.denseExperts(gpu, r, owned, E, RANK, HIDDEN);
            ExpertWeights downA = CudaBenchData.denseExperts(gpu, r, owned, E, RANK, WIDTH);
            ExpertWeights gateB = CudaBenchData.denseExperts(gpu, r, owned, E, WIDTH, RANK);
            ExpertWeights upB = CudaBenchData.denseExperts(gpu, r, owned, E, WIDTH, RANK);
            ExpertWeights downB = CudaBenchData.denseExperts(gpu, r, owned, E, HIDDEN, RANK);
            for (int m : tokens) {
                layer(gpu, r, m, copy, gate, up, down, gateA, upA, downA, gateB, upB, downB, stack);
            }
            owned.forEach(gpu::free);
            stack.free(gpu);
            TABLE.write("A decode step's routed experts with their LoRA, launch by launch, on " + gpu.device(), out,
                    "moe-decode-lora.md");
        }
    }

    private static void layer(CudaBackend gpu, SplittableRandom r, int m, double copy, ExpertWeights gate, ExpertWeights up,
                              ExpertWeights down, ExpertWeights gateA, ExpertWeights upA, ExpertWeights downA, ExpertWeights gateB,
                              ExpertWeights upB, ExpertWeights downB, CudaBenchData.StackedExperts stack) {
        CudaBenchData.MoeStep st = CudaBenchData.MoeStep.random(gpu, r, m, TOPK, E, HIDDEN, WIDTH);
        int pairs = m * TOPK;
        var al = gpu.allocator();
        Tensor loG = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, pairs, RANK);
        Tensor loU = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, pairs, RANK);
        Tensor loD = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, pairs, RANK);
        Tensor act = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, pairs, WIDTH);
        Tensor weights = CudaBenchData.randomDevice(gpu, r, DType.F32, m, TOPK);
        Tensor out = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, HIDDEN);
        try {
            long distinct = st.distinct().size();
            long perExpert = stack.perExpert();
            long gateUpBytes = distinct * perExpert * 2 / 3;   // gate and up of an expert: two thirds of its bytes (equal shapes)
            long downBytes = distinct * perExpert / 3;
            long factorA = 4L * RANK * (2L * HIDDEN + WIDTH);  // an expert's A of gate, up and down, f32
            long factorB = 4L * RANK * (2L * WIDTH + HIDDEN);
            long xBytes = 4L * m * HIDDEN;
            long actBytes = 4L * pairs * WIDTH;
            Backend.PairLora gTerm = new Backend.PairLora(loG, gateB, SCALE);
            Backend.PairLora uTerm = new Backend.PairLora(loU, upB, SCALE);
            Backend.PairLora dTerm = new Backend.PairLora(loD, downB, SCALE);
            Runnable aGateUp = () -> gpu.moeExpertMatmulPairsShared(st.x(), TOPK, new ExpertWeights[]{gateA, upA}, st.dIds(),
                    new Tensor[]{loG, loU});
            Runnable gateUp = () -> require(gpu.moeSwigluPairs(st.x(), TOPK, gate, up, st.dIds(), gTerm, uTerm, act), "moeSwigluPairs");
            Runnable aDown = () -> gpu.moeExpertMatmulPairs(act, 1, downA, st.dIds(), 1f, loD, false);
            Runnable downLora = () -> require(gpu.moeExpertMatmulPairsLora(act, 1, down, st.dIds(), dTerm, st.y()),
                    "moeExpertMatmulPairsLora");
            Runnable combine = () -> gpu.moeCombinePairs(st.y(), weights, out, false);
            Runnable gateUpBase = () -> require(gpu.moeSwigluPairs(st.x(), TOPK, gate, up, st.dIds(), null, null, act), "moeSwigluPairs");
            Runnable downBase = () -> gpu.moeExpertMatmulPairs(act, 1, down, st.dIds(), 1f, st.y(), false);
            String at = String.format("%d tokens (%d experts): ", m, distinct);
            double whole = row(gpu, copy, at + "the layer with its LoRA (5 calls)", gateUpBytes + downBytes + distinct * (factorA + factorB)
                    + xBytes, () -> {
                aGateUp.run();
                gateUp.run();
                aDown.run();
                downLora.run();
                combine.run();
            });
            double base = row(gpu, copy, at + "the layer without LoRA (3 calls)", gateUpBytes + downBytes + xBytes, () -> {
                gateUpBase.run();
                downBase.run();
                combine.run();
            });
            TABLE.row(at + "the adapter's share of the layer", String.format("%.1f us", (whole - base) * 1e3),
                    String.format("%.1f us whole", whole * 1e3), (whole - base) / whole);
            row(gpu, copy, at + "gate's and up's LoRA A (moeExpertMatmulPairsShared)",
                    distinct * 4L * RANK * 2 * HIDDEN + xBytes, aGateUp);
            row(gpu, copy, at + "gate, up, their terms, SwiGLU (moeSwigluPairs)",
                    gateUpBytes + distinct * 4L * RANK * 2 * WIDTH + xBytes + 8L * pairs * RANK, gateUp);
            row(gpu, copy, at + "gate, up, SwiGLU without terms", gateUpBytes + xBytes, gateUpBase);
            row(gpu, copy, at + "down's LoRA A (moeExpertMatmulPairs)", distinct * 4L * RANK * WIDTH + actBytes, aDown);
            row(gpu, copy, at + "down with its term (moeExpertMatmulPairsLora)",
                    downBytes + distinct * 4L * RANK * HIDDEN + actBytes + 4L * pairs * RANK, downLora);
            row(gpu, copy, at + "down without its term", downBytes + actBytes, downBase);
            row(gpu, copy, at + "the combine (moeCombinePairs)", 4L * pairs * HIDDEN, combine);
        } finally {
            for (Tensor t : new Tensor[]{loG, loU, loD, act, weights, out}) {
                gpu.free(t);
            }
            st.free(gpu);
        }
    }

    /** Times {@code work} from a graph (median replay) and adds its row of {@code bytes} over that time; returns ms. */
    private static double row(CudaBackend gpu, double copy, String name, long bytes, Runnable work) {
        double ms = GpuBench.graphMs(gpu, 20, work);
        TABLE.bandwidthRow(String.format("%s (%.1f us)", name, ms * 1e3), bytes / (ms * 1e6), copy);
        return ms;
    }

    private static void require(boolean taken, String op) {
        if (!taken) {
            throw new IllegalStateException(op + " declined the layer's shapes: the fused launch this bench times did not run");
        }
    }

    /** The experts of a stacked matrix as matrices of their own, views the kernels read as one stack again. */
    private static ExpertWeights views(QuantizedTensor s, int rows) {
        ExpertWeights w = ExpertWeights.ofStack(s, rows);
        if (w.stacked() == null) {
            throw new IllegalStateException("the experts' views do not read as one stack: " + s);
        }
        return w;
    }
}
