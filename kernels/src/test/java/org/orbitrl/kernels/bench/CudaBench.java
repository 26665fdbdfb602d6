package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.CudaCheck;
import org.orbitrl.kernels.cuda.CudaEvent;
import org.orbitrl.kernels.cuda.CudaGraph;
import org.orbitrl.kernels.cuda.internal.Cublas;
import org.orbitrl.kernels.cuda.internal.DevicePointer;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.bytedeco.cuda.global.cudart.cudaMemcpyAsync;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToDevice;

/**
 * GPU benchmarks, each a ratio against a limit measured in the same run:
 * <ul>
 *   <li>device-to-device copy bandwidth (bytes read + written), the memory ceiling;</li>
 *   <li>cuBLAS bf16 GEMM 8192³ (random data), the matrix ceiling, and the backend's {@code matmul}
 *       (f32 activations, bf16 weight) at model shapes against it;</li>
 *   <li>the fused INT4 dequant-GEMV ({@code matmulQuantized}, M = 1 and 8) at Qwen3-30B-A3B expert
 *       shapes and 2048², rotating over enough weight copies to exceed the L2 cache, as effective
 *       GB/s against the copy bandwidth; issued per call from Java and replayed from a CUDA graph
 *       (which removes the Java launch cost, as decode will).</li>
 * </ul>
 * Usage: {@code CudaBench [OUT_DIR]}; prints a table and writes {@code cuda-bench.md} into OUT_DIR.
 */
public final class CudaBench {
    private static final List<String> ROWS = new ArrayList<>();

