package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.NotCapturableException;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.EnumMap;
import java.util.HashMap;
import java.util.Map;

/**
 * The routed experts of a decode step per (token, expert) pair ({@link org.orbitrl.kernels.Backend#moeExpertMatmulPairs}),
 * for experts held as matrices of their own (a model's loaded experts, LoRA factors): quantized experts
 * through {@code qgemv.cu}'s table mode, f32 and bf16 ones through {@code moe_pairs.cu}. The expert of a
 * pair comes from ids on the device and its matrix from a table of the experts' addresses on the device,
 * so a call never waits for the host and can be captured in a graph.
 *
 * <p>Up to {@value #DIRECT_PAIRS} pairs a call each pair's block reads its expert's matrix (a pair's launch row); above
 * that the pairs are first grouped by expert on the device ({@code moe_route}) and each active expert's blocks take its
 * pairs eight at a time, their x rows staged together and each row of the expert's matrix read once for them all (a row
 * a warp for a LoRA's A, a thread a row for its B), so an expert's matrix comes from DRAM once a call whatever the batch.
 * The grouping is kept for the next calls with the same ids tensor (a layer's gate, up, down and their LoRA factors group
 * their pairs once). From {@link #STACKED_PAIRS} pairs, INT4 and MXFP4 experts that lie back to back in memory
 * ({@link ExpertWeights#stacked}, how a model's experts are placed on a device) take the tensor-core grouped kernel over
 * their stack instead ({@link CudaMoeMma}).
 *
 * <p>Tables: one per distinct set of expert matrices ({@link ExpertTables}: made at its first use, outside a capture, and
 * kept for the backend's life). The same holds for the routing buffers (one per expert count, 256 KiB at 128 experts),
 * accounted as {@link MemoryCategory#RUNTIME_RESERVE}.
 */
final class CudaMoePairs {
    private static final int DENSE_ROWS_PER_BLOCK = 32; // MP_WARPS * MP_R in moe_pairs.cu
    private static final int DENSE_WARPS = 8;           // MP_WARPS: the rows of a moe_pairs_dense_r1 block
    /** f32 experts of at most this many rows (a LoRA's A) take {@code moe_pairs_dense_r1}. */
    private static final int LONE_ROWS_MAX = 64;
    private static final int DENSE_THREADS = 256;
    /** Pairs of an expert the grouped dense kernels take at once (MR_PAIRS in moe_pairs.cu; at most MA_ROWS there). */
    private static final int ROUTED_PAIRS = 8;
    /** K up to which the grouped dense products take a thread a row (MS_K), and that kernel's block (MS_THREADS). */
    private static final int SHORT_K = 64;
    private static final int SHORT_K_THREADS = 128;
    /**
     * The register-held rows of a LoRA's A (moe_routed_dense_a, and narrow_matmul_f32 for CudaMatmulOps): 16-byte pieces of a
     * row a pass (MA_PIECES in moe_pairs.cu), and the shared memory the staged x slices take at most (two blocks an SM).
     */
    static final int LONG_K_PIECES = 512;
    private static final int LONG_K_SHARED = 64 * 1024;
    /**
     * {@code -Dorbit.cuda.routedPairs=single}: grouped full-precision products take an expert's pairs one at a time and
     * re-read its matrix for each (the kernel the eight-at-a-time ones replaced, kept as their reference).
     */
    private static final boolean SINGLE_PAIRS = "single".equals(System.getProperty("orbit.cuda.routedPairs"));
    /**
     * {@code -Dorbit.cuda.moeLoraA=fma}: the experts' LoRA A products grouped by expert on CUDA cores (f32 multiply-adds,
     * {@code moe_routed_dense_a}) instead of tensor cores in three TF32 products ({@code moe_routed_tcp_a}: about 2^-20 of
     * each product's magnitude from the f32 sums; a K that is not a multiple of 16 takes the CUDA cores either way);
     * {@code =tc}: the tensor-core kernels that hold their loads in registers ({@code moe_routed_tc_a}; the same bits as
     * the default's, which streams them through shared memory).
     */
    static final String LORA_A_PROPERTY = "orbit.cuda.moeLoraA";
    /**
     * {@value} ({@code on|off}, read at each call; off by default, not yet measured): a few pairs' LoRA A products (the
     * rows of {@code moe_pairs_dense_r1}, {@code moe_pairs_dense_r1x2}) take {@code moe_pairs_dense_r1_cp} and {@code
     * moe_pairs_dense_r1x2_cp} where x is 16-byte aligned: each block's row of x copied into shared memory by every
     * thread's asynchronous copies, issued before the expert id is read, so that their round trip overlaps the id's and
     * the expert table's; the plain kernels' SASS (nvcc 13.0, sm_90) stores each value of x right after its load, a round
     * trip for each of a thread's K / 256 values (8 at K 2048) after the id's and the table's. The same bits.
     */
    static final String PAIRS_COPIES_PROPERTY = "orbit.cuda.pairsCopies";
    /** Rows of W a block of the tensor-core LoRA A kernels takes (four n-tiles of 8). */
    private static final int TC_A_ROWS = 32;
    /** The shared-memory rings of {@code moe_routed_tcp_a}: MP_WARPS * TA_ST * TA_STF floats in moe_pairs.cu. */
    private static final int TC_A_RING_BYTES = 8 * 4 * 768 * 4;
    /**
     * {@code -Dorbit.cuda.moeSwigluPairs=off}: gate, up and the SwiGLU as separate calls, and down apart from its LoRA's B
     * ({@link #swiglu} and {@link #matmulLora} decline).
     */
    private static final boolean SWIGLU_PAIRS = !"off".equals(System.getProperty("orbit.cuda.moeSwigluPairs"));
    private static final int SHARED_DEFAULT = 48 * 1024;
    static final int MAX_SHARED = 227 * 1024;

