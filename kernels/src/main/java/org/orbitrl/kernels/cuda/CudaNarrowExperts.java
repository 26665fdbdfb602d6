package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;


/**
 * The f32 expert products of the grouped mixture-of-experts block where one side is narrow (the
 * experts' LoRA factors: rank r ≤ {@value #NARROW}), by the tensor-core kernels of
 * {@code moe_lora_tc.cu} (3xTF32: f32 accuracy) where the operands allow 16-byte copies, else by the
 * f32 kernels of {@code moe_lora.cu}:
 * <ul>
 *   <li>{@link #matmul}: every expert's rows in tiles of 128 rows × 32 output columns, one launch for
 *       all experts; the wide operand (the [P, hidden] rows or the [P, hidden] output) is streamed once,
 *       and the output may be accumulated ({@code out = alpha·product + beta·out}), which saves the
 *       product's temporary and the separate axpy. Expert sets that read the same rows (the gate's and the up's
 *       A) go in one launch, each row tile streamed from memory once for all of them.</li>
 *   <li>{@link #weightGrad}: grads[e] += scale·dys_eᵀ·xs_e, one block a 32 × 128 tile of an expert's
 *       gradient summing over the expert's rows in a fixed order (no atomics: deterministic).</li>
 * </ul>
 * {@code moe_lora.cu}: f32 arithmetic throughout (fused multiply-add), the sums over the inner
 * dimension in ascending order. {@code moe_lora_tc.cu}: each f32 operand split into two tf32 parts
 * (hi + lo) and three mma.sync products a step, f32 accumulation; it takes the products whose wide
 * operand has a multiple of 4 columns and the gradients whose operands both do, all 16-byte aligned.
 * Both are deterministic (fixed summation order, no atomics). The per-call table (expert pointers and
 * row tiles) is uploaded by one copy a call.
 */
final class CudaNarrowExperts {
    /** Widest narrow side (rows or columns of the expert matrices) these kernels take. */
    static final int NARROW = 128;
    /**
     * {@code -Dorbit.cuda.moeLora=f32}: always the f32 kernels of {@code moe_lora.cu} instead of the
     * tensor-core ones. Read at every call (tests and benchmarks compare both).
     */
    static final String KERNELS_PROPERTY = "orbit.cuda.moeLora";
    private static final int TILE_ROWS = 128;
    private static final int TILE_COLS = 32;
    private static final int GRAD_B = 128;
    private static final int THREADS = 256;

    private final CudaContext ctx;
    private final Kernel gemm;
    private final Kernel wgrad;
    private final Kernel gemmTc;
    private final Kernel wgradTc;
    private final DeviceTable table;  // the call's expert pointers and row tiles, one copy a call

    CudaNarrowExperts(CudaContext ctx) {
        this.ctx = ctx;
        this.gemm = ctx.kernel("moe_lora", "moe_rows_gemm");
        this.wgrad = ctx.kernel("moe_lora", "moe_rows_wgrad");
        this.gemmTc = ctx.kernel("moe_lora_tc", "moe_rows_gemm_tc");
        this.wgradTc = ctx.kernel("moe_lora_tc", "moe_rows_wgrad_tc");
        this.table = new DeviceTable(ctx, "narrow expert table");
    }

    /** Whether every expert with rows is a dense f32 matrix and one side of the experts is narrow. */
    static boolean handles(ExpertWeights w, int[] offsets) {
        if (Math.min(w.rows(), w.cols()) > NARROW || offsets.length != w.experts() + 1) {
            return false;
        }
        for (int e = 0; e < w.experts(); e++) {
            if (offsets[e + 1] > offsets[e] && (w.quantized(e) != null || w.dense(e) == null || w.dense(e).dtype() != DType.F32)) {
                return false;
            }
        }
        return true;
    }

    /** Whether the weight gradient has a narrow side (dys [P, N], xs [P, K]). */
    static boolean handlesGrad(Tensor dys, Tensor xs) {
        return Math.min(dys.size(-1), xs.size(-1)) <= NARROW;
    }

    /**
     * out [P, outCols] = alpha · (in [P, inCols] rows of expert e) · W_eᵀ (forward) or · W_e
     * (transposed) + beta · out; beta 0 overwrites out without reading it. Experts [N, K] dense f32.
     */
    void matmul(String op, Tensor in, ExpertWeights w, int[] offsets, Tensor out, boolean transposed, float alpha, float beta) {
        matmul(op, in, new ExpertWeights[]{w}, offsets, new Tensor[]{out}, transposed, alpha, beta);
    }

