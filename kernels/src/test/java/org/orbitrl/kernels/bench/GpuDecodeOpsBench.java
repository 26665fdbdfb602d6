package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.MoeRouting;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Decode-path kernels on the GPU, each against a limit measured in the same run (device copy
 * bandwidth, read + written bytes over time):
 * <ul>
 *   <li>fused dequantize-GEMV ({@code gemvQuantized}) for INT4 g32 sym/asym, MXFP4, NVFP4 at model
 *       shapes, M = 1, 8, 16, f32 and bf16 x; dense bf16 GEMV ({@code matmul}) incl. a 151936-row
 *       lm_head: effective GB/s (weights + x + y) from CUDA-graph replays rotating over more weight
 *       copies than fit in L2 (and, at one row, the same product over one weight the L2 keeps);</li>
 *   <li>one Qwen3-30B-A3B MoE layer (128 INT4 experts, top-8) at 1, 8, 64, 256 tokens: device
 *       routing + grouped gate/up/down + SwiGLU, against the bytes of the distinct experts (above one
 *       token also with the tensor-core path off: the fused GEMV);</li>
 *   <li>paged decode attention against the bytes of K and V (B = 1, 8, 64, 256; calls rotating over
 *       copies of the cache until 128 MB, more than L2, are read; at S = 512 and B = 64, 256 also with
 *       {@code -Dorbit.cuda.pagedDecode=heads4} and {@code =old}, the per-warp kernel); causal
 *       prefill attention in TFLOP/s.</li>
 *   <li>{@code splits}: decode attention of 8, 64 and 256 sequences over its key splits;</li>
 *   <li>{@code latent}: decode attention over a latent paged cache (DeepSeek-V3's and Kimi-K2's: one bf16 key head of
 *       576 channels a token, the values its first 512; 64 and 128 query heads) against the bytes of the keys, from
 *       graph replays rotating over copies of the cache past L2; at B = 1 and 8 also the gathered form it replaces
 *       ({@code -Dorbit.cuda.pagedMla=off}, each sequence's keys gathered and attended to in turn, timed eagerly);</li>
 *   <li>{@code lowrank}: an attention block's projections with their LoRA terms at 32 and 64 rows, fused
 *       ({@code matmulLowRank}) against the unfused steps.</li>
 *   <li>{@code qkv}: a one-token decode step's attention products at Qwen3-30B-A3B's widths (q 4096, k and v 512 rows
 *       over 2048; o 2048 over 4096), in the forms a step may take them: q, k and v with the input norm folded in
 *       ({@code rmsNormMatmulShared}), the three after a separate norm ({@code matmulShared}), one stacked 5120-row
 *       product, and o, each over weight copies rotated past L2 and over one copy the L2 keeps.</li>
 * </ul>
 * Usage: {@code GpuDecodeOpsBench [OUT_DIR [PARTS]]}, PARTS a comma list of {@code gemv}, {@code moe},
 * {@code attention}, {@code splits}, {@code lowrank}, {@code qkv}, {@code latent} ({@code gemv,moe,attention} by default); prints a table and
 * writes {@code decode-ops.md}.
 */
public final class GpuDecodeOpsBench {
    private static final GpuBench TABLE = new GpuBench(72, 20, 22);

    private GpuDecodeOpsBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("GpuDecodeOpsBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path out = args.length > 0 ? Path.of(args[0]) : null;
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device());
            double copy = TABLE.copyBandwidthRow(gpu);
            List<String> parts = Arrays.asList((args.length > 1 ? args[1] : "gemv,moe,attention").split(","));
            if (parts.contains("gemv")) {
                gemvs(gpu, copy);
            }
            if (parts.contains("moe")) {
                moeLayer(gpu, copy);
            }
            if (parts.contains("lowrank")) {
                lowRank(gpu, copy);
            }
            if (parts.contains("qkv")) {
                attentionProducts(gpu, copy);
            }
            if (parts.contains("splits")) {
                pagedSplits(gpu, copy);
            }
            if (parts.contains("attention")) {
                attention(gpu, copy);
            }
            if (parts.contains("latent")) {
                latent(gpu, copy);
            }
            TABLE.write("Decode kernels on " + gpu.device(), out, "decode-ops.md");
        }
    }

    private static void row(String name, String figure, String against, double ratio) {
        TABLE.row(name, figure, against, ratio);
    }

    private static Tensor f32(CudaBackend gpu, SplittableRandom r, DType dt, long rows, long cols) {
        return CudaBenchData.randomDevice(gpu, r, dt, rows, cols);
    }

    private static QuantizedTensor quantized(String format, SplittableRandom r, int n, int k) {
        if (format.equals("int4-g32")) {
            return CudaBenchData.randomInt4(r, n, k);
        }
        float[] v = new float[n * k];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) ((r.nextDouble() * 2 - 1) * 0.05);
        }
        return QuantFormats.byName(format).quantize(Tensor.of(v, n, k));
    }

    private static void attentionProducts(CudaBackend gpu, double copy) {
        SplittableRandom r = new SplittableRandom(19);
        int h = 2048;
        int[] rows = {4096, 512, 512};
        Tensor x = f32(gpu, r, DType.F32, 1, h);
        Tensor nw = f32(gpu, r, DType.BF16, 1, h).reshape(h);
        Tensor xo = f32(gpu, r, DType.F32, 1, 4096);
        long qkvBytes = 5120L * h * 2;
        int copies = (int) Math.max(2, (512L << 20) / qkvBytes);
        Tensor[][] ws = new Tensor[copies][3];
        Tensor[] stacked = new Tensor[copies];
        Tensor[] os = new Tensor[copies];
        for (int c = 0; c < copies; c++) {
            for (int i = 0; i < 3; i++) {
                ws[c][i] = f32(gpu, r, DType.BF16, rows[i], h);
            }
            stacked[c] = f32(gpu, r, DType.BF16, 5120, h);
            os[c] = f32(gpu, r, DType.BF16, h, 4096);
        }
        Tensor[] ys = new Tensor[3];
        for (int i = 0; i < 3; i++) {
            ys[i] = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1, rows[i]);
        }
        Tensor y5 = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1, 5120);
        Tensor yo = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1, h);
        for (boolean hot : new boolean[]{false, true}) {
            String where = hot ? ", one copy in L2" : "";
            double ms = GpuBench.perCopyMs(gpu, 7, copies, c -> {
                if (!gpu.rmsNormMatmulShared(x, nw, 1e-6f, ws[hot ? 0 : c], ys)) {
                    throw new IllegalStateException("no folded norm for q, k and v at one row");
                }
            });
            TABLE.bandwidthRow(String.format("q,k,v 5120x2048 M=1, norm folded%s (%.2f us)", where, ms * 1e3), qkvBytes / (ms * 1e6), copy);
            ms = GpuBench.perCopyMs(gpu, 7, copies, c -> gpu.matmulShared(x, ws[hot ? 0 : c], ys));
            TABLE.bandwidthRow(String.format("q,k,v 5120x2048 M=1, three products%s (%.2f us)", where, ms * 1e3), qkvBytes / (ms * 1e6), copy);
            ms = GpuBench.perCopyMs(gpu, 7, copies, c -> gpu.matmul(x, stacked[hot ? 0 : c], y5));
            TABLE.bandwidthRow(String.format("q,k,v stacked 5120x2048 M=1%s (%.2f us)", where, ms * 1e3), qkvBytes / (ms * 1e6), copy);
            ms = GpuBench.perCopyMs(gpu, 7, copies, c -> gpu.matmul(xo, os[hot ? 0 : c], yo));
            TABLE.bandwidthRow(String.format("o 2048x4096 M=1%s (%.2f us)", where, ms * 1e3), 2048L * 4096 * 2 / (ms * 1e6), copy);
        }
        for (int c = 0; c < copies; c++) {
            for (Tensor w : ws[c]) {
                gpu.free(w);
            }
            gpu.free(stacked[c]);
            gpu.free(os[c]);
        }
    }

    private static void gemvs(CudaBackend gpu, double copy) {
        SplittableRandom r = new SplittableRandom(11);
        int[][] shapes = {{768, 2048}, {2048, 768}, {4096, 2048}, {8192, 8192}};
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            for (int[] s : shapes) {
                if (!format.equals("int4-g32") && s[0] != 4096) {
                    continue; // every format at one shape, INT4 at all
                }
                QuantizedTensor proto = quantized(format, r, s[0], s[1]);
                int copies = (int) Math.max(4, (512L << 20) / proto.byteSize());
                QuantizedTensor[] ws = new QuantizedTensor[copies];
                for (int i = 0; i < copies; i++) {
                    ws[i] = gpu.toDevice(proto);
                }
                for (int m : new int[]{1, 8, 16}) {
                    for (DType xt : new DType[]{DType.F32, DType.BF16}) {
                        if (xt == DType.BF16 && m == 8) {
                            continue;
                        }
                        Tensor x = f32(gpu, r, xt, m, s[1]);
                        Tensor y = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, s[0]);
                        double ms = GpuBench.perCopyMs(gpu, 7, ws.length, c -> gpu.gemvQuantized(x, ws[c], y));
                        long bytes = proto.byteSize() + x.byteSize() + y.byteSize();
                        double gbs = bytes / (ms * 1e6);
                        TABLE.bandwidthRow(String.format("%s GEMV %dx%d M=%d x %s (%.2f us)", format, s[0], s[1], m, xt, ms * 1e3), gbs, copy);
                        gpu.free(x);
                        gpu.free(y);
                    }
                }
                for (QuantizedTensor w : ws) {
                    gpu.free(w);
                }
            }
        }
        for (int[] s : new int[][]{{4096, 2048}, {151936, 2048}}) { // q projection, lm_head
            Tensor w0 = f32(gpu, r, DType.BF16, s[0], s[1]);
            int copies = (int) Math.max(1, (512L << 20) / w0.byteSize());
            Tensor[] ws = new Tensor[copies];
            ws[0] = w0;
            for (int i = 1; i < copies; i++) {
                ws[i] = gpu.allocator().allocate(MemoryCategory.BASE_WEIGHTS, DType.BF16, s[0], s[1]);
                gpu.copy(w0, ws[i]);
            }
            for (int m : new int[]{1, 8, 16}) {
                Tensor x = f32(gpu, r, DType.F32, m, s[1]);
                Tensor y = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, s[0]);
                double ms = GpuBench.perCopyMs(gpu, 7, ws.length, c -> gpu.matmul(x, ws[c], y));
                long bytes = w0.byteSize() + x.byteSize() + y.byteSize();
                double gbs = bytes / (ms * 1e6);
                TABLE.bandwidthRow(String.format("bf16 GEMV %dx%d M=%d (%.2f us)", s[0], s[1], m, ms * 1e3), gbs, copy);
                if (m == 1 && w0.byteSize() < (32L << 20)) { // the same product over one weight, which stays in the L2
                    double hot = GpuBench.graphMs(gpu, 7, () -> {
                        for (int i = 0; i < ws.length; i++) {
                            gpu.matmul(x, w0, y);
                        }
                    }) / copies;
                    TABLE.bandwidthRow(String.format("bf16 GEMV %dx%d M=1, one weight in L2 (%.2f us)", s[0], s[1], hot * 1e3),
                            bytes / (hot * 1e6), copy);
                }
                gpu.free(x);
                gpu.free(y);
            }
            for (Tensor w : ws) {
                gpu.free(w);
            }
        }
    }

    /**
     * An attention block's projections with LoRA r=32 at decode (Qwen3-30B-A3B: q, k, v 4096/512/512 x 2048 and o 2048 x
     * 4096, bf16; the LoRA factors f32), M = 32 and 64: {@code matmulLowRank} (the A products and x in bf16 in one
     * launch, the base products and B terms on tensor cores in another) against the unfused steps (x in bf16, a cuBLAS
     * product a weight, the A products in one launch, a B product a weight), over weight copies rotated past L2. Both
     * blocks take the fused path here; by default the model's o projection (2048 rows) stays below
     * {@code orbit.cuda.dmmaMinRows}.
     */
    private static void lowRank(CudaBackend gpu, double copy) {
        String bound = System.getProperty("orbit.cuda.dmmaMinRows");
        System.setProperty("orbit.cuda.dmmaMinRows", "128"); // both blocks on the fused path, o's below its default bound too
        try {
            lowRankBlocks(gpu, copy);
        } finally {
            restore("orbit.cuda.dmmaMinRows", bound);
        }
    }

    private static void lowRankBlocks(CudaBackend gpu, double copy) {
        SplittableRandom r = new SplittableRandom(13);
        int[][][] blocks = {{{4096, 2048}, {512, 2048}, {512, 2048}}, {{2048, 4096}}};
        String[] names = {"q, k, v", "o"};
        int rank = 32;
        for (int bi = 0; bi < blocks.length; bi++) {
            int[][] shapes = blocks[bi];
            int count = shapes.length;
            int k = shapes[0][1];
            long bytes = 0;
            for (int[] s : shapes) {
                bytes += 2L * s[0] * k + 4L * rank * (k + s[0]);
            }
            int copies = (int) Math.max(2, (256L << 20) / bytes);
            Tensor[][] ws = new Tensor[copies][count];
            org.orbitrl.kernels.Backend.LowRankTerm[][] terms = new org.orbitrl.kernels.Backend.LowRankTerm[copies][count];
            for (int c = 0; c < copies; c++) {
                for (int i = 0; i < count; i++) {
                    ws[c][i] = f32(gpu, r, DType.BF16, shapes[i][0], k);
                    terms[c][i] = new org.orbitrl.kernels.Backend.LowRankTerm(f32(gpu, r, DType.F32, rank, k),
                            f32(gpu, r, DType.F32, shapes[i][0], rank), 2f);
                }
            }
            for (int m : new int[]{32, 64}) {
                Tensor x = f32(gpu, r, DType.F32, m, k);
                Tensor[] ys = new Tensor[count];
                Tensor[] los = new Tensor[count];
                for (int i = 0; i < count; i++) {
                    ys[i] = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, shapes[i][0]);
                    los[i] = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, rank);
                }
                double fused = GpuBench.perCopyMs(gpu, 7, copies, c -> {
                    if (!gpu.matmulLowRank(x, ws[c], terms[c], ys)) {
                        throw new IllegalStateException("matmulLowRank declined " + m + " rows");
                    }
                });
                double unfused = GpuBench.perCopyMs(gpu, 7, copies, c -> {
                    gpu.matmulShared(x, ws[c], ys);
                    Tensor[] as = new Tensor[count];
                    for (int i = 0; i < count; i++) {
                        as[i] = terms[c][i].a();
                    }
                    gpu.matmulShared(x, as, los);
                    for (int i = 0; i < count; i++) {
                        gpu.matmulAxpy(los[i], terms[c][i].b(), 2f, ys[i]);
                    }
                });
                TABLE.bandwidthRow(String.format("%s + LoRA M=%d fused (%.2f us)", names[bi], m, fused * 1e3), bytes / (fused * 1e6), copy);
                TABLE.bandwidthRow(String.format("%s + LoRA M=%d unfused (%.2f us)", names[bi], m, unfused * 1e3), bytes / (unfused * 1e6),
                        copy);
                row(String.format("%s M=%d fused / unfused time", names[bi], m), String.format("%.3f", fused / unfused), "1.0",
                        fused / unfused);
                gpu.free(x);
                for (int i = 0; i < count; i++) {
                    gpu.free(ys[i]);
                    gpu.free(los[i]);
                }
            }
            for (int c = 0; c < copies; c++) {
                for (int i = 0; i < count; i++) {
                    gpu.free(ws[c][i]);
                    gpu.free(terms[c][i].a());
                    gpu.free(terms[c][i].b());
                }
            }
        }
    }

    /** One Qwen3-30B-A3B routed-expert layer at decode, device routing and grouped GEMVs, from a graph. */
    private static void moeLayer(CudaBackend gpu, double copy) {
        int e = 128;
        int hidden = 2048;
        int inter = 768;
        int topk = 8;
        SplittableRandom r = new SplittableRandom(12);
        CudaBenchData.StackedExperts experts = CudaBenchData.StackedExperts.random(gpu, r, e, hidden, inter);
        for (int m : new int[]{1, 8, 64, 256}) {
            CudaBenchData.MoeStep st = CudaBenchData.MoeStep.random(gpu, r, m, topk, e, hidden, inter);
            long bytes = st.expertBytes(experts);
            try (MoeRouting routing = gpu.moe().moeRouting(e, m * topk)) {
                Runnable layer = () -> {
                    gpu.moe().moeRoute(st.dIds(), routing);
                    gpu.moe().moeMatmulGrouped(st.x(), experts.gate(), routing, st.g());
                    gpu.moe().moeMatmulGrouped(st.x(), experts.up(), routing, st.u());
                    gpu.swiglu(st.g(), st.u(), st.g());
                    gpu.moe().moeMatmulGrouped(st.g(), experts.down(), routing, st.y());
                };
                boolean fusedBefore = gpu.moe().moeFusedDecode();
                gpu.moe().moeFusedDecode(false);
                double ms = GpuBench.graphMs(gpu, 15, layer);
                TABLE.bandwidthRow(String.format("MoE layer decode %d tokens (%d experts, %.1f MB), route + grouped (%.1f us)",
                        m, st.distinct().size(), bytes / 1e6, ms * 1e3), bytes / (ms * 1e6), copy);
                if (m > 1) { // the fused launch shapes: the same three products, then gate and up in one launch
                    gpu.moe().moeFusedDecode(true);
                    double msShapes = GpuBench.graphMs(gpu, 15, layer);
                    TABLE.bandwidthRow(String.format("MoE layer decode %d tokens, grouped, fused shapes (refill after, short-K down) (%.1f us)",
                            m, msShapes * 1e3), bytes / (msShapes * 1e6), copy);
                    Tensor act = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.BF16, (long) m * topk, inter); // [pairs, inter]
                    Runnable fusedLayer = () -> {
                        gpu.moe().moeRoute(st.dIds(), routing);
                        gpu.moe().moeSwigluGrouped(st.x(), experts.gate(), experts.up(), routing, act);
                        gpu.moe().moeMatmulGrouped(act, experts.down(), routing, st.y());
                    };
                    double msFused = GpuBench.graphMs(gpu, 15, fusedLayer);
                    TABLE.bandwidthRow(String.format("MoE layer decode %d tokens, gate+up+SwiGLU one launch, bf16 act (%.1f us, %.2fx old)",
                            m, msFused * 1e3, ms / msFused), bytes / (msFused * 1e6), copy);
                    products(gpu, st, experts, routing, act, m, bytes / 3.0, copy);
                    gpu.free(act);
                }
                gpu.moe().moeFusedDecode(fusedBefore);
                if (m > 1) { // the same layer with every batch on the fused GEMV, as before the tensor-core path
                    gpu.moe().moeGroupedTensorCores(false);
                    double msGemv = GpuBench.graphMs(gpu, 15, layer);
                    gpu.moe().moeGroupedTensorCores(true);
                    TABLE.bandwidthRow(String.format("MoE layer decode %d tokens, grouped GEMV, no tensor cores (%.1f us)", m, msGemv * 1e3),
                            bytes / (msGemv * 1e6), copy);
                }
                if (m == 1) {
                    double ms1 = GpuBench.graphMs(gpu, 15, () -> st.perPair(gpu, experts));
                    TABLE.bandwidthRow(String.format("MoE layer decode 1 token, per-pair GEMV, no routing (%.1f us)", ms1 * 1e3),
                            bytes / (ms1 * 1e6), copy);
                }
            }
            st.free(gpu);
        }
        experts.free(gpu);
    }

    /** Each expert product of the layer alone (routing already filled), old and fused shapes: where the layer's time goes. */
    private static void products(CudaBackend gpu, CudaBenchData.MoeStep st, CudaBenchData.StackedExperts experts, MoeRouting routing,
                                 Tensor act, int m, double matrixBytes, double copy) {
        String shortKey = "orbit.cuda.moeShortK";
        String stagesKey = "orbit.cuda.moeGateUpStages";
        Runnable gate = () -> gpu.moe().moeMatmulGrouped(st.x(), experts.gate(), routing, st.g());
        Runnable gateUp = () -> gpu.moe().moeSwigluGrouped(st.x(), experts.gate(), experts.up(), routing, act);
        Runnable down = () -> gpu.moe().moeMatmulGrouped(st.g(), experts.down(), routing, st.y());
        Runnable downBf16 = () -> gpu.moe().moeMatmulGrouped(act, experts.down(), routing, st.y());
        // {name, fused, short K, gate-up stages, matrices}
        Object[][] rows = {
                {"gate alone, old", false, "3", "auto", 1, gate},
                {"gate alone, refill after", true, "3", "auto", 1, gate},
                {"gate+up+SwiGLU fused, 4 stages", true, "3", "4", 2, gateUp},
                {"gate+up+SwiGLU fused, 2 stages (8 rows: 3 blocks an SM; else 16-row chunks)", true, "3", "2", 2, gateUp},
                {"gate+up+SwiGLU fused, auto (8 rows: 4 stages; else 2 stages, 16-row chunks)", true, "3", "auto", 2, gateUp},
                {"down alone, old", false, "3", "auto", 1, down},
                {"down alone, refill after", true, "off", "auto", 1, down},
                {"down alone, short K, 3 blocks an SM", true, "3", "auto", 1, down},
                {"down alone, short K, 4 blocks an SM", true, "4", "auto", 1, down},
                {"down alone, short K, 3 blocks, bf16 x", true, "3", "auto", 1, downBf16},
                {"down alone, short K, 4 blocks, bf16 x", true, "4", "auto", 1, downBf16}};
        String shortBefore = System.getProperty(shortKey);
        String stagesBefore = System.getProperty(stagesKey);
        try {
            for (Object[] row : rows) {
                gpu.moe().moeFusedDecode((Boolean) row[1]);
                System.setProperty(shortKey, (String) row[2]);
                System.setProperty(stagesKey, (String) row[3]);
                double ms = GpuBench.graphMs(gpu, 15, (Runnable) row[5]);
                TABLE.bandwidthRow(String.format("MoE %d tokens: %s (%.1f us)", m, row[0], ms * 1e3), (Integer) row[4] * matrixBytes / (ms * 1e6),
                        copy);
            }
        } finally {
            restore(shortKey, shortBefore);
            restore(stagesKey, stagesBefore);
        }
    }

    private static void restore(String key, String value) {
        if (value == null) {
            System.clearProperty(key);
        } else {
            System.setProperty(key, value);
        }
    }

    /** A sibling backend (sharing {@code gpu}'s memory) made with {@code -Dorbit.cuda.pagedDecode=choice}. */
    private static CudaBackend pagedDecodeSibling(CudaBackend gpu, String choice) {
        String key = "orbit.cuda.pagedDecode";
        String before = System.getProperty(key);
        System.setProperty(key, choice);
        try {
            return new CudaBackend(gpu);
        } finally {
            if (before == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, before);
            }
        }
    }

    /**
     * The paged decode of a decode step's batch as the model meets it (8, 64 and 256 sequences of 524 keys in tables of 64
     * blocks of 16: the power-of-two capacity of 1024 keys a captured step is sized for), f32 and bf16 caches, over the key splits
     * ({@code -Dorbit.cuda.pagedSplits}) against the default choice.
     */
    private static void pagedSplits(CudaBackend gpu, double copy) {
        SplittableRandom r = new SplittableRandom(14);
        int hq = 32;
        int hkv = 4;
        int d = 128;
        int bs = 16;
        int len = 524;
        int width = 64;
        for (int b : new int[]{8, 64, 256})
        for (DType dtype : new DType[]{DType.F32, DType.BF16}) {
            long kvBytes = 2L * b * len * hkv * d * dtype.bytes();
            int copies = (int) Math.max(1, ((128L << 20) + kvBytes - 1) / kvBytes);
            Tensor kc = f32(gpu, r, dtype, (long) copies * b * width * bs, (long) hkv * d);
            Tensor vc = f32(gpu, r, dtype, (long) copies * b * width * bs, (long) hkv * d);
            Tensor q = f32(gpu, r, DType.F32, (long) b * hq, d).reshape(b, hq, d);
            Tensor o = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, b, hq, d);
            Tensor[] dt = new Tensor[copies];
            for (int k = 0; k < copies; k++) {
                int[] tables = new int[b * width];
                for (int i = 0; i < tables.length; i++) {
                    tables[i] = k * tables.length + i;
                }
                dt[k] = gpu.toDevice(Tensor.ofInts(tables, b, width), MemoryCategory.ACTIVATIONS);
            }
            int[] lens = new int[b];
            Arrays.fill(lens, len);
            Tensor dl = gpu.toDevice(Tensor.ofInts(lens, b), MemoryCategory.ACTIVATIONS);
            AttentionSpec spec = AttentionSpec.causal(d);
            Tensor kk = kc;
            Tensor vv = vc;
            for (String splits : new String[]{null, "1", "2", "3", "4", "6", "8", "12", "16"}) {
                if (splits == null) {
                    System.clearProperty("orbit.cuda.pagedSplits");
                } else {
                    System.setProperty("orbit.cuda.pagedSplits", splits);
                }
                gpu.synchronize();
                double ms = GpuBench.perCopyMs(gpu, 10, dt.length, c -> gpu.pagedDecodeAttention(q, kk, vv, dt[c], dl, bs, hkv, o, spec));
                double gbs = kvBytes / (ms * 1e6);
                row(String.format("paged decode B=%d S=%d of %d, %s cache, %s (%.1f us)", b, len, width * bs,
                                dtype.name().toLowerCase(java.util.Locale.ROOT), splits == null ? "default splits" : splits + " splits", ms * 1e3),
                        String.format("%.0f GB/s of K+V", gbs), String.format("copy %.0f GB/s", copy), gbs / copy);
            }
            System.clearProperty("orbit.cuda.pagedSplits");
            for (Tensor t : new Tensor[]{kc, vc, q, o, dl}) {
                gpu.free(t);
            }
            for (Tensor t : dt) {
                gpu.free(t);
            }
        }
    }

    private static void latent(CudaBackend gpu, double copy) {
        SplittableRandom r = new SplittableRandom(17);
        int d = 576;
        int dv = 512;
        int bs = 16;
        for (int hq : new int[]{64, 128}) {                                   // Kimi-K2.x, DeepSeek-V3
            for (int[] c : new int[][]{{1, 4096}, {8, 1024}, {64, 1024}, {64, 4096}, {256, 1024}}) { // sequences, keys each
                int b = c[0];
                int len = c[1];
                int maxBlocks = len / bs;
                long keyBytes = 2L * b * len * d;
                int copies = (int) Math.max(1, ((128L << 20) + keyBytes - 1) / keyBytes);
                int[] lens = new int[b];
                Arrays.fill(lens, len);
                Tensor kc = f32(gpu, r, DType.BF16, (long) copies * b * len, d);
                Tensor q = f32(gpu, r, DType.F32, (long) b * hq, d).reshape(b, hq, d);
                Tensor o = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, b, hq, dv);
                Tensor[] dt = new Tensor[copies];
                for (int k = 0; k < copies; k++) {
                    int[] tables = new int[b * maxBlocks];
                    for (int i = 0; i < tables.length; i++) {
                        tables[i] = k * tables.length + i;
                    }
                    dt[k] = gpu.toDevice(Tensor.ofInts(tables, b, maxBlocks), MemoryCategory.ACTIVATIONS);
                }
                Tensor dl = gpu.toDevice(Tensor.ofInts(lens, b), MemoryCategory.ACTIVATIONS);
                AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(192)), 0, null);
                double ms = GpuBench.perCopyMs(gpu, 10, dt.length, i -> gpu.pagedDecodeAttention(q, kc, null, dt[i], dl, bs, 1, o, spec));
                double gbs = keyBytes / (ms * 1e6);
                double tflops = 2.0 * b * hq * len * (d + dv) / (ms * 1e9);
                row(String.format("latent decode attention B=%d S=%d Hq=%d (%.1f us, %.0f TFLOP/s)", b, len, hq, ms * 1e3, tflops),
                        String.format("%.0f GB/s of keys", gbs), String.format("copy %.0f GB/s", copy), gbs / copy);
                if (b <= 8) {
                    double[] gathered = new double[1];
                    String key = "orbit.cuda.pagedMla";
                    System.setProperty(key, "off");
                    try {
                        gathered[0] = GpuBench.timeMs(gpu, 5, () -> gpu.pagedDecodeAttention(q, kc, null, dt[0], dl, bs, 1, o, spec));
                    } finally {
                        System.clearProperty(key);
                    }
                    row(String.format("latent decode attention B=%d S=%d Hq=%d, gathered (%.1f us)", b, len, hq, gathered[0] * 1e3),
                            String.format("%.2fx the kernel's time", gathered[0] / ms), "the kernel", ms / gathered[0]);
                }
                for (Tensor t : new Tensor[]{kc, q, o, dl}) {
                    gpu.free(t);
                }
                for (Tensor t : dt) {
                    gpu.free(t);
                }
            }
        }
    }

    private static void attention(CudaBackend gpu, double copy) {
        SplittableRandom r = new SplittableRandom(13);
        int hq = 32;
        int hkv = 4;
        int d = 128;
        int bs = 16;
        String[][] variants = {{"heads4", "tiled, 4 heads a warp"}, {"old", "old per-warp kernel"}};
        CudaBackend[] siblings = {pagedDecodeSibling(gpu, variants[0][0]), pagedDecodeSibling(gpu, variants[1][0])};
        for (int[] c : new int[][]{{1, 4096}, {8, 512}, {64, 512}, {64, 1024}, {256, 512}}) { // sequences, keys each
            int b = c[0];
            int len = c[1];
            int maxBlocks = len / bs;
            long kvBytes = 2L * b * len * hkv * d * 4;
            // calls rotate over copies of the cache (their own blocks of one pool) until 128 MB are read: more than L2
            int copies = (int) Math.max(1, ((128L << 20) + kvBytes - 1) / kvBytes);
            int[] lens = new int[b];
            Arrays.fill(lens, len);
            Tensor kc = f32(gpu, r, DType.F32, (long) copies * b * len, (long) hkv * d);
            Tensor vc = f32(gpu, r, DType.F32, (long) copies * b * len, (long) hkv * d);
            Tensor q = f32(gpu, r, DType.F32, (long) b * hq, d).reshape(b, hq, d);
            Tensor o = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, b, hq, d);
            Tensor[] dt = new Tensor[copies];
            for (int k = 0; k < copies; k++) {
                int[] tables = new int[b * maxBlocks];
                for (int i = 0; i < tables.length; i++) {
                    tables[i] = k * tables.length + i;
                }
                dt[k] = gpu.toDevice(Tensor.ofInts(tables, b, maxBlocks), MemoryCategory.ACTIVATIONS);
            }
            Tensor dl = gpu.toDevice(Tensor.ofInts(lens, b), MemoryCategory.ACTIVATIONS);
            AttentionSpec spec = AttentionSpec.causal(d);
            double ms = GpuBench.perCopyMs(gpu, 10, dt.length, i -> gpu.pagedDecodeAttention(q, kc, vc, dt[i], dl, bs, hkv, o, spec));
            double gbs = kvBytes / (ms * 1e6);
            row(String.format("paged decode attention B=%d S=%d Hq=%d Hkv=%d D=%d (%.1f us)", b, len, hq, hkv, d, ms * 1e3),
                    String.format("%.0f GB/s of K+V", gbs), String.format("copy %.0f GB/s", copy), gbs / copy);
            for (int k = 0; k < siblings.length && len == 512 && b >= 64; k++) { // the kernels behind -Dorbit.cuda.pagedDecode
                CudaBackend other = siblings[k];
                gpu.synchronize();
                double msOther = GpuBench.perCopyMs(other, 10, dt.length, i -> other.pagedDecodeAttention(q, kc, vc, dt[i], dl, bs, hkv, o, spec));
                double gbsOther = kvBytes / (msOther * 1e6);
                row(String.format("paged decode attention B=%d S=%d, %s (%.1f us)", b, len, variants[k][1], msOther * 1e3),
                        String.format("%.0f GB/s of K+V", gbsOther), String.format("copy %.0f GB/s", copy), gbsOther / copy);
            }
            for (Tensor t : new Tensor[]{kc, vc, q, o, dl}) {
                gpu.free(t);
            }
            for (Tensor t : dt) {
                gpu.free(t);
            }
        }
        for (CudaBackend other : siblings) {
            other.close();
        }
        int t = 2048;
        Tensor q = f32(gpu, r, DType.F32, (long) t * hq, d).reshape(t, hq, d);
        Tensor k = f32(gpu, r, DType.F32, (long) t * hkv, d).reshape(t, hkv, d);
        Tensor v = f32(gpu, r, DType.F32, (long) t * hkv, d).reshape(t, hkv, d);
        Tensor o = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hq, d);
        AttentionSpec spec = AttentionSpec.causal(d);
        double ms = GpuBench.timeMs(gpu, 5, () -> gpu.attention(q, k, v, o, 0, spec));
        double tflops = 4.0 * hq * d * ((double) t * (t + 1) / 2) / (ms * 1e9);
        row(String.format("causal prefill attention T=S=%d Hq=%d Hkv=%d D=%d (%.3f ms)", t, hq, hkv, d, ms),
                String.format("%.1f TFLOP/s", tflops), "67 TFLOP/s f32 datasheet", tflops / 67);
        for (Tensor x : new Tensor[]{q, k, v, o}) {
            gpu.free(x);
        }
    }
}
