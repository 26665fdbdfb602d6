package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.EnumMap;

/**
 * Exact mode's expert products ({@code moeExpertMatmul} forward: out rows of expert e = in rows · W_eᵀ): every expert
 * with rows in one launch of {@code exact_mma_group_*} ({@code exact_mma.cu}), where the per-expert path took a
 * dequantization, a split into planes, a product and a sum of splits for each expert. Each row is computed by the
 * instructions and in the order of {@link CudaExactOps}'s product of that row with its expert's weight alone (64 weight
 * rows a block; the ranges of K from {@link CudaExactOps#splits} of N and K), so it is the same whatever the batch and
 * whichever other experts have rows: bit for bit the per-expert path's result for f32 and quantized experts, and for
 * bf16 ones that path's result under {@code -Dorbit.cuda.exactMmaRows=1 -Dorbit.cuda.exactMmaWarps=4} (its default
 * tile takes 128 bf16 rows a block, which sets other ranges of K). The kernel reads each weight as stored (a quantized
 * expert's 4-bit codes, not a dequantized copy) and makes its planes in shared memory; INT4 weights by default in the
 * codes form ({@link #int4Codes}), which the dense INT4 products take too ({@link #matmulQuantized}). {@link #matmulTransposed} does
 * the same for the activation gradients through quantized and bf16 experts (dx = dy · W_e), each weight's columns made
 * into the planes' rows.
 *
 * <p>Takes a call where every expert with rows is of one kind (one quantized layout, or dense f32, or dense bf16, [N, K]
 * contiguous), K is a multiple of 8, and the dense weights and codes start on 16-byte boundaries, scales and zero
 * points on 4-byte ones (rows off a 16-byte boundary go through a copy); {@link #matmul} returns false for any other
 * call, and {@code -Dorbit.cuda.exactExperts=off} (read at each call) declines every call: the per-expert path then
 * runs (for bf16 experts with other tiles, so other bits). Like {@link CudaExactOps}'s switches, this one must not
 * change between a rollout and the training step that recomputes it. A call's rows go in tiles of 16 rows of x
 * where its experts have few rows each, else of 64 ({@link #tileRows}): the same sums either way; where the tiles give
 * blocks enough without the ranges of K, each block takes every range in turn ({@link CudaExactOps#folds}): the same bits.
 */
final class CudaExactExperts {
    private static final int TILE = 64;      // EM_TOK: rows of x a block
    private static final int SHORT_TILE = 16; // the _m16 kernels': for calls of few rows an expert
    private static final int ROWS = 64;      // EMG_ROWS: weight rows a block
    private static final int THREADS = 128;
    private static final int STAGES = 4;     // EM_ST
    private static final int X_ROW = 4 * 32 + 16;   // EM_XROWB
    private static final int W_ROW = 2 * 32 + 16;   // EM_WROWB
    private static final int ENTRY = 4;      // u64 words a weight: data, scales, zeros, global scale bits
    private static final int SUM_BLOCK = 256;

    /** The kinds of weight the kernels read: a quantized layout's, or a dense f32 or bf16 matrix. */
    private enum Kind { INT4, MXFP4, NVFP4, F32, BF16 }

    private final CudaContext ctx;
    private final EnumMap<Kind, Kernel> kernels = new EnumMap<>(Kind.class);
    private final EnumMap<Kind, Kernel> shortKernels = new EnumMap<>(Kind.class);
    private final EnumMap<Kind, Kernel> transposedKernels = new EnumMap<>(Kind.class);
    private final EnumMap<Kind, Kernel> foldKernels = new EnumMap<>(Kind.class);           // 64-row tiles, CudaExactOps#folds
    private final EnumMap<Kind, Kernel> shortFoldKernels = new EnumMap<>(Kind.class);      // 16-row tiles, the same
    private final EnumMap<Kind, Kernel> transposedFoldKernels = new EnumMap<>(Kind.class);
    private final Kernel[] int4Planes;   // INT4 forward in the dequantized planes' form: tiles of 64, of 16, each folded
    private final Kernel dense;          // one INT4 weight in the codes form, its addresses as arguments (matmulQuantized)
    private final Kernel denseShort;
    private final Kernel denseFold;
    private final Kernel denseShortFold;
    private final Kernel sum;
    private final Kernel tiles;
    private final DeviceTable table;
    private final ExpertTables weights;