    /** Pairs a call up to which each pair reads its expert's matrix; above, the pairs are grouped by expert on the device. */
    static final int DIRECT_PAIRS = 64;

    /**
     * Pairs a call from which INT4 and MXFP4 experts that lie back to back ({@link ExpertWeights#stacked}) take the tensor-core
     * grouped kernel ({@link CudaMoeOps#grouped}: x rounded to bf16, as training's expert products round it); below, and
     * for every other form, the pair kernels. {@code -Dorbit.cuda.moePairsStacked=N} moves the bound, {@code =off} keeps
     * the pair kernels.
     */
    static final int STACKED_PAIRS = stackedPairs(System.getProperty("orbit.cuda.moePairsStacked"));

    private final CudaContext ctx;
    private final CudaMoeOps grouped;
    private final CudaMoeDecodePairs decode;
    /** The device routing of a call above {@value #DIRECT_PAIRS} pairs, one per expert count, made outside a capture and kept. */
    private final Map<Integer, MoeRouting> routings = new HashMap<>();
    /** The ids tensor each routing was last filled from (compared by identity). */
    private final Map<Integer, Tensor> routedIds = new HashMap<>();
    private int routes;
    private final EnumMap<QuantLayout, Kernel> quantized = new EnumMap<>(QuantLayout.class);
    /** Grouped on the device: per layout, the kernels of row chunks 1, 4, 8 and 16. */
    private final EnumMap<QuantLayout, Map<Integer, Kernel>> routedQuantized = new EnumMap<>(QuantLayout.class);
    private final Kernel dense;
    private final Kernel denseR1;
    private final Kernel denseR1x2;         // the same for two sets (the gate's and the up's LoRA A) in one launch
    private final Kernel denseR1Copies;     // the two with x staged by asynchronous copies (PAIRS_COPIES_PROPERTY)
    private final Kernel denseR1x2Copies;
    private final Kernel routedDense;       // grouped on the device: 4 rows a warp
    private final Kernel routedDenseRow;    // a row a warp (few rows, long K: a LoRA's A in bf16)
    private final Kernel routedDenseLongK;  // a row a warp, its slice of K held in registers (a LoRA's A in f32)
    private final Kernel routedDenseLongK2; // the same for two LoRAs' A (gate's and up's) in one launch
    private final Kernel routedTcA;         // a LoRA's A on tensor cores (three TF32 products), K a multiple of 16
    private final Kernel routedTcA2;        // the same for two LoRAs' A in one launch
    private final Kernel routedTcpA;        // the same products, their loads through shared memory
    private final Kernel routedTcpA2;
    private final Kernel routedDenseShortK; // a thread a row (K at most SHORT_K: a LoRA's B)
    private final Kernel routedDenseSingle; // the reference: an expert's pairs one at a time
    private final ExpertTables tables;

    CudaMoePairs(CudaContext ctx, CudaMoeOps grouped) {
        this.ctx = ctx;
        this.grouped = grouped;
        this.tables = new ExpertTables(ctx);
        this.decode = new CudaMoeDecodePairs(ctx);
        for (QuantLayout l : QuantLayout.values()) {
            quantized.put(l, ctx.kernel("qgemv", "qgemv_" + l.kernelSuffix() + "_pairs_f32"));
            Map<Integer, Kernel> byChunk = new HashMap<>();
            for (int mt : new int[]{4, 8, 16}) {  // more pairs than active experts: at least 2 a block row (chunkFor(2) = 4)
                byChunk.put(mt, ctx.kernel("qgemv", "qgemv_" + l.kernelSuffix() + "_routed_m" + mt + "_f32"));
            }
            routedQuantized.put(l, byChunk);
        }
        this.dense = ctx.kernel("moe_pairs", "moe_pairs_dense");
        this.denseR1 = ctx.kernel("moe_pairs", "moe_pairs_dense_r1");
        this.denseR1x2 = ctx.kernel("moe_pairs", "moe_pairs_dense_r1x2");
        this.denseR1Copies = ctx.kernel("moe_pairs", "moe_pairs_dense_r1_cp");
        this.denseR1x2Copies = ctx.kernel("moe_pairs", "moe_pairs_dense_r1x2_cp");
        this.routedDense = ctx.kernel("moe_pairs", "moe_routed_dense_r4");
        this.routedDenseRow = ctx.kernel("moe_pairs", "moe_routed_dense_r1");
        this.routedDenseShortK = ctx.kernel("moe_pairs", "moe_routed_dense_k");
        this.routedDenseLongK = ctx.kernel("moe_pairs", "moe_routed_dense_a");
        this.routedDenseLongK2 = ctx.kernel("moe_pairs", "moe_routed_dense_a2");
        this.routedTcA = ctx.kernel("moe_pairs", "moe_routed_tc_a");
        this.routedTcA2 = ctx.kernel("moe_pairs", "moe_routed_tc_a2");
        this.routedTcpA = ctx.kernel("moe_pairs", "moe_routed_tcp_a");
        this.routedTcpA2 = ctx.kernel("moe_pairs", "moe_routed_tcp_a2");
        this.routedDenseSingle = ctx.kernel("moe_pairs", "moe_routed_dense");
    }