    /**
     * {@link #matmul(String, Tensor, ExpertWeights, int[], Tensor, boolean, float, float)} for each expert set of {@code ws}
     * (all of one shape) into its output of {@code outs}: the forward products of sets that read the same rows (the gate's
     * and the up's A) in one launch of the tensor-core kernel, each row tile streamed from memory once for all of them; a
     * launch a set where that kernel does not take them. The same bits as a call a set.
     */
    void matmul(String op, Tensor in, ExpertWeights[] ws, int[] offsets, Tensor[] outs, boolean transposed, float alpha, float beta) {
        int sets = ws.length;
        if (sets == 0 || outs.length != sets) {
            throw new IllegalArgumentException(op + ": " + sets + " expert sets for " + outs.length + " outputs");
        }
        ctx.devContiguous(op + " in", in, DType.F32);
        int n = ws[0].rows();
        int k = ws[0].cols();
        int inCols = transposed ? n : k;
        int outCols = transposed ? k : n;
        int experts = ws[0].experts();
        int p = offsets[experts];
        for (int s = 0; s < sets; s++) {
            ExpertWeights w = ws[s];
            w.requireHeld(op, offsets);
            ctx.devContiguous(op + " out", outs[s], DType.F32);
            if (w.rows() != n || w.cols() != k || w.experts() != experts) {
                throw new IllegalArgumentException(op + ": expert sets [" + n + ", " + k + "] x " + experts + " and [" + w.rows() + ", "
                        + w.cols() + "] x " + w.experts() + " do not share their rows");
            }
            if (in.size(-1) != inCols || in.numel() != (long) p * inCols || outs[s].size(-1) != outCols
                    || outs[s].numel() != (long) p * outCols) {
                throw new IllegalArgumentException(op + ": " + p + " grouped rows " + in + " -> " + outs[s] + " for experts [" + n + ", "
                        + k + "]");
            }
        }
        int tiles = 0;
        for (int e = 0; e < experts; e++) {
            int rows = offsets[e + 1] - offsets[e];
            if (rows < 0) {
                throw new IllegalArgumentException(op + ": offsets must not decrease, expert " + e + " has " + offsets[e] + " .. " + offsets[e + 1]);
            }
            if (rows > 0) {
                for (ExpertWeights w : ws) {
                    ctx.devContiguous(op + " expert " + e, w.dense(e), DType.F32);
                }
                tiles += (rows + TILE_ROWS - 1) / TILE_ROWS;
            }
        }
        if (tiles == 0 || outCols == 0) {
            return;
        }
        boolean vecAll = outCols % 4 == 0;
        for (Tensor out : outs) {
            vecAll &= CudaAllocator.address(out) % 16 == 0;
        }
        int vec = vecAll ? 1 : 0;
        boolean tc = tensorCores() && inCols > 0 && inCols % 4 == 0 && CudaAllocator.address(in) % 16 == 0;
        if (sets > 1 && !tc) {   // one set a launch
            for (int s = 0; s < sets; s++) {
                matmul(op, in, new ExpertWeights[]{ws[s]}, offsets, new Tensor[]{outs[s]}, transposed, alpha, beta);
            }
            return;
        }
        // table: [sets, experts] weight addresses (u64), [sets] output addresses, then [tiles, 3] i32 (expert, first row,
        // rows) packed two a word
        long tileWords = (3L * tiles + 1) / 2;
        long head = (long) sets * experts + sets;
        MemorySegment h = table.host(head + tileWords);
        long tileBytes = 8L * head;
        int t = 0;
        for (int e = 0; e < experts; e++) {
            int rows = offsets[e + 1] - offsets[e];
            for (int s = 0; s < sets; s++) {
                h.setAtIndex(ValueLayout.JAVA_LONG, (long) s * experts + e, rows > 0 ? CudaAllocator.address(ws[s].dense(e)) : 0L);
            }
            for (int r = 0; r < rows; r += TILE_ROWS) {
                h.set(ValueLayout.JAVA_INT, tileBytes + 12L * t, e);
                h.set(ValueLayout.JAVA_INT, tileBytes + 12L * t + 4, offsets[e] + r);
                h.set(ValueLayout.JAVA_INT, tileBytes + 12L * t + 8, Math.min(TILE_ROWS, rows - r));
                t++;
            }
        }
        for (int s = 0; s < sets; s++) {
            h.setAtIndex(ValueLayout.JAVA_LONG, (long) sets * experts + s, CudaAllocator.address(outs[s]));
        }
        long base = table.upload(h, head + tileWords);
        long outsAt = base + 8L * sets * experts;
        Tensor out = outs[0];
        // W'(c, i) of the kernel: output column c, inner index i. Forward: W_e[c][i] (row stride K);
        // transposed: W_e[i][c] (column c of W_e, inner stride K).
        long wsn = transposed ? 1L : k;
        long wsk = transposed ? (long) k : 1L;
        int colTiles = (outCols + TILE_COLS - 1) / TILE_COLS;
        if (tc) {
            // one block a (row tile, set, column tile), the sets' column tiles of a row tile consecutive
            ctx.launch(gemmTc, (long) tiles * sets * colTiles, THREADS, in, inCols, base, experts, wsn, wsk, base + tileBytes, colTiles,
                    sets, outsAt, outCols, alpha, beta, vec);
        } else {
            ctx.launch2d(gemm, tiles, colTiles, THREADS, in, inCols, base, wsn, wsk, base + tileBytes, out, outCols, alpha, beta, vec);
        }
    }