    CudaExactExperts(CudaContext ctx) {
        this.ctx = ctx;
        for (Kind k : Kind.values()) {
            String name = k.name().toLowerCase(java.util.Locale.ROOT);
            kernels.put(k, ctx.kernel("exact_mma", "exact_mma_group_" + name));
            shortKernels.put(k, ctx.kernel("exact_mma", "exact_mma_group_" + name + "_m16"));
            foldKernels.put(k, ctx.kernel("exact_mma", "exact_mma_group_" + name + "_fold"));
            shortFoldKernels.put(k, ctx.kernel("exact_mma", "exact_mma_group_" + name + "_m16_fold"));
            if (k != Kind.F32) {
                transposedKernels.put(k, ctx.kernel("exact_mma", "exact_mma_group_t_" + name));
                transposedFoldKernels.put(k, ctx.kernel("exact_mma", "exact_mma_group_t_" + name + "_fold"));
            }
        }
        this.int4Planes = new Kernel[]{ctx.kernel("exact_mma", "exact_mma_group_int4_planes"),
                ctx.kernel("exact_mma", "exact_mma_group_int4_planes_m16"), ctx.kernel("exact_mma", "exact_mma_group_int4_planes_fold"),
                ctx.kernel("exact_mma", "exact_mma_group_int4_planes_m16_fold")};
        this.dense = ctx.kernel("exact_mma", "exact_mma_int4_codes");
        this.denseShort = ctx.kernel("exact_mma", "exact_mma_int4_codes_m16");
        this.denseFold = ctx.kernel("exact_mma", "exact_mma_int4_codes_fold");
        this.denseShortFold = ctx.kernel("exact_mma", "exact_mma_int4_codes_m16_fold");
        this.sum = ctx.kernel("exact_mma", "exact_sum_splits");
        this.tiles = ctx.kernel("exact_mma", "exact_group_tiles");
        this.table = new DeviceTable(ctx, "exact expert table");
        this.weights = new ExpertTables(ctx);
    }

    static boolean enabled() {
        return !"off".equals(System.getProperty("orbit.cuda.exactExperts"));
    }

    /**
     * Whether exact mode's INT4 forward products take the codes form ({@code -Dorbit.cuda.exactInt4=codes}, the
     * default; read at each call): x's three bf16 planes times the codes (q - zero, exact in bf16), each 32-value
     * group's sums times its scale added into the range's sum ({@code acc = fma(s, group sum, acc)}), three products a
     * 16-value step and no dequantization. {@code planes}: the dequantized weight as three bf16 planes (six products a
     * step), the earlier form. The two round differently, so the switch must not change between a rollout and the
     * training step that recomputes it; the dense INT4 products ({@link #matmulQuantized}) follow it too.
     */
    static boolean int4Codes() {
        String set = System.getProperty("orbit.cuda.exactInt4", "codes");
        return switch (set) {
            case "codes" -> true;
            case "planes" -> false;
            default -> throw new IllegalArgumentException("-Dorbit.cuda.exactInt4=" + set + ": expected codes or planes");
        };
    }

