package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.GroupedGemm;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.List;

import static org.bytedeco.cuda.global.cudart.CUDA_R_16BF;
import static org.bytedeco.cuda.global.cudart.CUDA_R_32F;

/**
 * The expert products of the grouped mixture-of-experts block (the contracts are
 * {@link org.orbitrl.kernels.Backend}'s {@code moeExpertMatmul}, {@code moeExpertMatmulTransposed} and
 * {@code moeExpertWeightGrad}), each chunk of experts as one cuBLAS grouped product
 * ({@link GroupedGemm}, one group an expert over its contiguous rows):
 * <ul>
 *   <li>Quantized and bf16 experts: the grouped rows are rounded to bf16 once; quantized experts are
 *       dequantized {@code chunk} at a time into one reused bf16 buffer [chunk, N, K] by one launch
 *       a chunk and quant format; one grouped bf16 × bf16 product a chunk, f32 accumulation. cuBLAS
 *       documents only a bf16 output for bf16 inputs of the grouped call: the first call tries an f32
 *       output and, if cuBLAS refuses it, every call writes bf16 rows into the first half of the f32
 *       output rows (row stride 2·N) and widens them in place with one launch a call.</li>
 *   <li>f32 experts (the experts' LoRA factors): one grouped f32 × f32 → f32 product over all of
 *       them, the rows as they are, no conversion and no buffer (the same arithmetic as the f32 cuBLAS
 *       product of a single matrix).</li>
 * </ul>
 * The bf16 products of a chunk go by default to one batched cuBLAS call of one size
 * ({@code cublasGemmBatchedEx}, f32 output): each expert's rows cut into tiles of {@link #TILE_ROWS}
 * rows ({@code -Dorbit.cuda.expertTile=N}; 0 selects the grouped call), every tile of the chunk one
 * product. An expert's last, partial tile is computed whole into a pad buffer {@code [chunk, T, outCols]}
 * (its rows past the expert's end read the rows that follow, kept in bounds by T rows of slack in the
 * bf16 staging) and its own rows copied (or, accumulating, added) into the output by one launch a chunk;
 * the full tiles accumulate with β = 1. cuBLAS runs one problem size far
 * faster than the grouped call's mixed sizes (1.4-1.8× at the Qwen3-30B-A3B training shape, MoeBaseOpsBench).
 * With more than one chunk, the buffer has two halves and the next chunk's dequantization runs on the
 * context's side stream while the current chunk's products run ({@code -Dorbit.cuda.dequantOverlap=off}:
 * one half, in turn on the one stream); the op joins the side stream back before it returns.
 *
 * <p>Every device pointer a call needs (rows, weights, outputs, the dequantization table) is written into
 * one host table and uploaded by one copy a call.
 */
final class CudaExpertGemm {
    private static final int WIDEN_BLOCK = 256;
    /** Widest output row widened in place: 2·N bytes of shared memory a block. */
    static final int MAX_WIDEN_COLS = 24 * 1024;
    private static final int TABLE_ENTRY = 4;   // u64 words a dequantization entry: codes, scales, zeros, slot | global
    private static final int COPY_ENTRY = 3;    // u64 words a partial tile's copy: source, destination, rows
    /** Rows a tile of the batched expert products takes by default. */
    static final int TILE_ROWS = 256;

    private final CudaContext ctx;
    private final CudaRowOps rowOps;
    private final GroupedGemm grouped;
    private final EnumMap<QuantLayout, Kernel> dequant = new EnumMap<>(QuantLayout.class);
    private final Kernel widen;
    private final Kernel copyTileRows;
    private Boolean bf16InF32Out;    // whether cuBLAS's grouped call takes bf16 inputs with an f32 output; null until tried
    private Tensor rowsIn;           // bf16 [P, inCols], grown on demand
    private Tensor buffer;           // bf16 [chunk, N, K], grown on demand
    private Tensor pad;              // f32 [chunk, T, outCols]: the partial tiles, grown on demand
    private Lane lane;               // created on the first overlapped call
    private final DeviceTable table;  // the call's pointer table, written on the host, one copy a call