    /** grads[e] [N, K] += scale · dys_eᵀ [N, m] · xs_e [m, K] over expert e's m rows (dys [P, N], xs [P, K]). */
    void weightGrad(String op, Tensor dys, Tensor xs, int[] offsets, float scale, Tensor[] grads) {
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
        int active = 0;
        for (int e = 0; e < experts; e++) {
            if (offsets[e + 1] > offsets[e]) {
                Tensor gr = grads[e];
                if (gr == null || gr.rank() != 2 || gr.dim(0) != n || gr.dim(1) != k) {
                    throw new IllegalArgumentException(op + ": expert " + e + " has " + (offsets[e + 1] - offsets[e])
                            + " rows but its gradient is " + gr + ", expected f32 [" + n + ", " + k + "]");
                }
                ctx.devContiguous(op + " gradient of expert " + e, gr, DType.F32);
                active++;
            }
        }
        if (active == 0 || n == 0 || k == 0) {
            return;
        }
        // the narrow side is the kernel's a (32 a tile), the wide side its b (128 a tile): G(a, b) at a·gsa + b·gsb
        boolean narrowN = n <= k;
        Tensor u = narrowN ? dys : xs;
        Tensor v = narrowN ? xs : dys;
        int aCols = narrowN ? n : k;
        int bCols = narrowN ? k : n;
        long gsa = narrowN ? k : 1L;
        long gsb = narrowN ? 1L : k;
        long listWords = (3L * active + 1) / 2;
        MemorySegment h = table.host(experts + listWords);
        long listBytes = 8L * experts;
        // the experts with the most rows first: their blocks run longest, so they start in the first wave
        Integer[] byRows = new Integer[active];
        int s = 0;
        for (int e = 0; e < experts; e++) {
            boolean has = offsets[e + 1] > offsets[e];
            h.setAtIndex(ValueLayout.JAVA_LONG, e, has ? CudaAllocator.address(grads[e]) : 0L);
            if (has) {
                byRows[s++] = e;
            }
        }
        Arrays.sort(byRows, (x, y) -> Integer.compare(offsets[y + 1] - offsets[y], offsets[x + 1] - offsets[x]));
        for (int j = 0; j < active; j++) {
            int e = byRows[j];
            h.set(ValueLayout.JAVA_INT, listBytes + 12L * j, e);
            h.set(ValueLayout.JAVA_INT, listBytes + 12L * j + 4, offsets[e]);
            h.set(ValueLayout.JAVA_INT, listBytes + 12L * j + 8, offsets[e + 1] - offsets[e]);
        }
        long base = table.upload(h, experts + listWords);
        int bTiles = (bCols + GRAD_B - 1) / GRAD_B;
        int aTiles = (aCols + TILE_COLS - 1) / TILE_COLS;
        boolean tc = tensorCores() && aCols % 4 == 0 && bCols % 4 == 0 && CudaAllocator.address(u) % 16 == 0
                && CudaAllocator.address(v) % 16 == 0;
        ctx.launch2d(tc ? wgradTc : wgrad, (long) active * bTiles, aTiles, THREADS, u, aCols, v, bCols, base + listBytes, bTiles, base,
                gsa, gsb, scale);
    }

    /** Whether the tensor-core kernels are on ({@value #KERNELS_PROPERTY} is not {@code f32}). */
    static boolean tensorCores() {
        return !"f32".equals(System.getProperty(KERNELS_PROPERTY));
    }
}