    /**
     * Exact mode's dense INT4 product y [M, N] = x [M, K] · wᵀ in the codes form: the grouped kernels' tile with the
     * weight's addresses as arguments ({@code exact_mma_int4_codes*}), so that a weight's product has the bits of the
     * same weight's grouped expert products (and the per-expert path, {@code -Dorbit.cuda.exactExperts=off}, which does
     * not reach this, those of the grouped one), with nothing read from a table on the host: a decode step's products
     * are captured. Rows, tiles, ranges of K and the fold as {@link #matmul} takes them for one expert. Returns false,
     * doing nothing, where the codes form is switched off, w is not INT4, or {@link #matmul} would decline the weight
     * (codes or scales off their boundaries, too many blocks): the dequantized planes' product then runs, as for the
     * grouped calls declined for the same weight.
     */
    boolean matmulQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        String format = w.format().name();
        if (!int4Codes() || !(format.equals("int4-g32") || format.equals("int4-g32-asym"))) {
            return false;
        }
        int n = Math.toIntExact(w.rows());
        int k = Math.toIntExact(w.cols());
        ExpertWeights one = new ExpertWeights(n, k, new Tensor[]{null}, new QuantizedTensor[]{w});
        if (!CudaExactOps.tensorCores(k) || kind(one, 0, n, k) != Kind.INT4 || x.size(-1) != k || y.size(-1) != n) {
            return false;
        }
        int m = CudaContext.rows(x);
        int nTiles = (n + ROWS - 1) / ROWS;
        int splits = CudaExactOps.splits(nTiles, k, ctx.device.multiprocessors());
        if ((long) nTiles * splits > 65535) {
            return false;
        }
        int tile = tileRows(false, m, 1);
        int shared = shared(Kind.INT4, false, tile);
        long codes = CudaAllocator.address(w.codes());
        long scales = CudaAllocator.address(w.scales());
        long zeros = w.zeros() == null ? 0L : CudaAllocator.address(w.zeros());
        long xAddr = aligned(x);
        long yAddr = CudaAllocator.address(y);
        long mTiles = (m + tile - 1) / tile;
        Kernel kernel = tile == SHORT_TILE ? denseShort : dense;
        if (splits == 1) {
            ctx.launch2dShared(kernel, mTiles, nTiles, THREADS, shared, xAddr, m, k, codes, scales, zeros, n, yAddr, 0L, 1);
            return true;
        }
        if (CudaExactOps.folds(mTiles * nTiles, splits, ctx.device.multiprocessors())) {
            ctx.launch2dShared(tile == SHORT_TILE ? denseShortFold : denseFold, mTiles, nTiles, THREADS, shared, xAddr, m, k, codes, scales, zeros, n, yAddr, 0L, splits);
            return true;
        }
        int step = CudaExactOps.rowsPerLaunch(splits, n);
        for (int r0 = 0; r0 < m; r0 += step) {
            int rows = Math.min(step, m - r0);
            Tensor part = ctx.scratch(CudaContext.Scratch.EXACT_SPLITS, DType.F32, (long) splits * rows * n);
            ctx.launch2dShared(kernel, (rows + tile - 1) / tile, nTiles * splits, THREADS, shared, xAddr + 4L * r0 * k, rows, k,
                    codes, scales, zeros, n, yAddr + 4L * r0 * n, part, splits);
            ctx.launch(sum, ctx.gridFor((long) rows * n, SUM_BLOCK), SUM_BLOCK, part, splits, (long) rows * n, yAddr + 4L * r0 * n);
        }
        return true;
    }

    /** The forward kernel of {@code kind} for tiles of {@code tile} rows, folded or not. */
    private Kernel forward(Kind kind, int tile, boolean fold) {
        boolean isShort = tile == SHORT_TILE;
        if (kind == Kind.INT4 && !int4Codes()) {
            return int4Planes[(fold ? 2 : 0) + (isShort ? 1 : 0)];
        }
        return (fold ? (isShort ? shortFoldKernels : foldKernels) : isShort ? shortKernels : kernels).get(kind);
    }

    /**
     * out [P, N] = each expert's rows of in [P, K] times its weight transposed (P = offsets[E]); returns false, doing
     * nothing, where the call is not one this class takes (class comment).
     */
    boolean matmul(Tensor in, ExpertWeights w, int[] offsets, Tensor out) {
        return enabled() && run(in, w, offsets, out, false);
    }

    /**
     * out [P, K] = each expert's rows of in [P, N] times its weight [N, K] (an activation gradient through the frozen
     * experts), for quantized and bf16 experts with N a multiple of 32 and K of 8: the same kernels reading each weight's
     * columns into the planes' rows, f32 precision. Returns false, doing nothing, for any other call (and for f32
     * experts, the LoRA factors, which {@link CudaNarrowExperts} takes). Not batch-invariant by contract (a gradient need
     * not be), though its order is fixed as the forward's.
     */
    boolean matmulTransposed(Tensor in, ExpertWeights w, int[] offsets, Tensor out) {
        // the sum runs over whole chunks of 32 rows of W; a bf16 W's rows are copied 8 columns at a time
        return enabled() && w.rows() % 32 == 0 && w.cols() % 8 == 0 && run(in, w, offsets, out, true);
    }

    /**
     * {@link #matmul} with the groups' offsets on the device (i32 [E + 1], as {@code moeGroup} writes them): out [P, N] =
     * each expert's rows of in [P, K] times its weight transposed, P = in's rows. The tile table is made on the device
     * ({@code exact_group_tiles}) for the most tiles P rows can take, the blocks of its unused entries returning at once,
     * and the weights' addresses come from a table of every expert ({@link ExpertTables}), so nothing is read on the
     * host and a decode step's experts can be captured. Each row's sums are {@link #matmul}'s (a row's bits do not depend
     * on its tile). Takes calls where every expert, with rows or not, is held and of one kind; returns false for any
     * other, doing nothing.
     */
    boolean matmulRouted(Tensor in, ExpertWeights w, Tensor offsets, Tensor out) {
        if (!enabled()) {
            return false;
        }
        int n = w.rows();
        int k = w.cols();
        int e = w.experts();
        if (in.dtype() != DType.F32 || out.dtype() != DType.F32 || !in.isContiguous() || !out.isContiguous() || in.size(-1) != k
                || out.size(-1) != n || in.numel() / k != out.numel() / n || !CudaExactOps.tensorCores(k) || e == 0) {
            return false;
        }
        ctx.devContiguous("moeExpertMatmulRouted offsets", offsets, DType.I32);
        if (offsets.numel() != e + 1) {
            throw new IllegalArgumentException("moeExpertMatmulRouted: offsets " + offsets + " for " + e + " experts (expected [E + 1])");
        }
        Kind kind = null;
        for (int i = 0; i < e; i++) {
            Kind ki = kind(w, i, n, k);
            if (ki == null || (kind != null && ki != kind)) {
                return false;
            }
            kind = ki;
        }
        int p = Math.toIntExact(in.numel() / k);
        if (p == 0) {
            return true;
        }
        int tile = tileRows(false, p, Math.min(e, p));
        // the most tiles p rows over at most min(E, p) experts can take: sum of ceil(rows_e / tile)
        int cap = Math.toIntExact((p + (long) (tile - 1) * Math.min(e, p) + tile - 1) / tile);
        int nTiles = (n + ROWS - 1) / ROWS;
        int splits = CudaExactOps.splits(nTiles, k, ctx.device.multiprocessors());
        if ((long) nTiles * splits > 65535) {
            return false;
        }
        Tensor wtab = weights.table(w, ENTRY);
        long inAddr = aligned(in);
        Tensor tileTable = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.I32, 4L * cap);
        try {
            ctx.launch(tiles, 1, 1024, offsets, e, tile, cap, tileTable);
            Kernel kernel = forward(kind, tile, false);
            int shared = shared(kind, false, tile);
            long outAddr = CudaAllocator.address(out);
            if (splits == 1) {
                ctx.launch2dShared(kernel, cap, nTiles, THREADS, shared, inAddr, k, tileTable, wtab, n, outAddr, 0L, 0, 0, 1);
                return true;
            }
            if (CudaExactOps.folds((long) cap * nTiles, splits, ctx.device.multiprocessors())) {
                ctx.launch2dShared(forward(kind, tile, true), cap, nTiles, THREADS, shared, inAddr, k, tileTable, wtab, n, outAddr, 0L, 0,
                        0, splits);
                return true;
            }
            // rows in launches whose split sums stay within the bound; a tile across a launch's ends keeps its rows in it
            int step = CudaExactOps.rowsPerLaunch(splits, n);
            for (int r0 = 0; r0 < p; r0 += step) {
                int rows = Math.min(step, p - r0);
                Tensor part = ctx.scratch(CudaContext.Scratch.EXACT_SPLITS, DType.F32, (long) splits * rows * n);
                ctx.launch2dShared(kernel, cap, nTiles * splits, THREADS, shared, inAddr, k, tileTable, wtab, n, outAddr, part, r0,
                        rows, splits);
                ctx.launch(sum, ctx.gridFor((long) rows * n, SUM_BLOCK), SUM_BLOCK, part, splits, (long) rows * n,
                        outAddr + 4L * r0 * n);
            }
            return true;
        } finally {
            ctx.allocator.release(tileTable);
        }
    }

    private boolean run(Tensor in, ExpertWeights w, int[] offsets, Tensor out, boolean transposed) {
        w.requireHeld(transposed ? "moeExpertMatmulTransposed" : "moeExpertMatmul", offsets);
        int n = transposed ? w.cols() : w.rows();   // output width
        int k = transposed ? w.rows() : w.cols();   // the sum's length
        int p = offsets[w.experts()];
        if (in.dtype() != DType.F32 || out.dtype() != DType.F32 || !in.isContiguous() || !out.isContiguous()
                || in.size(-1) != k || in.numel() != (long) p * k || out.size(-1) != n || out.numel() != (long) p * n) {
            return false;
        }
        if (!CudaExactOps.tensorCores(k)) {
            return false;
        }
        int active = 0;
        Kind kind = null;
        for (int e = 0; e < w.experts(); e++) {
            int rows = offsets[e + 1] - offsets[e];
            if (rows == 0) {
                continue;
            }
            Kind ke = kind(w, e, w.rows(), w.cols());
            if (ke == null || (kind != null && ke != kind) || (transposed && ke == Kind.F32)) {
                return false;
            }
            kind = ke;
            active++;
        }
        if (active == 0) {
            return true;
        }
        int tile = tileRows(transposed, p, active);
        long tiles = 0;
        for (int e = 0; e < w.experts(); e++) {
            tiles += (offsets[e + 1] - offsets[e] + tile - 1) / tile;
        }
        int nTiles = (n + ROWS - 1) / ROWS;
        int splits = CudaExactOps.splits(nTiles, k, ctx.device.multiprocessors());
        if ((long) nTiles * splits > 65535) {
            return false;
        }
        // the table: a weight entry a slot (the experts with rows in order), then a tile entry (16 bytes) a tile
        MemorySegment h = table.host(ENTRY * (long) active + 2 * tiles);
        int slot = 0;
        long at = (long) ENTRY * active;
        for (int e = 0; e < w.experts(); e++) {
            int rows = offsets[e + 1] - offsets[e];
            if (rows == 0) {
                continue;
            }
            entry(h, (long) ENTRY * slot, w, e);
            for (int r = 0; r < rows; r += tile) {
                h.setAtIndex(ValueLayout.JAVA_LONG, at, ((long) (offsets[e] + r) << 32) | slot);
                h.setAtIndex(ValueLayout.JAVA_LONG, at + 1, Math.min(tile, rows - r));
                at += 2;
            }
            slot++;
        }
        long device = table.upload(h, at);
        long tileBase = device + 8L * ENTRY * active;
        Kernel kernel = transposed ? transposedKernels.get(kind) : forward(kind, tile, false);
        int shared = shared(kind, transposed, tile);
        long inAddr = aligned(in);
        long outAddr = CudaAllocator.address(out);
        if (splits == 1) {
            ctx.launch2dShared(kernel, tiles, nTiles, THREADS, shared, inAddr, k, tileBase, device, n, outAddr, 0L, 0, 0, 1);
            return true;
        }
        if (CudaExactOps.folds(tiles * nTiles, splits, ctx.device.multiprocessors())) {
            ctx.launch2dShared(transposed ? transposedFoldKernels.get(kind) : forward(kind, tile, true), tiles, nTiles, THREADS, shared, inAddr,
                    k, tileBase, device, n, outAddr, 0L, 0, 0, splits);
            return true;
        }
        // rows in launches whose split sums stay within the bound of CudaExactOps; a launch's rows are contiguous
        int step = CudaExactOps.rowsPerLaunch(splits, n);
        long first = 0;
        while (first < tiles) {
            int r0 = tileRow(h, ENTRY * (long) active + 2 * first);
            long last = first;
            int rows = 0;
            while (last < tiles) {
                int tr = (int) h.getAtIndex(ValueLayout.JAVA_LONG, ENTRY * (long) active + 2 * last + 1);
                if (rows > 0 && rows + tr > step) {
                    break;
                }
                rows += tr;
                last++;
            }
            Tensor part = ctx.scratch(CudaContext.Scratch.EXACT_SPLITS, DType.F32, (long) splits * rows * n);
            ctx.launch2dShared(kernel, last - first, nTiles * splits, THREADS, shared, inAddr, k, tileBase + 16 * first, device,
                    n, outAddr, part, r0, rows, splits);
            ctx.launch(sum, ctx.gridFor((long) rows * n, SUM_BLOCK), SUM_BLOCK, part, splits, (long) rows * n,
                    outAddr + 4L * r0 * n);
            first = last;
        }
        return true;
    }

    /** The address of in's rows for the kernels' 16-byte copies: rows off a 16-byte boundary go through a copy of them. */
    private long aligned(Tensor in) {
        long addr = CudaAllocator.address(in);
        if (addr % 16 == 0) {
            return addr;
        }
        Tensor c = ctx.scratch(CudaContext.Scratch.EXACT_X, DType.F32, in.numel());
        ctx.allocator.copy(in.reshape(in.numel()), c);
        return CudaAllocator.address(c);
    }

    /** Expert e's kind, or null where the kernels cannot read it (another dtype or format, a view, misaligned). */
    private Kind kind(ExpertWeights w, int e, int n, int k) {
        QuantizedTensor q = w.quantized(e);
        if (q != null) {
            QuantLayout l = QuantLayout.of(q, ctx);
            if (CudaAllocator.address(q.codes()) % 16 != 0 || CudaAllocator.address(q.scales()) % 4 != 0
                    || (q.zeros() != null && CudaAllocator.address(q.zeros()) % 4 != 0)) {
                return null;
            }
            return switch (l) {
                case INT4 -> Kind.INT4;
                case MXFP4 -> Kind.MXFP4;
                case NVFP4 -> Kind.NVFP4;
            };
        }
        Tensor d = w.dense(e);
        if (d == null || !d.isContiguous() || d.numel() != (long) n * k || CudaAllocator.address(d) % 16 != 0) {
            return null;
        }
        return d.dtype() == DType.F32 ? Kind.F32 : d.dtype() == DType.BF16 ? Kind.BF16 : null;
    }

    private static void entry(MemorySegment h, long at, ExpertWeights w, int e) {
        QuantizedTensor q = w.quantized(e);
        if (q != null) {
            h.setAtIndex(ValueLayout.JAVA_LONG, at, CudaAllocator.address(q.codes()));
            h.setAtIndex(ValueLayout.JAVA_LONG, at + 1, CudaAllocator.address(q.scales()));
            h.setAtIndex(ValueLayout.JAVA_LONG, at + 2, q.zeros() == null ? 0L : CudaAllocator.address(q.zeros()));
            h.setAtIndex(ValueLayout.JAVA_LONG, at + 3, Float.floatToRawIntBits(q.globalScale()) & 0xffffffffL);
        } else {
            h.setAtIndex(ValueLayout.JAVA_LONG, at, CudaAllocator.address(w.dense(e)));
            h.setAtIndex(ValueLayout.JAVA_LONG, at + 1, 0L);
            h.setAtIndex(ValueLayout.JAVA_LONG, at + 2, 0L);
            h.setAtIndex(ValueLayout.JAVA_LONG, at + 3, 0L);
        }
    }

    /**
     * Rows of x a block takes: 16 where the experts with rows average at most 24 (a decode step: a 64-row tile would
     * multiply mostly padding), else 64; {@code -Dorbit.cuda.exactExpertTile=16|64} (read at each call) sets it. Every
     * output's sum is the same either way; transposed products take 64.
     */
    static int tileRows(boolean transposed, int rows, int active) {
        if (transposed) {
            return TILE;
        }
        String set = System.getProperty("orbit.cuda.exactExpertTile");
        if (set != null) {
            return switch (set) {
                case "16" -> SHORT_TILE;
                case "64" -> TILE;
                default -> throw new IllegalArgumentException("-Dorbit.cuda.exactExpertTile=" + set + ": expected 16 or 64");
            };
        }
        return rows <= 24L * active ? SHORT_TILE : TILE;
    }

    private static int tileRow(MemorySegment h, long at) {
        return (int) (h.getAtIndex(ValueLayout.JAVA_LONG, at) >>> 32);
    }

    /**
     * Dynamic shared memory of a block: the stages (x and the weight's raw rows: emg_raw_bytes), x's planes and the
     * weight's (a bf16 weight's rows are its plane, except transposed).
     */
    private static int shared(Kind kind, boolean transposed, int tile) {
        int raw = transposed ? (kind == Kind.BF16 ? 32 * 2 * ROWS : 32 * (ROWS / 2 + 8 + 8)) : switch (kind) {
            case F32 -> ROWS * X_ROW;
            case BF16 -> ROWS * W_ROW;
            default -> ROWS * (16 + 4 + 4);
        };
        // x's three planes, then the weight's: none for a bf16 weight (the stage's rows are its plane), one for INT4's codes
        int weightPlanes = kind == Kind.BF16 && !transposed ? 0 : kind == Kind.INT4 && !transposed && int4Codes() ? 1 : 3;
        int planes = 3 * tile * W_ROW + weightPlanes * ROWS * W_ROW;
        return STAGES * (tile * X_ROW + raw) + planes;
    }
}