    /**
     * Whether the pair products take {@code w}: every held expert in one quantized format the kernels know, or full
     * precision of one dtype with rows short enough for the kernels' shared memory, at most {@value #MAX_ROUTED_EXPERTS}
     * experts (the device routing's limit), and at least one expert held.
     */
    boolean supports(ExpertWeights w) {
        if (w.experts() > MAX_ROUTED_EXPERTS || 4L * w.cols() > MAX_SHARED) {
            return false;
        }
        String format = null;
        DType dtype = null;
        boolean any = false;
        for (int e = 0; e < w.experts(); e++) {
            QuantizedTensor q = w.quantized(e);
            Tensor d = w.dense(e);
            if (q != null) {
                String f = q.format().name();
                if (dtype != null || (format != null && !format.equals(f)) || !QUANT_FORMATS.contains(f) || q.cols() % 32 != 0) {
                    return false;
                }
                format = f;
            } else if (d != null) {
                if (format != null || (dtype != null && dtype != d.dtype())) {
                    return false;
                }
                dtype = d.dtype();
            } else {
                continue;
            }
            any = true;
        }
        return any;
    }

    private static final java.util.Set<String> QUANT_FORMATS = java.util.Set.of("int4-g32", "int4-g32-asym", "mxfp4", "nvfp4");
    /** Experts {@code moe_route} groups at most (its shared memory: 2 ints an expert). */
    static final int MAX_ROUTED_EXPERTS = SHARED_DEFAULT / 8;

    /** Routes launched so far (for tests). */
    int routes() {
        return routes;
    }

    /** Tables held (for tests and the memory report). */
    int tables() {
        return tables.size();
    }