    CudaExpertGemm(CudaContext ctx, CudaRowOps rowOps) {
        this.ctx = ctx;
        this.rowOps = rowOps;
        this.grouped = new GroupedGemm(ctx.cublas);
        this.table = new DeviceTable(ctx, "expert pointer table");
        for (QuantLayout l : QuantLayout.values()) {
            dequant.put(l, ctx.kernel("quant", "dequant_experts_" + l.kernelSuffix()));
        }
        this.widen = ctx.kernel("moe_train", "moe_widen_bf16_rows");
        this.copyTileRows = ctx.kernel("moe_train", "moe_copy_tile_rows");
    }

    /** Whether the grouped bf16 products write f32 directly (true), through bf16 rows (false), or are not tried yet (null). */
    Boolean bf16InF32Out() {
        return bf16InF32Out;
    }

    /**
     * Whether every row, weight and output of the grouped products starts on a 16-byte boundary (the
     * vectorised tensor-core kernels cuBLAS picks for a pointer array assume it): the row widths and the
     * weight width multiples of 8 values, the tensors 16-byte aligned. The caller takes the per-expert
     * products otherwise.
     */
    static boolean aligned(Tensor in, ExpertWeights w, Tensor out) {
        if (w.rows() % 8 != 0 || w.cols() % 8 != 0 || CudaAllocator.address(in) % 16 != 0 || CudaAllocator.address(out) % 16 != 0) {
            return false;
        }
        for (int e = 0; e < w.experts(); e++) {
            if (w.dense(e) != null && CudaAllocator.address(w.dense(e)) % 16 != 0) {
                return false;
            }
        }
        return true;
    }

