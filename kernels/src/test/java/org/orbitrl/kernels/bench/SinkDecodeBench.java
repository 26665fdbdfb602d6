package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * DeepSeek V4's decode attention at V4-Flash's widths (64 heads of 512, a shared K=V head, a sink a head): every
 * sequence's query in one launch ({@link org.orbitrl.kernels.Backend#sinkDecodeAttention}) against the same queries
 * attended to sequence by sequence ({@link org.orbitrl.kernels.Backend#sinkAttention} over each sequence's keys packed
 * beforehand, with a mask of zeros: the form a decode step took before), per layer kind: sliding (127 window rows and
 * the new key), heavily compressed (and 8 entries at 1024 tokens), compressed-sparse (and 256 entries). Device time of
 * each form, the median of 20 (CUDA events), and the keys' bytes (f32) over it against the copy bandwidth measured in
 * the same run (each head group of a sequence reads its keys again, from L2 after the first).
 *
 * <pre>java ... org.orbitrl.kernels.bench.SinkDecodeBench [batches]</pre>
 */
public final class SinkDecodeBench {
    private static final int HEADS = 64;
    private static final int D = 512;
    private static final int WINDOW = 127;

    private SinkDecodeBench() {
    }

    public static void main(String[] args) {
        int[] batches = Arrays.stream((args.length > 0 ? args[0] : "1,8,32,64").split(",")).mapToInt(Integer::parseInt).toArray();
        if (!Cuda.available()) {
            System.out.println("SinkDecodeBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        try (CudaBackend gpu = new CudaBackend()) {
            double copy = GpuBench.copyBandwidth(gpu);
            System.out.printf("device %s; copy bandwidth %.0f GB/s; %d heads of %d, window %d rows%n", gpu.device(), copy, HEADS,
                    D, WINDOW);
            System.out.println("| batch | layer | keys a sequence | one launch | of the copy bandwidth | sequence by sequence | speed-up |");
            System.out.println("|---|---|---|---|---|---|---|");
            CudaAllocator a = gpu.allocator();
            SplittableRandom r = new SplittableRandom(41);
            for (int b : batches) {
                for (int[] kind : new int[][]{{0}, {8}, {256}}) {
                    int m = kind[0];
                    int keys = WINDOW + 1 + m;
                    Tensor q = a.upload(MemoryCategory.OTHER, random(r, b, HEADS, D));
                    Tensor k = a.upload(MemoryCategory.OTHER, random(r, b, D));
                    Tensor sinks = a.upload(MemoryCategory.OTHER, random(r, HEADS));
                    Tensor out = a.allocate(MemoryCategory.OTHER, DType.F32, b, HEADS, D);
                    Tensor[] win = new Tensor[b];
                    Tensor[] ent = new Tensor[b];
                    Tensor[] packed = new Tensor[b];
                    for (int i = 0; i < b; i++) {
                        win[i] = a.upload(MemoryCategory.OTHER, random(r, WINDOW, D));
                        ent[i] = m == 0 ? null : a.upload(MemoryCategory.OTHER, random(r, m, D));
                        packed[i] = a.upload(MemoryCategory.OTHER, random(r, keys, D));
                    }
                    Tensor zeros = a.upload(MemoryCategory.OTHER, Tensor.of(new float[keys], 1, keys));
                    int[][] chosen = new int[b][];
                    float scale = (float) (1 / Math.sqrt(D));
                    double one = GpuBench.timeMs(gpu, 20, () -> gpu.sinkDecodeAttention(q, win, k, ent, chosen, sinks, scale, out));
                    double each = GpuBench.timeMs(gpu, 20, () -> {
                        for (int i = 0; i < b; i++) {
                            gpu.sinkAttention(q.slice(0, i, i + 1), packed[i], zeros, sinks, scale, out.slice(0, i, i + 1));
                        }
                    });
                    double bytes = 4.0 * b * keys * D;
                    System.out.printf("| %d | %s | %d | %.1f µs | %.3f | %.1f µs | %.1fx |%n", b,
                            m == 0 ? "sliding" : m == 8 ? "heavily compressed" : "compressed-sparse", keys, one * 1e3,
                            bytes / (one * 1e-3) / (copy * 1e9), each * 1e3, each / one);
                    for (Tensor t : new Tensor[]{q, k, sinks, out, zeros}) {
                        a.free(t);
                    }
                    for (int i = 0; i < b; i++) {
                        a.free(win[i]);
                        a.free(packed[i]);
                        if (ent[i] != null) {
                            a.free(ent[i]);
                        }
                    }
                }
            }
        }
    }

    private static Tensor random(SplittableRandom r, long... shape) {
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        float[] v = new float[Math.toIntExact(n)];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return Tensor.of(v, shape);
    }
}