    /**
     * y [P, N] row p (+)= scale · x[p / xDiv] · W_{ids[p]}ᵀ. Quantized experts: y overwritten with scale 1 only
     * ({@code plain}); the caller composes the rest. Returns false when the experts are quantized and the call is not plain.
     */
    boolean matmul(Tensor x, int xDiv, ExpertWeights w, Tensor ids, float scale, Tensor y, boolean accumulate) {
        ctx.devContiguous("moeExpertMatmulPairs x", x, DType.F32);
        ctx.devContiguous("moeExpertMatmulPairs y", y, DType.F32);
        ctx.devContiguous("moeExpertMatmulPairs expert ids", ids, DType.I32);
        int pairs = Math.toIntExact(ids.numel());
        int n = w.rows();
        int k = w.cols();
        if (xDiv <= 0 || pairs % xDiv != 0 || x.size(-1) != k || x.numel() != (long) pairs / xDiv * k || y.size(-1) != n
                || y.numel() != (long) pairs * n) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: x " + x + " (a row per " + xDiv + " pairs), " + pairs
                    + " pairs " + ids + " -> y " + y + " for experts [" + n + ", " + k + "]");
        }
        if (pairs > 65535) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: " + pairs + " pairs exceed one launch (65535)");
        }
        Kind kind = kind(w);
        if (kind.layout != null && (scale != 1f || accumulate)) {
            return false;
        }
        if (pairs == 0 || n == 0) {
            return true;
        }
        if ((kind.layout == QuantLayout.INT4 || kind.layout == QuantLayout.MXFP4) && pairs >= STACKED_PAIRS && ids.rank() == 2
                && (xDiv == 1 || xDiv == ids.size(-1))) {
            QuantizedTensor stacked = w.stacked();   // experts back to back: the tensor-core kernel over the stack, no table
            if (stacked != null && CudaMoeMma.supportsPlain(kind.layout, stacked, x, k)) {
                grouped.grouped(x, stacked, routed(w.experts(), ids), y);
                return true;
            }
        }
        Tensor table = table(w, kind);
        long shared = 4L * k;
        if (kind.layout == null && shared > MAX_SHARED) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: K " + k + " exceeds the kernel's shared memory (" + MAX_SHARED / 4
                    + " values)");
        }
        if (kind.layout != null && CudaAllocator.address(x) % 16 != 0) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: x " + x + " must be 16-byte aligned for quantized experts");
        }
        boolean vec = k % 8 == 0 && kind.aligned;
        if (pairs > DIRECT_PAIRS) {
            byExpert(x, xDiv, w, ids, scale, y, accumulate, kind, table, pairs, n, k, vec);
            return true;
        }
        if (kind.layout != null) {
            int warps = CudaQgemv.warpsFor(k / 32, CudaQgemv.quantKLanes(1));
            long gridX = (n + CudaQgemv.quantRowsPerBlock(1) - 1) / CudaQgemv.quantRowsPerBlock(1);
            ctx.launch2d(quantized.get(kind.layout), gridX, pairs, 32 * warps, x, xDiv, ids, null, null, null, table, y, n, k,
                    w.experts(), ctx.errorFlag);
            return true;
        }
        // few f32 rows (a LoRA's A): a row a warp, four times the blocks, each row's loads in flight at once; the same sums
        boolean lone = !kind.bf16 && vec && n <= LONE_ROWS_MAX;
        int rowsPerBlock = lone ? DENSE_WARPS : DENSE_ROWS_PER_BLOCK;
        long gridX = (n + rowsPerBlock - 1) / rowsPerBlock;
        Kernel kernel = !lone ? dense : pairsCopies() && CudaAllocator.address(x) % 16 == 0 ? denseR1Copies : denseR1;
        ctx.launch2dShared(kernel, gridX, pairs, DENSE_THREADS, (int) Math.max(shared, 16), x, xDiv, ids, table,
                kind.bf16 ? 1 : 0, vec ? 1 : 0, scale, y, accumulate ? 1 : 0, n, k, w.experts(), ctx.errorFlag);
        return true;
    }

    /**
     * Two sets of f32 experts of few rows over a long K (the gate's and the up's LoRA A) against the same x and pairs in one
     * {@code moe_routed_dense_a2} launch above {@value #DIRECT_PAIRS} pairs, where each would take {@code
     * moe_routed_dense_a}, with its sums; up to that, one {@code moe_pairs_dense_r1x2} launch with the sums of a {@code
     * moe_pairs_dense_r1} each (scale 1, ys overwritten). Returns false, writing nothing, for anything else (the
     * caller runs a {@link #matmul} each).
     */
    boolean matmulShared(Tensor x, int xDiv, ExpertWeights[] ws, Tensor ids, Tensor[] ys) {
        if (ws.length != 2 || ys.length != 2 || SINGLE_PAIRS) {
            return false;
        }
        int pairs = Math.toIntExact(ids.numel());
        int k = ws[0].cols();
        int e = ws[0].experts();
        if (pairs == 0 || pairs > 65535 || ws[1].cols() != k || ws[1].experts() != e || k <= SHORT_K || k % 8 != 0
                || 2L * e * 4 > SHARED_DEFAULT || ids.dtype() != DType.I32 || x.dtype() != DType.F32 || !x.isContiguous()
                || CudaAllocator.address(x) % 16 != 0 || xDiv <= 0 || pairs % xDiv != 0 || x.size(-1) != k
                || x.numel() != (long) pairs / xDiv * k) {
            return false;
        }
        Tensor[] tables = new Tensor[2];
        for (int i = 0; i < 2; i++) {
            int n = ws[i].rows();
            if (n > 64 || n == 0 || ys[i].dtype() != DType.F32 || !ys[i].isContiguous() || ys[i].size(-1) != n
                    || ys[i].numel() != (long) pairs * n) {
                return false;
            }
            Kind kind = kind(ws[i]);
            if (kind.layout != null || kind.bf16 || !kind.aligned) {
                return false;
            }
            tables[i] = table(ws[i], kind);
        }
        ctx.devContiguous("moeExpertMatmulPairsShared x", x, DType.F32);
        ctx.devContiguous("moeExpertMatmulPairsShared expert ids", ids, DType.I32);
        if (pairs <= DIRECT_PAIRS) {   // each pair's block rows read its experts' rows: moe_pairs_dense_r1's sums, both sets
            if (4L * k > MAX_SHARED) {
                return false;
            }
            long gridX = (ws[0].rows() + DENSE_WARPS - 1) / DENSE_WARPS + (ws[1].rows() + DENSE_WARPS - 1) / DENSE_WARPS;
            ctx.launch2dShared(pairsCopies() ? denseR1x2Copies : denseR1x2, gridX, pairs, DENSE_THREADS, 4 * k, x, xDiv, ids,
                    tables[0], ys[0], ws[0].rows(), tables[1], ys[1], ws[1].rows(), k, e, ctx.errorFlag);
            return true;
        }
        MoeRouting r = routed(e, ids);
        if (tensorCoreA(k)) {
            long gridX = (ws[0].rows() + TC_A_ROWS - 1) / TC_A_ROWS + (ws[1].rows() + TC_A_ROWS - 1) / TC_A_ROWS;
            boolean registers = loraARegisters();
            ctx.launch2dShared(registers ? routedTcA2 : routedTcpA2, gridX, Math.min(e, pairs), DENSE_THREADS,
                    registers ? 0 : TC_A_RING_BYTES, x, xDiv, r.offsets(), r.order(), r.active(), tables[0], ys[0],
                    ws[0].rows(), tables[1], ys[1], ws[1].rows(), k, ctx.errorFlag);
            return true;
        }
        int stride = Math.min(k / 4, LONG_K_PIECES);
        int mt = longKRows(stride);
        int warps = DENSE_THREADS / 32;
        long gridX = (ws[0].rows() + warps - 1) / warps + (ws[1].rows() + warps - 1) / warps;
        ctx.launch2dShared(routedDenseLongK2, gridX, Math.min(e, pairs), DENSE_THREADS, 16 * mt * stride, x, xDiv, r.offsets(),
                r.order(), r.active(), tables[0], ys[0], ws[0].rows(), tables[1], ys[1], ws[1].rows(), k, mt, ctx.errorFlag);
        return true;
    }

    /**
     * act [P, N] row p = silu(x[p / xDiv] · G_eᵀ + g) · (x[p / xDiv] · U_eᵀ + u) in one tensor-core launch
     * ({@link CudaMoeOps#gateUpLora}) for INT4 gate and up experts that lie back to back, from {@link #STACKED_PAIRS}
     * pairs, with LoRA terms of f32 factors of one rank (a multiple of 4) or none; below that, stacked experts of any
     * quantized layout in one GEMV launch ({@link CudaMoeDecodePairs#swiglu}: f32 x). Returns false, writing nothing into
     * act, for anything else (the caller runs the separate products; the pairs' grouping may have been made, and is kept).
     */
    boolean swiglu(Tensor x, int xDiv, ExpertWeights gate, ExpertWeights up, Tensor ids, Backend.PairLora gateLora,
                   Backend.PairLora upLora, Tensor act) {
        int pairs = Math.toIntExact(ids.numel());
        int n = gate.rows();
        int k = gate.cols();
        boolean fused = fusedPairs(pairs, ids, xDiv);
        if (!fused && !(SWIGLU_PAIRS && CudaMoeDecodePairs.takes(pairs, ids, xDiv))) {
            return false;
        }
        ctx.devContiguous("moeSwigluPairs x", x, DType.F32);
        ctx.devContiguous("moeSwigluPairs act", act, DType.F32);
        ctx.devContiguous("moeSwigluPairs expert ids", ids, DType.I32);
        if (up.rows() != n || up.cols() != k || up.experts() != gate.experts() || x.size(-1) != k
                || x.numel() != (long) pairs / xDiv * k || act.size(-1) != n || act.numel() != (long) pairs * n) {
            throw new IllegalArgumentException("moeSwigluPairs: x " + x + " (a row per " + xDiv + " pairs), " + pairs + " pairs " + ids
                    + " -> act " + act + " for gate experts " + gate.experts() + " x [" + n + ", " + k + "] and up " + up.experts()
                    + " x [" + up.rows() + ", " + up.cols() + "]");
        }
        QuantizedTensor g = gate.stacked();
        QuantizedTensor u = up.stacked();
        if (g == null || u == null || (fused && (QuantLayout.of(g, ctx) != QuantLayout.INT4 || QuantLayout.of(u, ctx) != QuantLayout.INT4))) {
            return false;
        }
        int rank = gateLora != null ? gateLora.b().cols() : upLora != null ? upLora.b().cols() : 0;
        Tensor gateTable = loraTable("moeSwigluPairs gate", gateLora, gate, pairs, rank);
        Tensor upTable = loraTable("moeSwigluPairs up", upLora, up, pairs, rank);
        if ((gateLora != null && gateTable == null) || (upLora != null && upTable == null)) {
            return false;
        }
        if (!fused) {
            return decode.swiglu(x, xDiv, g, u, gate.experts(), ids, gateLora, gateTable, upLora, upTable, rank, act);
        }
        return grouped.gateUpLora(x, xDiv, g, u, routed(gate.experts(), ids), act, n, k, gateLora == null ? null : gateLora.lo(),
                gateTable, gateLora == null ? 0f : gateLora.scale(), upLora == null ? null : upLora.lo(), upTable,
                upLora == null ? 0f : upLora.scale(), rank);
    }

    /**
     * y [P, N] row p = x[p / xDiv] · W_eᵀ + scale · lo[p] · B_eᵀ in one tensor-core launch ({@link CudaMoeOps#groupedLora})
     * for INT4 experts that lie back to back, from {@link #STACKED_PAIRS} pairs, with a LoRA of f32 factors (rank a
     * multiple of 4). Returns false, writing nothing into y, for anything else (the caller runs the product and the term;
     * the pairs' grouping may have been made, and is kept).
     */
    boolean matmulLora(Tensor x, int xDiv, ExpertWeights w, Tensor ids, Backend.PairLora lora, Tensor y) {
        int pairs = Math.toIntExact(ids.numel());
        int n = w.rows();
        int k = w.cols();
        if (!fusedPairs(pairs, ids, xDiv)) {
            return false;
        }
        ctx.devContiguous("moeExpertMatmulPairsLora x", x, DType.F32);
        ctx.devContiguous("moeExpertMatmulPairsLora y", y, DType.F32);
        ctx.devContiguous("moeExpertMatmulPairsLora expert ids", ids, DType.I32);
        if (x.size(-1) != k || x.numel() != (long) pairs / xDiv * k || y.size(-1) != n || y.numel() != (long) pairs * n) {
            throw new IllegalArgumentException("moeExpertMatmulPairsLora: x " + x + " (a row per " + xDiv + " pairs), " + pairs
                    + " pairs " + ids + " -> y " + y + " for experts [" + n + ", " + k + "]");
        }
        QuantizedTensor stacked = w.stacked();
        if (stacked == null || QuantLayout.of(stacked, ctx) != QuantLayout.INT4) {
            return false;
        }
        int rank = lora.b().cols();
        Tensor table = loraTable("moeExpertMatmulPairsLora", lora, w, pairs, rank);
        return table != null && grouped.groupedLora(x, xDiv, stacked, routed(w.experts(), ids), y, n, k, lora.lo(), table,
                lora.scale(), rank);
    }

    /**
     * out [T, H] (+)= Σ_j weights[t, j] · (act[t·k + j] · D_eᵀ + scale · lo · B_eᵀ) in one launch ({@link
     * CudaMoeDecodePairs#downCombine}) for stacked quantized experts below {@link #STACKED_PAIRS} pairs, with a LoRA of f32
     * factors (rank a multiple of 4) or none. Returns false, writing nothing, for anything else (the caller runs the
     * products, the term and the combine).
     */
    boolean downCombine(Tensor act, ExpertWeights down, Tensor ids, Backend.PairLora lora, Tensor weights, Tensor out,
                        boolean accumulate) {
        int pairs = Math.toIntExact(ids.numel());
        if (!SWIGLU_PAIRS || !CudaMoeDecodePairs.takes(pairs, ids, 1)) {
            return false;
        }
        ctx.devContiguous("moeDownCombinePairs act", act, DType.F32);
        ctx.devContiguous("moeDownCombinePairs expert ids", ids, DType.I32);
        int n = down.rows();
        int k = down.cols();
        if (act.size(-1) != k || act.numel() != (long) pairs * k) {
            throw new IllegalArgumentException("moeDownCombinePairs: act " + act + " must be [" + pairs + ", " + k + "] for " + pairs
                    + " pairs " + ids + " of experts [" + n + ", " + k + "]");
        }
        QuantizedTensor d = down.stacked();
        if (d == null) {
            return false;
        }
        int rank = lora == null ? 0 : lora.b().cols();
        Tensor table = loraTable("moeDownCombinePairs", lora, down, pairs, rank);
        if (lora != null && table == null) {
            return false;
        }
        return decode.downCombine(act, d, down.experts(), ids, lora, table, rank, weights, out, accumulate);
    }

    /** Whether a call may take the fused tensor-core launches: on, from {@link #STACKED_PAIRS} pairs, ids [tokens, k], x a row a token or a pair. */
    private static boolean fusedPairs(int pairs, Tensor ids, int xDiv) {
        return SWIGLU_PAIRS && pairs >= STACKED_PAIRS && ids.rank() == 2 && (xDiv == 1 || xDiv == ids.size(-1));
    }

    /** The table of a LoRA term's B factors when the fused kernel takes them (every expert's f32 [N, rank], 16-byte aligned), else null. */
    private Tensor loraTable(String what, Backend.PairLora l, ExpertWeights base, int pairs, int rank) {
        if (l == null) {
            return null;
        }
        ExpertWeights b = l.b();
        if (b.experts() != base.experts() || b.rows() != base.rows() || b.cols() != rank || rank % 4 != 0) {
            return null;
        }
        ctx.devContiguous(what + " LoRA lo", l.lo(), DType.F32);
        if (l.lo().size(-1) != rank || l.lo().numel() != (long) pairs * rank) {
            throw new IllegalArgumentException(what + ": the LoRA's lo " + l.lo() + " must be [" + pairs + ", " + rank + "] for B ["
                    + b.rows() + ", " + rank + "]");
        }
        if (CudaAllocator.address(l.lo()) % 16 != 0) {
            return null;
        }
        for (int e = 0; e < b.experts(); e++) {
            Tensor d = b.dense(e);
            if (d == null || d.dtype() != DType.F32) {
                return null;
            }
        }
        Kind kind = kind(b);
        return kind.aligned ? table(b, kind) : null;
    }

    /** The pairs grouped by expert on the device ({@link #routed}), then one block row an active expert. */
    private void byExpert(Tensor x, int xDiv, ExpertWeights w, Tensor ids, float scale, Tensor y, boolean accumulate, Kind kind,
                          Tensor table, int pairs, int n, int k, boolean vec) {
        int e = w.experts();
        if (2L * e * 4 > SHARED_DEFAULT) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: " + e + " experts exceed the routing kernel's shared memory (6144 at most)");
        }
        MoeRouting r = routed(e, ids);
        Tensor offsets = r.offsets();
        Tensor active = r.active();
        Tensor order = r.order();
        int blocks = Math.min(e, pairs);
        if (kind.layout != null) {
            int mt = CudaQgemv.chunkFor((2 * pairs + blocks - 1) / blocks);
            int warps = CudaQgemv.warpsFor(k / 32, CudaQgemv.quantKLanes(mt));
            long gridX = (n + CudaQgemv.quantRowsPerBlock(mt) - 1) / CudaQgemv.quantRowsPerBlock(mt);
            ctx.launch2d(routedQuantized.get(kind.layout).get(mt), gridX, blocks, 32 * warps, x, xDiv, null, offsets, order, active,
                    table, y, n, k, e, ctx.errorFlag);
        } else if (SINGLE_PAIRS) { // the reference: an expert's pairs one at a time
            long gridX = (n + DENSE_ROWS_PER_BLOCK - 1) / DENSE_ROWS_PER_BLOCK;
            ctx.launch2dShared(routedDenseSingle, gridX, blocks, DENSE_THREADS, Math.max(4 * k, 16), x, xDiv, offsets, order, active,
                    table, kind.bf16 ? 1 : 0, vec ? 1 : 0, scale, y, accumulate ? 1 : 0, n, k, e, ctx.errorFlag);
        } else if (k <= SHORT_K) { // a LoRA's B: a thread a row
            long gridX = (n + SHORT_K_THREADS - 1) / SHORT_K_THREADS;
            ctx.launch2d(routedDenseShortK, gridX, blocks, SHORT_K_THREADS, x, xDiv, offsets, order, active, table, kind.bf16 ? 1 : 0,
                    vec ? 1 : 0, scale, y, accumulate ? 1 : 0, n, k, ROUTED_PAIRS, ctx.errorFlag);
        } else if (n <= 64 && k > 0 && !kind.bf16 && vec && CudaAllocator.address(x) % 16 == 0) {
            if (tensorCoreA(k)) { // a LoRA's A on tensor cores: 32 rows a block, 16 pairs at a time
                long gridX = (n + TC_A_ROWS - 1) / TC_A_ROWS;
                boolean registers = loraARegisters();
                ctx.launch2dShared(registers ? routedTcA : routedTcpA, gridX, blocks, DENSE_THREADS,
                        registers ? 0 : TC_A_RING_BYTES, x, xDiv, offsets, order, active, table, scale, y, accumulate ? 1 : 0,
                        n, k, ctx.errorFlag);
                return;
            }
            // a LoRA's A: a row a warp, its slice of K in registers
            int stride = Math.min(k / 4, LONG_K_PIECES);                                // 16-byte pieces of a row staged
            int mt = longKRows(stride);
            long gridX = (n + DENSE_THREADS / 32 - 1) / (DENSE_THREADS / 32);
            ctx.launch2dShared(routedDenseLongK, gridX, blocks, DENSE_THREADS, 16 * mt * stride, x, xDiv, offsets, order, active,
                    table, scale, y, accumulate ? 1 : 0, n, k, mt, ctx.errorFlag);
        } else {
            int mt = (int) Math.max(1, Math.min(ROUTED_PAIRS, MAX_SHARED / (4L * k)));   // x rows staged at once
            boolean fewRows = n <= 64;                  // a LoRA's A: a row a warp, more blocks an expert
            int rows = fewRows ? DENSE_THREADS / 32 : DENSE_ROWS_PER_BLOCK;
            long gridX = (n + rows - 1) / rows;
            ctx.launch2dShared(fewRows ? routedDenseRow : routedDense, gridX, blocks, DENSE_THREADS, (int) (4L * mt * k), x, xDiv,
                    offsets, order, active, table, kind.bf16 ? 1 : 0, vec ? 1 : 0, scale, y, accumulate ? 1 : 0, n, k, mt, ctx.errorFlag);
        }
    }

    /** Whether a LoRA's A over this K takes the tensor-core kernels ({@code moe_routed_tc_a}, {@code _a2}). */
    private static boolean tensorCoreA(int k) {
        return !"fma".equals(System.getProperty(LORA_A_PROPERTY)) && k % 16 == 0;
    }

    /** Whether the tensor-core LoRA A kernels hold their loads in registers ({@code -Dorbit.cuda.moeLoraA=tc}). */
    /** Whether {@link #PAIRS_COPIES_PROPERTY} asks for x staged by asynchronous copies. */
    static boolean pairsCopies() {
        return Switches.onOff(PAIRS_COPIES_PROPERTY, false);
    }

    private static boolean loraARegisters() {
        return "tc".equals(System.getProperty(LORA_A_PROPERTY));
    }

    /** Rows of x the LoRA A kernels ({@code moe_routed_dense_a}, {@code _a2}) stage at once, {@code stride} 16-byte pieces each. */
    private static int longKRows(int stride) {
        return (int) Math.max(1, Math.min(ROUTED_PAIRS, LONG_K_SHARED / (16L * stride)));
    }

    /**
     * The kept routing a decode step's router may fill in its own launch ({@link CudaDecodeRouter#moeRouterTopk}) for
     * {@code pairs} pairs over {@code experts} experts: null where the grouped calls would not read it (at most
     * {@value #DIRECT_PAIRS} pairs: each pair reads its expert's rows), or where it would be allocated inside a capture.
     */
    MoeRouting routingForRouter(int experts, int pairs) {
        if (pairs <= DIRECT_PAIRS || (!routings.containsKey(experts) && ctx.allocator.inCapture())) {
            return null;
        }
        return routing(experts, pairs);
    }

    /** Records that the kept routing of {@code experts} experts holds the grouping of {@code ids}, filled by the router. */
    void groupedBy(int experts, Tensor ids) {
        routedIds.put(experts, ids);
    }

    /**
     * The pairs of {@code ids} grouped by expert in the kept routing of their expert count: routed on the device
     * ({@code moe_route}) unless the routing's last fill was for this same ids tensor (the other products of the same
     * layer: the gate's, the up's and down's, their LoRA factors'; see {@link org.orbitrl.kernels.Backend#moeExpertMatmulPairs}),
     * or the router's launch filled it for them ({@link #groupedBy}).
     * A captured step records the route where it first ran, and its replays fill the routing there again before every
     * product that reads it.
     */
    private MoeRouting routed(int experts, Tensor ids) {
        int pairs = Math.toIntExact(ids.numel());
        MoeRouting r = routing(experts, pairs);
        if (routedIds.get(experts) != ids || r.pairs() != pairs) {
            grouped.route(ids, r);
            routedIds.put(experts, ids);
            routes++;
        }
        return r;
    }

    /**
     * The kept routing of {@code experts} experts (sized for a launch's most pairs, 65535: 256 KiB at 128 experts).
     * Calls on the backend's stream run in order, so one buffer serves every call and every captured step; it is made
     * outside a capture (a captured step's measuring run makes it), like the tables.
     */
    private MoeRouting routing(int experts, int pairs) {
        MoeRouting r = routings.get(experts);
        if (r == null) {
            if (ctx.allocator.inCapture()) {
                throw new NotCapturableException("the first grouped call over " + experts + " experts (" + pairs + " pairs: its routing"
                        + " buffer is allocated); a captured step's measuring run makes it");
            }
            r = new MoeRouting(ctx.allocator, MemoryCategory.RUNTIME_RESERVE, experts, 65535);
            routings.put(experts, r);
        }
        return r;
    }

    static int stackedPairs(String property) {
        if (property == null || property.isBlank()) {
            return 16;
        }
        if (property.equals("off")) {
            return Integer.MAX_VALUE;
        }
        try {
            return Integer.parseInt(property.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("orbit.cuda.moePairsStacked: expected a pair count or off, got '" + property + "'");
        }
    }

    /** What the held experts are: one quantized layout, or full precision of one dtype (and whether every row start is 16-byte aligned). */
    private record Kind(QuantLayout layout, boolean bf16, boolean aligned) {
    }

    private Kind kind(ExpertWeights w) {
        QuantLayout layout = null;
        DType dtype = null;
        boolean aligned = true;
        boolean any = false;
        for (int e = 0; e < w.experts(); e++) {
            QuantizedTensor q = w.quantized(e);
            Tensor d = w.dense(e);
            if (q != null) {
                QuantLayout l = QuantLayout.of(q, ctx);
                if (dtype != null || (layout != null && layout != l)) {
                    throw mixed(w);
                }
                layout = l;
            } else if (d != null) {
                ctx.devContiguous("moeExpertMatmulPairs expert " + e, d, null);
                if (layout != null || (dtype != null && dtype != d.dtype())) {
                    throw mixed(w);
                }
                dtype = d.dtype();
                aligned &= CudaAllocator.address(d) % 16 == 0;
            } else {
                continue;
            }
            any = true;
        }
        if (!any) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: this rank holds none of the " + w.experts() + " experts");
        }
        return new Kind(layout, dtype == DType.BF16, aligned);
    }

    private static IllegalArgumentException mixed(ExpertWeights w) {
        return new IllegalArgumentException("moeExpertMatmulPairs: the " + w.experts() + " experts [" + w.rows() + ", " + w.cols()
                + "] mix formats; the pair products take one quantized format, or full precision of one dtype");
    }

    /** The device table of the experts' addresses (made at the first use of this set of matrices). */
    private Tensor table(ExpertWeights w, Kind kind) {
        return tables.table(w, kind.layout != null ? ExpertTables.QUANT_WORDS : 1);
    }
}