    private CudaBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("CudaBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path out = args.length > 0 ? Path.of(args[0]) : null;
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device() + ", kernels " + gpu.kernelInfo());
            double copyGBs = copyBandwidth(gpu);
            double peakTflops = cublasPeak(gpu);
            backendMatmul(gpu, peakTflops);
            gemv(gpu, copyGBs);
            moeDecode(gpu, copyGBs);
            attention(gpu, copyGBs);
            System.out.println("kernels: " + gpu.kernelInfo());
            StringBuilder md = new StringBuilder("## CUDA backend on " + gpu.device() + "\n\nDate: " + Instant.now()
                    + "\n\n| benchmark | figure | against | ratio |\n|---|---|---|---|\n");
            ROWS.forEach(r -> md.append(r).append('\n'));
            System.out.println(md);
            if (out != null) {
                Files.createDirectories(out);
                Files.writeString(out.resolve("cuda-bench.md"), md);
            }
        }
    }

    private static void row(String name, String figure, String against, double ratio) {
        ROWS.add("| " + name + " | " + figure + " | " + against + " | " + String.format("%.3f", ratio) + " |");
        System.out.printf("%-60s %-22s %-28s %.3f%n", name, figure, against, ratio);
    }

    /** Median milliseconds of {@code reps} timings of {@code work}, each timed with events after 3 warm-ups. */
    private static double timeMs(CudaBackend gpu, int reps, Runnable work) {
        for (int i = 0; i < 3; i++) {
            work.run();
        }
        gpu.synchronize();
        double[] t = new double[reps];
        try (CudaEvent a = new CudaEvent(); CudaEvent b = new CudaEvent()) {
            for (int i = 0; i < reps; i++) {
                a.record(gpu.stream());
                work.run();
                b.record(gpu.stream());
                b.synchronize();
                t[i] = b.elapsedMillisSince(a);
            }
        }
        Arrays.sort(t);
        return t[reps / 2];
    }

    private static double copyBandwidth(CudaBackend gpu) {
        long bytes = 2L << 30;
        CudaAllocator a = gpu.allocator();
        Tensor src = a.allocate(MemoryCategory.OTHER, DType.U8, bytes);
        Tensor dst = a.allocate(MemoryCategory.OTHER, DType.U8, bytes);
        double ms = timeMs(gpu, 10, () -> CudaCheck.check(cudaMemcpyAsync(new DevicePointer(CudaAllocator.address(dst)),
                new DevicePointer(CudaAllocator.address(src)), bytes, cudaMemcpyDeviceToDevice, gpu.stream().handle()), "cudaMemcpyAsync d2d"));
        a.free(src);
        a.free(dst);
        double gbs = 2.0 * bytes / (ms * 1e6);
        row("copy d2d 2 GiB (read + write)", String.format("%.0f GB/s", gbs), "4800 GB/s datasheet", gbs / 4800);
        return gbs;
    }

    /** Random bf16 device tensor [rows, cols], values uniform in [-1, 1). */
    private static Tensor randomBf16(CudaBackend gpu, SplittableRandom r, long rows, long cols, MemoryCategory c) {
        Tensor h = Tensor.allocate(Arena.ofAuto(), DType.BF16, rows, cols);
        MemorySegment s = h.segment();
        for (long i = 0; i < rows * cols; i++) {
            float v = (float) (r.nextDouble() * 2 - 1);
            s.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2 * i, (short) (Float.floatToRawIntBits(v) >>> 16));
        }
        return gpu.toDevice(h, c);
    }

    private static Tensor randomF32(CudaBackend gpu, SplittableRandom r, long rows, long cols) {
        float[] v = new float[Math.toIntExact(rows * cols)];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return gpu.toDevice(Tensor.of(v, rows, cols), MemoryCategory.ACTIVATIONS);
    }

    private static double cublasPeak(CudaBackend gpu) {
        int n = 8192;
        SplittableRandom r = new SplittableRandom(1);
        Tensor x = randomBf16(gpu, r, n, n, MemoryCategory.OTHER);
        Tensor w = randomBf16(gpu, r, n, n, MemoryCategory.OTHER);
        Tensor y = gpu.allocator().allocate(MemoryCategory.OTHER, DType.F32, n, n);
        Tensor ws = gpu.allocator().allocate(MemoryCategory.OTHER, DType.U8, Cublas.WORKSPACE_BYTES);
        double ms;
        double tflops;
        try (Cublas blas = new Cublas(gpu.stream().handle(), CudaAllocator.address(ws), Cublas.WORKSPACE_BYTES)) {
            ms = timeMs(gpu, 10, () -> blas.gemm(CudaAllocator.address(x), CudaAllocator.address(w), CudaAllocator.address(y), n, n, n, true));
            tflops = 2.0 * n * n * n / (ms * 1e9);
            row("cuBLAS bf16 GEMM 8192^3 (f32 out)", String.format("%.0f TFLOP/s", tflops), "790 TFLOP/s (H200 bf16)", tflops / 790);
            for (int[] s : MATMUL_SHAPES) { // the backend matmul's shapes with x already bf16: the GEMM alone
                double t = timeMs(gpu, 10, () -> blas.gemm(CudaAllocator.address(x), CudaAllocator.address(w), CudaAllocator.address(y),
                        s[0], s[1], s[2], true));
                double tf = 2.0 * s[0] * s[1] * s[2] / (t * 1e9);
                row(String.format("cuBLAS bf16 GEMM alone M=%d N=%d K=%d", s[0], s[1], s[2]), String.format("%.0f TFLOP/s", tf),
                        String.format("cuBLAS 8192^3 %.0f", tflops), tf / tflops);
            }
        }
        gpu.free(x);
        gpu.free(w);
        gpu.free(y);
        gpu.free(ws);
        return tflops;
    }

    private static final int[][] MATMUL_SHAPES = {{4096, 4096, 2048}, {4096, 2048, 4096}, {8192, 6144, 2048}}; // M, N, K

    private static void backendMatmul(CudaBackend gpu, double peak) {
        SplittableRandom r = new SplittableRandom(2);
        for (int[] s : MATMUL_SHAPES) {
            Tensor x = randomF32(gpu, r, s[0], s[2]);
            Tensor w = randomBf16(gpu, r, s[1], s[2], MemoryCategory.BASE_WEIGHTS);
            Tensor y = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, s[0], s[1]);
            double ms = timeMs(gpu, 10, () -> gpu.matmul(x, w, y));
            double tflops = 2.0 * s[0] * s[1] * s[2] / (ms * 1e9);
            row(String.format("matmul f32 x bf16 w M=%d N=%d K=%d", s[0], s[1], s[2]), String.format("%.0f TFLOP/s", tflops),
                    String.format("cuBLAS 8192^3 %.0f", peak), tflops / peak);
            gpu.free(x);
            gpu.free(w);
            gpu.free(y);
        }
    }

    private static void gemv(CudaBackend gpu, double copyGBs) {
        // N, K: Qwen3-30B-A3B expert gate/up and down, a 2048 square, and a large one that streams
        int[][] shapes = {{768, 2048}, {2048, 768}, {2048, 2048}, {8192, 8192}};
        SplittableRandom r = new SplittableRandom(3);
        for (int[] s : shapes) {
            int n = s[0];
            int k = s[1];
            QuantizedTensor proto = CudaBenchData.randomInt4(r, n, k);
            gemvRows(gpu, copyGBs, "INT4 g32", proto, r, n, k, new int[]{1, 8});
            if (n == 2048 && k == 2048) {
                gemvRows(gpu, copyGBs, "MXFP4", CudaBenchData.randomMxfp4(r, n, k), r, n, k, new int[]{1});
                gemvRows(gpu, copyGBs, "bf16 dense", null, r, n, k, new int[]{1, 8});
            }
        }
    }

    /** Rotates over enough device copies of the weight to exceed L2; per Java call and from a CUDA graph. */
    private static void gemvRows(CudaBackend gpu, double copyGBs, String label, QuantizedTensor proto, SplittableRandom r,
                                 int n, int k, int[] ms) {
        long wBytes = proto != null ? proto.byteSize() : 2L * n * k;
        int copies = (int) Math.max(8, (256L << 20) / wBytes); // > 4x the 60 MB L2
        QuantizedTensor[] qs = new QuantizedTensor[proto != null ? copies : 0];
        Tensor[] ds = new Tensor[proto != null ? 0 : copies];
        for (int i = 0; i < qs.length; i++) {
            qs[i] = gpu.toDevice(proto);
        }
        if (ds.length > 0) {
            ds[0] = randomBf16(gpu, r, n, k, MemoryCategory.BASE_WEIGHTS);
            for (int i = 1; i < ds.length; i++) {
                ds[i] = gpu.allocator().allocate(MemoryCategory.BASE_WEIGHTS, DType.BF16, n, k);
                gpu.copy(ds[0], ds[i]);
            }
        }
        for (int m : ms) {
            Tensor x = randomF32(gpu, r, m, k);
            Tensor y = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, n);
            Runnable all = () -> {
                for (QuantizedTensor w : qs) {
                    gpu.matmulQuantized(x, w, y);
                }
                for (Tensor w : ds) {
                    gpu.matmul(x, w, y);
                }
            };
            double perCall = timeMs(gpu, 5, all) / copies;
            double graphMs;
            try (CudaGraph g = CudaGraph.capture(gpu.stream(), all)) {
                graphMs = timeMs(gpu, 5, () -> g.launch(gpu.stream())) / copies;
            }
            long bytes = wBytes + (long) m * k * 4 + (long) m * n * 4;
            double gbsCall = bytes / (perCall * 1e6);
            double gbsGraph = bytes / (graphMs * 1e6);
            row(String.format("%s GEMV M=%d %dx%d, per Java call (%.2f us)", label, m, n, k, perCall * 1e3),
                    String.format("%.0f GB/s", gbsCall), String.format("copy %.0f GB/s", copyGBs), gbsCall / copyGBs);
            row(String.format("%s GEMV M=%d %dx%d, graph replay (%.2f us)", label, m, n, k, graphMs * 1e3),
                    String.format("%.0f GB/s", gbsGraph), String.format("copy %.0f GB/s", copyGBs), gbsGraph / copyGBs);
            gpu.free(x);
            gpu.free(y);
        }
        for (QuantizedTensor w : qs) {
            gpu.free(w);
        }
        for (Tensor w : ds) {
            gpu.free(w);
        }
    }

    /**
     * The routed-expert FFN of one Qwen3-30B-A3B layer at decode (128 INT4 g32 experts, hidden 2048,
     * expert width 768, top-8): gate and up through {@code moeMatmulQuantized} (x shared by a token's
     * experts), SwiGLU, down (x per pair), replayed from a CUDA graph; against the HBM limit, the bytes
     * of the distinct active experts over the copy bandwidth. For M = 1 also the same work as 24
     * separate {@code matmulQuantized} calls.
     */
    private static void moeDecode(CudaBackend gpu, double copyGBs) {
        int e = 128;
        int hidden = 2048;
        int inter = 768;
        int topk = 8;
        SplittableRandom r = new SplittableRandom(5);
        QuantizedTensor gate = gpu.toDevice(CudaBenchData.randomInt4(r, e * inter, hidden)); // [E * 768, 2048]
        QuantizedTensor up = gpu.toDevice(CudaBenchData.randomInt4(r, e * inter, hidden));   // [E * 768, 2048]
        QuantizedTensor down = gpu.toDevice(CudaBenchData.randomInt4(r, e * hidden, inter)); // [E * 2048, 768]
        long perExpert = (gate.byteSize() + up.byteSize() + down.byteSize()) / e;
        for (int m : new int[]{1, 8}) {
            int[] ids = new int[m * topk];
            java.util.Set<Integer> distinct = new java.util.HashSet<>();
            for (int t = 0; t < m; t++) {
                java.util.Set<Integer> mine = new java.util.LinkedHashSet<>();
                while (mine.size() < topk) {
                    mine.add(r.nextInt(e));
                }
                int j = 0;
                for (int id : mine) {
                    ids[t * topk + j++] = id;
                }
                distinct.addAll(mine);
            }
            Tensor dIds = gpu.toDevice(Tensor.ofInts(ids, m, topk), MemoryCategory.ACTIVATIONS);
            Tensor x = randomF32(gpu, r, m, hidden);
            Tensor g = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m * topk, inter);
            Tensor u = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m * topk, inter);
            Tensor y = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m * topk, hidden);
            Runnable step = () -> {
                gpu.moe().moeMatmulQuantized(x, gate, e, dIds, g);
                gpu.moe().moeMatmulQuantized(x, up, e, dIds, u);
                gpu.swiglu(g, u, g);
                gpu.moe().moeMatmulQuantized(g, down, e, dIds, y);
            };
            double ms;
            try (CudaGraph graph = CudaGraph.capture(gpu.stream(), step)) {
                ms = timeMs(gpu, 20, () -> graph.launch(gpu.stream()));
            }
            long bytes = distinct.size() * perExpert;
            double gbs = bytes / (ms * 1e6);
            row(String.format("MoE FFN decode M=%d (%d experts, %.1f MB), 4 launches, graph (%.1f us)", m, distinct.size(),
                    bytes / 1e6, ms * 1e3), String.format("%.0f GB/s", gbs), String.format("copy %.0f GB/s", copyGBs), gbs / copyGBs);
            if (m == 1) {
                QuantizedTensor[][] w = new QuantizedTensor[topk][3];
                for (int j = 0; j < topk; j++) {
                    w[j][0] = expertView(gate, ids[j], inter);
                    w[j][1] = expertView(up, ids[j], inter);
                    w[j][2] = expertView(down, ids[j], hidden);
                }
                Runnable perCall = () -> {
                    for (int j = 0; j < topk; j++) {
                        Tensor gj = g.slice(0, j, j + 1);
                        Tensor uj = u.slice(0, j, j + 1);
                        gpu.matmulQuantized(x, w[j][0], gj);
                        gpu.matmulQuantized(x, w[j][1], uj);
                        gpu.swiglu(gj, uj, gj);
                        gpu.matmulQuantized(gj, w[j][2], y.slice(0, j, j + 1));
                    }
                };
                double ms2;
                try (CudaGraph graph = CudaGraph.capture(gpu.stream(), perCall)) {
                    ms2 = timeMs(gpu, 20, () -> graph.launch(gpu.stream()));
                }
                double gbs2 = bytes / (ms2 * 1e6);
                row(String.format("MoE FFN decode M=1, 32 launches (per expert), graph (%.1f us)", ms2 * 1e3),
                        String.format("%.0f GB/s", gbs2), String.format("copy %.0f GB/s", copyGBs), gbs2 / copyGBs);
            }
            gpu.free(dIds);
            gpu.free(x);
            gpu.free(g);
            gpu.free(u);
            gpu.free(y);
        }
        gpu.free(gate);
        gpu.free(up);
        gpu.free(down);
    }

    /** Expert e of a stacked device [E * n, k] INT4 matrix, as views. */
    private static QuantizedTensor expertView(QuantizedTensor s, int e, int n) {
        return new QuantizedTensor(s.format(), n, s.cols(), s.codes().slice(0, (long) e * n, (long) (e + 1) * n),
                s.scales().slice(0, (long) e * n, (long) (e + 1) * n));
    }

    /** Prefill (T = S = 2048) and decode (T = 1, S = 4096) attention, Qwen3-30B-A3B heads: Hq 32, Hkv 4, D 128. */
    private static void attention(CudaBackend gpu, double copyGBs) {
        SplittableRandom r = new SplittableRandom(4);
        int hq = 32;
        int hkv = 4;
        int d = 128;
        for (int[] ts : new int[][]{{2048, 2048}, {1, 4096}, {1, 32768}}) {
            int t = ts[0];
            int s = ts[1];
            Tensor q = randomF32(gpu, r, (long) t * hq, d).reshape(t, hq, d);
            Tensor k = randomF32(gpu, r, (long) s * hkv, d).reshape(s, hkv, d);
            Tensor v = randomF32(gpu, r, (long) s * hkv, d).reshape(s, hkv, d);
            Tensor o = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hq, d);
            org.orbitrl.kernels.AttentionSpec spec = org.orbitrl.kernels.AttentionSpec.causal(d);
            double ms = timeMs(gpu, 5, () -> gpu.attention(q, k, v, o, s - t, spec));
            if (t == 1) {
                double gbs = (2.0 * s * hkv * d * 4) / (ms * 1e6);
                row(String.format("attention decode S=%d Hq=%d Hkv=%d D=%d (%.1f us)", s, hq, hkv, d, ms * 1e3),
                        String.format("%.0f GB/s of K+V", gbs), String.format("copy %.0f GB/s", copyGBs), gbs / copyGBs);
            } else {
                double tflops = 4.0 * hq * d * ((double) t * (t + 1) / 2) / (ms * 1e9);
                row(String.format("attention prefill T=S=%d Hq=%d Hkv=%d D=%d (%.2f ms)", t, hq, hkv, d, ms),
                        String.format("%.1f TFLOP/s", tflops), "67 TFLOP/s f32 datasheet", tflops / 67);
            }
            gpu.free(q);
            gpu.free(k);
            gpu.free(v);
            gpu.free(o);
        }
    }
}
