package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.Mxfp4;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.SplittableRandom;

/**
 * Random quantized matrices for the GPU benchmarks, in the real formats' layouts, made from random
 * codes and scales directly (quantizing 8192² weights on the host would dominate the run).
 */
final class CudaBenchData {
    private CudaBenchData() {
    }

    private static Tensor randomBytes(SplittableRandom r, DType dt, long... shape) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), dt, shape);
        MemorySegment s = t.segment();
        for (long i = 0; i < t.byteSize(); i++) {
            s.set(ValueLayout.JAVA_BYTE, i, (byte) r.nextInt(256));
        }
        return t;
    }

    /** int4-g32 [n, k]: random codes, bf16 scales in [0.002, 0.05). */
    static QuantizedTensor randomInt4(SplittableRandom r, int n, int k) {
        Tensor codes = randomBytes(r, DType.I32, n, k / 8);
        Tensor scales = Tensor.allocate(Arena.ofAuto(), DType.BF16, n, k / 32);
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < k / 32; g++) {
                scales.setFloat((float) (0.002 + 0.048 * r.nextDouble()), i, g);
            }
        }
        return new QuantizedTensor(Int4G32.INSTANCE, n, k, codes, scales);
    }

    /** mxfp4 [n, k]: random E2M1 codes, E8M0 scales 2^-7 .. 2^-2. */
    static QuantizedTensor randomMxfp4(SplittableRandom r, int n, int k) {
        Tensor codes = randomBytes(r, DType.U8, n, k / 2);
        Tensor scales = Tensor.allocate(Arena.ofAuto(), DType.U8, n, k / 32);
        MemorySegment s = scales.segment();
        for (long i = 0; i < (long) n * k / 32; i++) {
            s.set(ValueLayout.JAVA_BYTE, i, (byte) (120 + r.nextInt(6)));
        }
        return new QuantizedTensor(Mxfp4.INSTANCE, n, k, codes, scales);
    }

    /**
     * A device f32 tensor [rows, cols] (category OTHER) of seeded values in [-1, 1): a 4 MiB random block
     * repeated, so that gigabyte operands are filled quickly.
     */
    static Tensor repeatedBlock(CudaBackend gpu, SplittableRandom r, long rows, long cols) {
        int block = 1 << 20;
        float[] v = new float[block];
        for (int i = 0; i < block; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        Tensor src = gpu.toDevice(Tensor.of(v, block), MemoryCategory.OTHER);
        Tensor t = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, rows, cols);
        Tensor flat = t.reshape(rows * cols);
        for (long at = 0; at < rows * cols; at += block) {
            long n = Math.min(block, rows * cols - at);
            gpu.copy(src.slice(0, 0, n), flat.slice(0, at, at + n));
        }
        gpu.synchronize();
        gpu.allocator().free(src);
        return t;
    }

    /** {@code experts} f32 matrices [rows, cols] of their own on the device, values in ±0.05 (a LoRA's factors), added to owned. */
    static ExpertWeights denseExperts(CudaBackend gpu, SplittableRandom r, List<Tensor> owned, int experts, int rows, int cols) {
        Tensor[] dense = new Tensor[experts];
        for (int e = 0; e < experts; e++) {
            float[] v = new float[rows * cols];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) ((r.nextDouble() * 2 - 1) * 0.05);
            }
            dense[e] = gpu.toDevice(Tensor.of(v, rows, cols), MemoryCategory.OTHER);
            owned.add(dense[e]);
        }
        return new ExpertWeights(rows, cols, dense, new QuantizedTensor[experts]);
    }

    /** A device tensor [rows, cols] of dtype {@code dt} (f32 or bf16), values uniform in [-1, 1). */
    static Tensor randomDevice(CudaBackend gpu, SplittableRandom r, DType dt, long rows, long cols) {
        float[] v = new float[Math.toIntExact(rows * cols)];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        Tensor h = Tensor.of(v, rows, cols);
        return gpu.toDevice(dt == DType.F32 ? h : h.to(dt), MemoryCategory.ACTIVATIONS);
    }

    /**
     * Token-major expert ids [tokens * topk], each token's {@code topk} distinct experts drawn
     * uniformly from {@code experts}; the experts chosen by any token are added to {@code distinct}.
     */
    static int[] randomRouting(SplittableRandom r, int tokens, int topk, int experts, Set<Integer> distinct) {
        int[] ids = new int[tokens * topk];
        for (int t = 0; t < tokens; t++) {
            Set<Integer> mine = new LinkedHashSet<>();
            while (mine.size() < topk) {
                mine.add(r.nextInt(experts));
            }
            int j = 0;
            for (int id : mine) {
                ids[t * topk + j++] = id;
            }
            distinct.addAll(mine);
        }
        return ids;
    }

    /**
     * One Qwen3-30B-A3B routed-expert layer on the device, experts stacked by rows, random INT4 g32:
     * gate and up [E·inter, hidden], down [E·hidden, inter].
     */
    record StackedExperts(QuantizedTensor gate, QuantizedTensor up, QuantizedTensor down, int experts) {
        static StackedExperts random(CudaBackend gpu, SplittableRandom r, int experts, int hidden, int inter) {
            return new StackedExperts(gpu.toDevice(randomInt4(r, experts * inter, hidden)),
                    gpu.toDevice(randomInt4(r, experts * inter, hidden)), gpu.toDevice(randomInt4(r, experts * hidden, inter)),
                    experts);
        }

        /** Bytes of one expert's three matrices. */
        long perExpert() {
            return (gate.byteSize() + up.byteSize() + down.byteSize()) / experts;
        }

        void free(CudaBackend gpu) {
            gpu.free(gate);
            gpu.free(up);
            gpu.free(down);
        }
    }

    /**
     * The buffers of one MoE decode step over {@code tokens} tokens routed to {@code topk} random
     * experts each: ids i32 [tokens, topk] on the device, x [tokens, hidden], and per routed pair the
     * gate and up outputs [tokens·topk, inter] and down output [tokens·topk, hidden].
     */
    record MoeStep(int[] ids, Set<Integer> distinct, Tensor dIds, Tensor x, Tensor g, Tensor u, Tensor y) {
        static MoeStep random(CudaBackend gpu, SplittableRandom r, int tokens, int topk, int experts, int hidden, int inter) {
            Set<Integer> distinct = new java.util.HashSet<>();
            int[] ids = randomRouting(r, tokens, topk, experts, distinct);
            var a = gpu.allocator();
            return new MoeStep(ids, distinct, gpu.toDevice(Tensor.ofInts(ids, tokens, topk), MemoryCategory.ACTIVATIONS),
                    randomDevice(gpu, r, DType.F32, tokens, hidden),
                    a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) tokens * topk, inter),
                    a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) tokens * topk, inter),
                    a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) tokens * topk, hidden));
        }

        /** Gate and up per routed pair (x shared by a token's experts), SwiGLU, down: four launches. */
        void perPair(CudaBackend gpu, StackedExperts w) {
            gpu.moe().moeMatmulQuantized(x, w.gate(), w.experts(), dIds, g);
            gpu.moe().moeMatmulQuantized(x, w.up(), w.experts(), dIds, u);
            gpu.swiglu(g, u, g);
            gpu.moe().moeMatmulQuantized(g, w.down(), w.experts(), dIds, y);
        }

        /** Bytes of the distinct experts the step reads. */
        long expertBytes(StackedExperts w) {
            return distinct.size() * w.perExpert();
        }

        void free(CudaBackend gpu) {
            for (Tensor t : new Tensor[]{dIds, x, g, u, y}) {
                gpu.free(t);
            }
        }
    }
}