    /** {@link #aligned(Tensor, ExpertWeights, Tensor)} for the weight gradients: widths multiples of 4 f32 values. */
    static boolean aligned(Tensor dys, Tensor xs, Tensor[] grads) {
        if (dys.size(-1) % 4 != 0 || xs.size(-1) % 4 != 0 || CudaAllocator.address(dys) % 16 != 0 || CudaAllocator.address(xs) % 16 != 0) {
            return false;
        }
        for (Tensor g : grads) {
            if (g != null && CudaAllocator.address(g) % 16 != 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * Forward ({@code transposed} false): out rows of expert e = in rows · W_eᵀ; transposed: out rows =
     * in rows · W_e. Quantized experts need {@code chunk} ≥ 1 (the caller takes the per-expert quantized
     * products otherwise); for dense experts chunk does not matter.
     */
    void matmul(Tensor in, ExpertWeights w, int[] offsets, Tensor out, int chunk, boolean transposed) {
        matmul(in, w, offsets, out, chunk, transposed, 1f, false);
    }

    /**
     * Whether {@link #matmul(Tensor, ExpertWeights, int[], Tensor, int, boolean, float, boolean)} can
     * accumulate into its output: the batched tiles are on, the output rows a multiple of 4 values, and
     * every expert with rows bf16 or quantized.
     */
    static boolean accumulates(ExpertWeights w, int[] offsets, boolean transposed) {
        if (tileRows() == 0 || (transposed ? w.cols() : w.rows()) % 4 != 0) {
            return false;
        }
        for (int e = 0; e < w.experts(); e++) {
            if (offsets[e + 1] > offsets[e] && w.quantized(e) == null && w.dense(e).dtype() != DType.BF16) {
                return false;
            }
        }
        return true;
    }

    /**
     * As {@link #matmul(Tensor, ExpertWeights, int[], Tensor, int, boolean)}, the products scaled by
     * {@code alpha}; {@code accumulate}: added to the output's values (only where {@link #accumulates}).
     */
    void matmul(Tensor in, ExpertWeights w, int[] offsets, Tensor out, int chunk, boolean transposed, float alpha, boolean accumulate) {
        matmul(in, w, offsets, out, chunk, transposed, alpha, accumulate, false);
    }

    /**
     * Whether {@link #matmulShared} takes these forward products: the batched tiles are on, every expert with rows is
     * bf16 or quantized (quantized ones with a chunk of at least 1), the outputs' rows a multiple of 4 values, and the
     * operands on 16-byte boundaries.
     */
    static boolean sharesRows(Tensor in, ExpertWeights[] ws, int[] offsets, Tensor[] outs, int chunk) {
        if (tileRows() == 0 || ws.length != outs.length) {
            return false;
        }
        for (int i = 0; i < ws.length; i++) {
            ExpertWeights w = ws[i];
            if (w.rows() % 4 != 0 || !aligned(in, w, outs[i]) || offsets.length != w.experts() + 1) {
                return false;
            }
            for (int e = 0; e < w.experts(); e++) {
                if (offsets[e + 1] > offsets[e] && (w.quantized(e) == null ? w.dense(e).dtype() != DType.BF16 : chunk <= 0)) {
                    return false;
                }
            }
        }
        return true;
    }

    /**
     * outs[i] rows of expert e = in rows · ws[i]_eᵀ, the forward products of expert sets that read the same rows (gate and
     * up): the rows rounded to bf16 once for all of them, then each set's batched tiles as {@link #matmul}'s (the same
     * bits). Only where {@link #sharesRows} holds.
     */
    void matmulShared(Tensor in, ExpertWeights[] ws, int[] offsets, Tensor[] outs, int chunk) {
        for (int i = 0; i < ws.length; i++) {   // each call checks in against its set's input columns
            matmul(in, ws[i], offsets, outs[i], chunk, false, 1f, false, i > 0);
        }
    }

    /** As above; {@code rowsReady}: the rows are already in {@link #rowsIn} as bf16 (the call before took the same rows). */
    private void matmul(Tensor in, ExpertWeights w, int[] offsets, Tensor out, int chunk, boolean transposed, float alpha,
                        boolean accumulate, boolean rowsReady) {
        String op = transposed ? "moeExpertMatmulTransposed" : "moeExpertMatmul";
        if (accumulate && !accumulates(w, offsets, transposed)) {
            throw new IllegalArgumentException(op + ": accumulating products need the batched tiles and bf16 or quantized experts");
        }
        w.requireHeld(op, offsets);
        ctx.devContiguous(op + " in", in, DType.F32);
        ctx.devContiguous(op + " out", out, DType.F32);
        int n = w.rows();
        int k = w.cols();
        int inCols = transposed ? n : k;
        int outCols = transposed ? k : n;
        int p = offsets[w.experts()];
        if (in.size(-1) != inCols || in.numel() != (long) p * inCols || out.size(-1) != outCols || out.numel() != (long) p * outCols) {
            throw new IllegalArgumentException(op + ": " + p + " grouped rows " + in + " -> " + out + " for experts [" + n + ", " + k + "]");
        }
        List<Integer> narrow = new ArrayList<>();   // quantized or bf16: bf16 products
        List<Integer> wide = new ArrayList<>();     // f32: f32 products
        int quantized = 0;
        for (int e = 0; e < w.experts(); e++) {
            if (offsets[e + 1] == offsets[e]) {
                continue;
            }
            QuantizedTensor q = w.quantized(e);
            if (q != null) {
                QuantLayout.of(q, ctx);
                narrow.add(e);
                quantized++;
            } else if (w.dense(e).dtype() == DType.BF16) {
                ctx.devContiguous(op + " expert " + e, w.dense(e), DType.BF16);
                narrow.add(e);
            } else {
                ctx.devContiguous(op + " expert " + e, w.dense(e), DType.F32);
                wide.add(e);
            }
        }
        if (quantized > 0 && chunk <= 0) {
            throw new IllegalArgumentException(op + ": quantized experts need a chunk of at least 1, got " + chunk);
        }
        int tile = tileRows();
        if (!narrow.isEmpty() && tile > 0 && outCols % 4 == 0) {
            tiled(op, transposed, in, w, offsets, out, narrow, quantized == 0 ? narrow.size() : Math.min(chunk, narrow.size()), tile,
                    alpha, accumulate, rowsReady);
            narrow.clear();
            quantized = 0;
        }
        if (!narrow.isEmpty() && !Boolean.TRUE.equals(bf16InF32Out) && outCols > MAX_WIDEN_COLS) {
            throw new IllegalArgumentException(op + ": output rows of " + outCols + " values exceed the " + MAX_WIDEN_COLS
                    + " the in-place bf16 widening takes");
        }
        if (narrow.isEmpty() && wide.isEmpty()) {
            return;
        }
        // the narrow experts in chunks of c (all at once when none is quantized: no buffer is needed)
        int c = quantized == 0 ? Math.max(1, narrow.size()) : Math.min(chunk, narrow.size());
        long entries = 3L * narrow.size() + (long) TABLE_ENTRY * quantized + 3L * wide.size();
        MemorySegment h = table.host(entries);
        long xBase = 0;
        if (!narrow.isEmpty()) {
            rowsIn = grown(rowsIn, MemoryCategory.ACTIVATIONS, DType.BF16, (long) p * inCols);
            Tensor xs = rowsIn.slice(0, 0, (long) p * inCols);           // bf16 [P, inCols]
            rowOps.toBf16(in, xs, (long) p * inCols);
            xBase = CudaAllocator.address(xs);
        }
        if (quantized > 0) {
            buffer = grown(buffer, MemoryCategory.DEQUANT_BUFFERS, DType.BF16, (long) c * n * k);
        }
        long bufBase = quantized > 0 ? CudaAllocator.address(buffer) : 0;
        long yBase = CudaAllocator.address(out);
        // table: per chunk [A g][B g][C g][dequantization entries, grouped by format]; then the f32 experts' [A][B][C]
        long at = 0;
        for (int start = 0; start < narrow.size(); start += c) {
            int g = Math.min(narrow.size(), start + c) - start;
            for (int j = 0; j < g; j++) {
                int e = narrow.get(start + j);
                QuantizedTensor q = w.quantized(e);
                long wa = q != null ? bufBase + 2L * j * n * k : CudaAllocator.address(w.dense(e));
                h.setAtIndex(ValueLayout.JAVA_LONG, at + j, wa);
                h.setAtIndex(ValueLayout.JAVA_LONG, at + g + j, xBase + 2L * offsets[e] * inCols);
                h.setAtIndex(ValueLayout.JAVA_LONG, at + 2L * g + j, yBase + 4L * offsets[e] * outCols);
            }
            at = dequantEntries(h, at + 3L * g, w, narrow, start, g, new int[QuantLayout.values().length]);
        }
        for (int j = 0; j < wide.size(); j++) {
            int e = wide.get(j);
            h.setAtIndex(ValueLayout.JAVA_LONG, at + j, CudaAllocator.address(w.dense(e)));
            h.setAtIndex(ValueLayout.JAVA_LONG, at + wide.size() + j, CudaAllocator.address(in) + 4L * offsets[e] * inCols);
            h.setAtIndex(ValueLayout.JAVA_LONG, at + 2L * wide.size() + j, yBase + 4L * offsets[e] * outCols);
        }
        long tableBase = table.upload(h, entries);

        // cuBLAS is column-major: out rows [m, outCols] are C [outCols, m]; W [n, k] row-major is A [k, n] (lda k),
        // transposed for the forward product; the rows [m, inCols] are B [inCols, m].
        long t = tableBase;
        int[] ms = new int[Math.max(c, wide.size())];
        int[] ns = new int[ms.length];
        int[] ks = new int[ms.length];
        int[] lda = new int[ms.length];
        int[] ldb = new int[ms.length];
        int[] ldc = new int[ms.length];
        Arrays.fill(ms, outCols);
        Arrays.fill(ks, inCols);
        Arrays.fill(lda, k);
        Arrays.fill(ldb, inCols);
        for (int start = 0; start < narrow.size(); start += c) {
            int g = Math.min(narrow.size(), start + c) - start;
            for (int j = 0; j < g; j++) {
                int e = narrow.get(start + j);
                ns[j] = offsets[e + 1] - offsets[e];
            }
            long entriesAt = t + 8L * 3 * g;
            for (QuantLayout l : QuantLayout.values()) {
                int count = 0;
                for (int j = 0; j < g; j++) {
                    QuantizedTensor q = w.quantized(narrow.get(start + j));
                    if (q != null && QuantLayout.of(q, ctx) == l) {
                        count++;
                    }
                }
                if (count > 0) {
                    long gridX = Math.max(1, ctx.gridFor((long) n * k / 8, 256) / count);
                    ctx.launch2d(dequant.get(l), gridX, count, 256, entriesAt, buffer, n, k);
                    entriesAt += 8L * TABLE_ENTRY * count;
                }
            }
            narrowProduct(op, transposed, g, ms, ns, ks, lda, ldb, ldc, outCols, t, t + 8L * g, t + 16L * g);
            t = entriesAt;
        }
        if (!narrow.isEmpty() && !bf16InF32Out) {
            ctx.launchShared(widen, p, WIDEN_BLOCK, 2 * outCols, out, outCols);   // f32 experts' rows are written below
        }
        if (!wide.isEmpty()) {
            int g = wide.size();
            for (int j = 0; j < g; j++) {
                int e = wide.get(j);
                ns[j] = offsets[e + 1] - offsets[e];
            }
            Arrays.fill(ldc, outCols);
            grouped.check(op + ", f32 experts", !transposed, false, g, ms, ns, ks, lda, ldb, ldc, 1f, 0f,
                    t, CUDA_R_32F, t + 8L * g, CUDA_R_32F, t + 16L * g, CUDA_R_32F);
        }
    }

    /** Rows a tile of the batched products: {@code orbit.cuda.expertTile}, 0 for cuBLAS's grouped call. */
    static int tileRows() {
        int t = Integer.getInteger("orbit.cuda.expertTile", TILE_ROWS);
        if (t < 0 || t % 8 != 0) {
            throw new IllegalArgumentException("orbit.cuda.expertTile: expected 0 or a positive multiple of 8 rows, got " + t);
        }
        return t;
    }

    /**
     * The bf16 experts' products in chunks of {@code c} as batched products of {@code tile} rows (see the
     * class comment): per chunk, the chunk's dequantization, one batched product over every tile of its
     * experts, one copy of the partial tiles' rows out of the pad.
     */
    private void tiled(String op, boolean transposed, Tensor in, ExpertWeights w, int[] offsets, Tensor out, List<Integer> narrow,
                       int c, int tile, float alpha, boolean accumulate, boolean rowsReady) {
        int n = w.rows();
        int k = w.cols();
        int inCols = transposed ? n : k;
        int outCols = transposed ? k : n;
        int p = offsets[w.experts()];
        boolean anyQuantized = false;
        long entries = 0;
        int chunks = (narrow.size() + c - 1) / c;
        int[] tilesOf = new int[chunks];   // per chunk: its tiles, and how many of them are full
        int[] fullOf = new int[chunks];
        for (int i = 0; i < chunks; i++) {
            int start = i * c;
            int g = Math.min(narrow.size(), start + c) - start;
            int quantized = 0;
            for (int j = 0; j < g; j++) {
                int e = narrow.get(start + j);
                int rows = offsets[e + 1] - offsets[e];
                tilesOf[i] += (rows + tile - 1) / tile;
                fullOf[i] += rows / tile;
                quantized += w.quantized(e) != null ? 1 : 0;
            }
            anyQuantized |= quantized > 0;
            entries += 3L * tilesOf[i] + (long) TABLE_ENTRY * quantized + (long) COPY_ENTRY * (tilesOf[i] - fullOf[i]);
        }
        if (rowsReady) {
            if (rowsIn == null || rowsIn.numel() < (long) (p + tile) * inCols) {
                throw new IllegalStateException(op + ": the shared rows are not staged");
            }
        } else {
            rowsIn = grown(rowsIn, MemoryCategory.ACTIVATIONS, DType.BF16, (long) (p + tile) * inCols);  // tile rows of slack
            rowOps.toBf16(in, rowsIn.slice(0, 0, (long) p * inCols), (long) p * inCols);
        }
        long xBase = CudaAllocator.address(rowsIn);
        boolean overlap = anyQuantized && narrow.size() > c && overlapDequantization();
        long half = 2L * c * n * k;   // bytes of one chunk's experts in bf16
        if (anyQuantized) {
            buffer = grown(buffer, MemoryCategory.DEQUANT_BUFFERS, DType.BF16, (overlap ? 2L : 1L) * c * n * k);
        }
        pad = grown(pad, MemoryCategory.DEQUANT_BUFFERS, DType.F32, (long) c * tile * outCols);
        long bufBase = anyQuantized ? CudaAllocator.address(buffer) : 0;
        long padBase = CudaAllocator.address(pad);
        long yBase = CudaAllocator.address(out);
        MemorySegment h = table.host(entries);
        // per chunk: [A tiles][B tiles][C tiles] (the full tiles first, then the partial ones), the
        // dequantization entries grouped by format, the partial tiles' copies
        long at = 0;
        int[][] layout = new int[chunks][];   // per chunk: tiles, then entries per format, then partial tiles
        for (int start = 0, chunkIndex = 0; start < narrow.size(); start += c, chunkIndex++) {
            int g = Math.min(narrow.size(), start + c) - start;
            int tiles = tilesOf[chunkIndex];
            int full = fullOf[chunkIndex];
            long afterTiles = at + 3L * tiles;
            int t = 0;              // the next full tile's index
            int partial = 0;        // partial tiles so far, at full + partial
            for (int j = 0; j < g; j++) {
                int e = narrow.get(start + j);
                QuantizedTensor q = w.quantized(e);
                long wa = q != null ? bufBase + (overlap ? (chunkIndex & 1) * half : 0) + 2L * j * n * k : CudaAllocator.address(w.dense(e));
                for (int r = offsets[e]; r < offsets[e + 1]; r += tile) {
                    int rows = Math.min(tile, offsets[e + 1] - r);
                    int i = rows < tile ? full + partial++ : t++;
                    h.setAtIndex(ValueLayout.JAVA_LONG, at + i, wa);
                    h.setAtIndex(ValueLayout.JAVA_LONG, at + tiles + i, xBase + 2L * r * inCols);
                    long c0 = rows < tile ? padBase + 4L * j * tile * outCols : yBase + 4L * r * outCols;
                    h.setAtIndex(ValueLayout.JAVA_LONG, at + 2L * tiles + i, c0);
                }
            }
            int[] counts = new int[QuantLayout.values().length];
            at = dequantEntries(h, afterTiles, w, narrow, start, g, counts);
            for (int j = 0; j < g; j++) {
                int e = narrow.get(start + j);
                int rows = (offsets[e + 1] - offsets[e]) % tile;
                if (rows != 0) {
                    int last = offsets[e + 1] - rows;
                    copyEntry(h, at, padBase + 4L * j * tile * outCols, yBase + 4L * last * outCols, rows);
                    at += COPY_ENTRY;
                }
            }
            int[] l = new int[counts.length + 2];
            l[0] = tiles;
            System.arraycopy(counts, 0, l, 1, counts.length);
            l[l.length - 1] = partial;    // the partial tiles: the last of the chunk's tiles
            layout[chunkIndex] = l;
        }
        long base = table.upload(h, entries);
        CudaStream side = overlap ? ctx.sideStream() : ctx.stream;
        if (overlap) {
            lane().fork.record(ctx.stream);   // after the table's upload
            lane().fork.waitOn(side);
        }
        long t = base;
        for (int i = 0; i < layout.length; i++) {
            int[] l = layout[i];
            int tiles = l[0];
            long entriesAt = t + 8L * 3 * tiles;
            int b = i & 1;
            boolean dequantized = false;
            for (QuantLayout ql : QuantLayout.values()) {
                int count = l[1 + ql.ordinal()];
                if (count > 0) {
                    if (overlap && !dequantized && i >= 2) {
                        lane().free[b].waitOn(side);   // the products of chunk i - 2 are done with this half
                    }
                    dequantized = true;
                    long gridX = Math.max(1, ctx.gridFor((long) n * k / 8, 256) / count);
                    Launcher.launch(dequant.get(ql), side.handle(), gridX, count, 256, 0, entriesAt,
                            bufBase + (overlap ? b * half : 0), n, k);
                    entriesAt += 8L * TABLE_ENTRY * count;
                }
            }
            if (overlap && dequantized) {
                lane().ready[b].record(side);
                lane().ready[b].waitOn(ctx.stream);
            }
            // column-major as in matmul: C [outCols, tile] = op(W as [k, n]) · rows as [inCols, tile]; accumulating,
            // the full tiles add into the output (β = 1) and the partial ones go to the pad (β = 0) by a second call
            int partial = l[l.length - 1];
            int first = accumulate ? tiles - partial : tiles;
            if (first > 0) {
                ctx.cublas.gemmBatchedBf16(!transposed, outCols, tile, inCols, alpha, t, k, t + 8L * tiles, inCols, accumulate ? 1f : 0f,
                        t + 16L * tiles, outCols, first);
            }
            if (first < tiles) {
                long skip = 8L * first;
                ctx.cublas.gemmBatchedBf16(!transposed, outCols, tile, inCols, alpha, t + skip, k, t + 8L * tiles + skip, inCols, 0f,
                        t + 16L * tiles + skip, outCols, tiles - first);
            }
            if (overlap) {
                lane().free[b].record(ctx.stream);
            }
            if (partial > 0) {
                long gridX = Math.max(1, Math.min(ctx.gridFor((long) tile * outCols / 4, 256), ctx.gridFor((long) p * outCols / 4, 256)));
                ctx.launch2d(copyTileRows, gridX, partial, 256, entriesAt, outCols, accumulate ? 1 : 0);
                entriesAt += 8L * COPY_ENTRY * partial;
            }
            t = entriesAt;
        }
    }

    /** Whether a chunk's dequantization overlaps the previous chunk's products ({@code orbit.cuda.dequantOverlap}, default on). */
    static boolean overlapDequantization() {
        return !"off".equals(System.getProperty("orbit.cuda.dequantOverlap"));
    }

    /** The events of the overlapped dequantization: the fork, and per buffer half its ready and free points. */
    private record Lane(CudaEvent fork, CudaEvent[] ready, CudaEvent[] free) {
    }

    private Lane lane() {
        if (lane == null) {
            lane = new Lane(ctx.event(), new CudaEvent[]{ctx.event(), ctx.event()}, new CudaEvent[]{ctx.event(), ctx.event()});
        }
        return lane;
    }

    /**
     * Writes the dequantization entries of the chunk's experts {@code narrow[start, start + g)} from word
     * {@code at}, grouped by format (one launch a format reads its run), each expert's slot its place j in
     * the chunk; adds each format's entries to {@code counts}; returns the word after them.
     */
    private long dequantEntries(MemorySegment h, long at, ExpertWeights w, List<Integer> narrow, int start, int g, int[] counts) {
        for (QuantLayout l : QuantLayout.values()) {
            for (int j = 0; j < g; j++) {
                QuantizedTensor q = w.quantized(narrow.get(start + j));
                if (q != null && QuantLayout.of(q, ctx) == l) {
                    h.setAtIndex(ValueLayout.JAVA_LONG, at, CudaAllocator.address(q.codes()));
                    h.setAtIndex(ValueLayout.JAVA_LONG, at + 1, CudaAllocator.address(q.scales()));
                    h.setAtIndex(ValueLayout.JAVA_LONG, at + 2, q.zeros() == null ? 0L : CudaAllocator.address(q.zeros()));
                    h.setAtIndex(ValueLayout.JAVA_LONG, at + 3, ((long) j << 32) | (Float.floatToRawIntBits(q.globalScale()) & 0xffffffffL));
                    at += TABLE_ENTRY;
                    counts[l.ordinal()]++;
                }
            }
        }
        return at;
    }

    private static void copyEntry(MemorySegment h, long at, long src, long dst, int rows) {
        h.setAtIndex(ValueLayout.JAVA_LONG, at, src);
        h.setAtIndex(ValueLayout.JAVA_LONG, at + 1, dst);
        h.setAtIndex(ValueLayout.JAVA_LONG, at + 2, rows);
    }

    /** One chunk's grouped bf16 product; the first one finds out whether cuBLAS writes f32 from bf16 inputs. */
    private void narrowProduct(String op, boolean transposed, int g, int[] ms, int[] ns, int[] ks, int[] lda, int[] ldb, int[] ldc,
                               int outCols, long aArray, long bArray, long cArray) {
        if (bf16InF32Out == null || bf16InF32Out) {
            Arrays.fill(ldc, outCols);
            int status = grouped.run(!transposed, false, g, ms, ns, ks, lda, ldb, ldc, 1f, 0f,
                    aArray, CUDA_R_16BF, bArray, CUDA_R_16BF, cArray, CUDA_R_32F);
            if (status == 0) {
                bf16InF32Out = true;
                return;
            }
            if (bf16InF32Out != null) {
                CudaCheck.cublas(status, "cublasGemmGroupedBatchedEx (" + op + ", bf16 -> f32)", g + " groups");
            }
            bf16InF32Out = false;
        }
        Arrays.fill(ldc, 2 * outCols);   // bf16 rows in the first half of each f32 output row
        grouped.check(op + ", bf16", !transposed, false, g, ms, ns, ks, lda, ldb, ldc, 1f, 0f,
                aArray, CUDA_R_16BF, bArray, CUDA_R_16BF, cArray, CUDA_R_16BF);
    }

    /**
     * Per expert over its grouped rows: grads[e] [N, K] += scale · dys_eᵀ [N, m] · xs_e [m, K], f32
     * throughout, one grouped f32 product over every expert with rows.
     */
    void weightGrad(Tensor dys, Tensor xs, int[] offsets, float scale, Tensor[] grads) {
        String op = "moeExpertWeightGrad";
        ctx.devContiguous(op + " dys", dys, DType.F32);
        ctx.devContiguous(op + " xs", xs, DType.F32);
        int experts = grads.length;
        int n = dys.size(-1);
        int k = xs.size(-1);
        if (offsets.length != experts + 1) {
            throw new IllegalArgumentException(op + ": " + offsets.length + " offsets for " + experts + " gradients (expected E + 1)");
        }
        int p = offsets[experts];
        if (dys.numel() != (long) p * n || xs.numel() != (long) p * k) {
            throw new IllegalArgumentException(op + ": dys " + dys + " and xs " + xs + " must hold " + p + " grouped rows");
        }
        List<Integer> active = new ArrayList<>();
        for (int e = 0; e < experts; e++) {
            if (offsets[e + 1] > offsets[e]) {
                Tensor gr = grads[e];
                if (gr == null || gr.rank() != 2 || gr.dim(0) != n || gr.dim(1) != k) {
                    throw new IllegalArgumentException(op + ": expert " + e + " has " + (offsets[e + 1] - offsets[e])
                            + " rows but its gradient is " + gr + ", expected f32 [" + n + ", " + k + "]");
                }
                ctx.devContiguous(op + " gradient of expert " + e, gr, DType.F32);
                active.add(e);
            }
        }
        if (active.isEmpty() || n == 0 || k == 0) {
            return;
        }
        int g = active.size();
        MemorySegment h = table.host(3L * g);
        int[] ms = new int[g];
        int[] ns = new int[g];
        int[] ks = new int[g];
        int[] lda = new int[g];
        int[] ldb = new int[g];
        int[] ldc = new int[g];
        for (int j = 0; j < g; j++) {
            int e = active.get(j);
            h.setAtIndex(ValueLayout.JAVA_LONG, j, CudaAllocator.address(xs) + 4L * offsets[e] * k);
            h.setAtIndex(ValueLayout.JAVA_LONG, g + j, CudaAllocator.address(dys) + 4L * offsets[e] * n);
            h.setAtIndex(ValueLayout.JAVA_LONG, 2L * g + j, CudaAllocator.address(grads[e]));
            // column-major: gradᵀ [K, N] (ldc K) += xs_e as [K, m] (lda K) · (dys_e as [N, m] (ldb N))ᵀ
            ms[j] = k;
            ns[j] = n;
            ks[j] = offsets[e + 1] - offsets[e];
            lda[j] = k;
            ldb[j] = n;
            ldc[j] = k;
        }
        long t = table.upload(h, 3L * g);
        grouped.check(op, false, true, g, ms, ns, ks, lda, ldb, ldc, scale, 1f,
                t, CUDA_R_32F, t + 8L * g, CUDA_R_32F, t + 16L * g, CUDA_R_32F);
    }

    /** {@code current} if it holds {@code elements} values of {@code dtype}, else a new buffer (the old one freed). */
    private Tensor grown(Tensor current, MemoryCategory category, DType dtype, long elements) {
        if (current != null && current.dtype() == dtype && current.numel() >= elements) {
            return current;
        }
        if (current != null) {
            ctx.allocator.free(current);
        }
        return ctx.allocator.allocate(category, dtype, Math.max(elements, 1024));
    }
}
