package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.Fp8Block128;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * Dense and quantized {@code y = x · wᵀ} on the device.
 *
 * <p>Precision, by path:
 * <ul>
 *   <li>f32 weights: cuBLAS SGEMM-equivalent ({@code cublasGemmEx}, f32 in, f32 compute, no TF32).</li>
 *   <li>bf16 weights, at most {@value #QGEMV_MAX_ROWS} rows: the GEMV kernel ({@link CudaQgemv#launchBf16}), f32
 *       activations times the exact bf16 weight values, f32 accumulation.</li>
 *   <li>bf16 weights, more rows: activations rounded to bf16 (round to nearest even), then cuBLAS
 *       bf16 × bf16 with f32 accumulation and f32 output: each product carries a relative error of at
 *       most 2⁻⁸ from the rounding of x.</li>
 *   <li>Quantized weights, at most {@value #QGEMV_MAX_ROWS} rows: the fused dequantize-GEMV kernel
 *       ({@link CudaQgemv}); the weight values are exact in f32 and the arithmetic is f32.</li>
 *   <li>Quantized weights, more rows: the weight is dequantized into one reused bf16 buffer and
 *       multiplied through cuBLAS as above (both operands rounded to bf16, f32 accumulation). This is
 *       the building block of the expert-chunked path: the buffer is sized once and reused by every
 *       expert of a chunk.</li>
 * </ul>
 * Products with their LoRA terms folded in ({@code Backend#matmulLowRank}) are {@link CudaLowRankOps}'s, on the launches
 * here ({@link #launchNarrow3}, the GEMV, {@link #matmulAxpyF32}).
 */
final class CudaMatmulOps {
    /** Largest row count served by the GEMV kernels (GEMV_MAXM in quant.cu). */
    static final int GEMV_MAX_ROWS = 8;
    private static final int GEMV_BLOCK = 256; // 8 warps, one output column each

    /** Rows of x up to which quantized products take the fused GEMV ({@link CudaQgemv}). */
    static final int QGEMV_MAX_ROWS = 16;
    /**
     * Rows of x up to which an FP8 block weight's product is {@code gemv_fp8_block} (at most its FP8_GEMV_MAXM, 4;
     * {@code -Dorbit.cuda.fp8GemvRows=0} never), above them the weight dequantized to bf16 and the bf16 product.
     */
    static final int FP8_GEMV_MAX_ROWS = Math.min(4, Integer.getInteger("orbit.cuda.fp8GemvRows", 4));
    /** Output columns a warp of {@code gemv_fp8_block} takes at most (its FP8_GEMV_ROWS). */
    private static final int FP8_GEMV_COLUMNS = 4;
    /** {@code -Dorbit.cuda.qgemv=off} sends quantized products back to the first-generation GEMV kernels. */
    static final boolean QGEMV = !"off".equals(System.getProperty("orbit.cuda.qgemv"));

    /** Rows of x up to which products take a GEMV kernel (exact f32 activations) rather than cuBLAS on bf16-rounded x. */
    static int gemvRows() {
        return QGEMV ? QGEMV_MAX_ROWS : GEMV_MAX_ROWS;
    }

    /**
     * f32 products of at most this many rows against at most {@link #NARROW_MAX_N} f32 rows of w (a LoRA's A over a decode
     * batch) take {@code narrow_matmul_f32} (a row of w a warp, held in registers; batch-invariant f32 sums) rather than
     * cuBLAS's split-K pair of launches; {@code -Dorbit.cuda.narrowMatmul=off} (read at each call) keeps cuBLAS.
     */
    static final int NARROW_MAX_ROWS = 256;
    static final int NARROW_MAX_N = 64;

    private static boolean narrow() {
        return !"off".equals(System.getProperty("orbit.cuda.narrowMatmul"));
    }

    /**
     * x rows a block of the narrow products stages (mt; 1 to MA_ROWS = 8 in narrow.cuh), {@code -Dorbit.cuda.narrowRows=N}
     * (read at each call, 4 by default): fewer rows give more blocks (a decode batch of 8 rows fills 8 blocks at 4, 32 at
     * 1) and the same sums.
     */
    private static int narrowRows() {
        return Math.max(1, Math.min(8, Integer.getInteger("orbit.cuda.narrowRows", 4)));
    }

    private final CudaContext ctx;
    private final CudaRowOps rows;
    private final Kernel narrow;
    private final Kernel narrow3;
    final CudaQgemv qgemv;

    private final Kernel gemvBf16;
    private final Kernel widen;
    private final Kernel dequantFp8;
    private final Kernel gemvFp8;
    private final Kernel splitBf16;
    private final java.util.EnumMap<QuantLayout, Kernel> gemv = new java.util.EnumMap<>(QuantLayout.class);
    private final java.util.EnumMap<QuantLayout, Kernel> dequant = new java.util.EnumMap<>(QuantLayout.class);
    private final java.util.EnumMap<QuantLayout, Kernel> moeGemv = new java.util.EnumMap<>(QuantLayout.class);
    private final java.util.EnumMap<QuantLayout, Kernel> gemv1 = new java.util.EnumMap<>(QuantLayout.class);

    CudaMatmulOps(CudaContext ctx, CudaRowOps rows) {
        this.ctx = ctx;
        this.rows = rows;
        this.qgemv = new CudaQgemv(ctx);
        this.gemvBf16 = ctx.kernel("quant", "gemv_bf16");
        this.widen = ctx.kernel("elementwise", "bf16_to_f32_kernel");
        this.dequantFp8 = ctx.kernel("quant", "dequant_fp8_block");
        this.gemvFp8 = ctx.kernel("quant", "gemv_fp8_block");
        this.splitBf16 = ctx.kernel("elementwise", "split_bf16_f32");
        this.narrow = ctx.kernel("moe_pairs", "narrow_matmul_f32");
        this.narrow3 = ctx.kernel("moe_pairs", "narrow_matmul3_f32");
        for (QuantLayout l : QuantLayout.values()) {
            gemv.put(l, ctx.kernel("quant", "gemv_" + l.kernelSuffix()));
            dequant.put(l, ctx.kernel("quant", "dequant_" + l.kernelSuffix()));
            moeGemv.put(l, ctx.kernel("quant", "moe_gemv_" + l.kernelSuffix()));
            gemv1.put(l, ctx.kernel("quant", "gemv1_" + l.kernelSuffix()));
        }
    }

    void matmul(Tensor x, Tensor w, Tensor y) {
        ctx.devContiguous("matmul x", x, DType.F32);
        ctx.devContiguous("matmul y", y, DType.F32);
        ctx.devContiguous("matmul w", w, null);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        if (w.rank() != 2 || w.dim(1) != k || y.size(-1) != w.dim(0) || CudaContext.rows(y) != m) {
            throw new IllegalArgumentException("matmul: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        int n = w.size(0);
        if (m == 0 || n == 0) {
            return;
        }
        switch (w.dtype()) {
            case F32 -> {
                if (narrow() && m <= NARROW_MAX_ROWS && n <= NARROW_MAX_N && k > 0 && k % 4 == 0 && aligned16(x, w)) {
                    if (NarrowSplitK.takes(k)) {
                        NarrowSplitK.launch(ctx, narrow, x, w, y, m, n, k);   // a long K in splits
                    } else {
                        int stride = Math.min(k / 4, CudaMoePairs.LONG_K_PIECES);   // the 16-byte x pieces a row stages
                        int mt = narrowRows();
                        ctx.launch2dShared(narrow, (n + 7) / 8, (m + mt - 1) / mt, 256, 16 * mt * stride, x, w, y, m, n, k, mt,
                                1, null, null);
                    }
                } else {
                    ctx.cublas.gemm(CudaAllocator.address(x), CudaAllocator.address(w), CudaAllocator.address(y), m, n, k, false);
                }
            }
            case BF16 -> {
                if (QGEMV && m <= QGEMV_MAX_ROWS && k % 8 == 0 && aligned16(x, w)) {
                    qgemv.launchBf16(x, w, y, m, n, k, false);
                } else if (m <= GEMV_MAX_ROWS && k % 8 == 0 && aligned16(x, w)) {
                    ctx.launch(gemvBf16, gemvGrid(n), GEMV_BLOCK, x, w, y, m, n, k);
                } else {
                    bf16Gemm(x, w, y, m, n, k);
                }
            }
            default -> throw new IllegalArgumentException("matmul: weight must be f32 or bf16, got " + w);
        }
    }

    /**
     * ys[i] = x · ws[i]ᵀ for weights that read the same x (an attention block's q, k and v), the numbers of {@link #matmul}
     * for each: up to three f32 weights on the narrow path in one {@code narrow_matmul3_f32} launch; two or three bf16
     * weights at the GEMV's rows in one {@code bgemv_lr_m*} launch without terms (each weight's sums those of its own
     * {@code bgemv_m*}; {@code -Dorbit.cuda.gemvShared=off}, read at each call, launches a GEMV each); bf16 weights above
     * the GEMV's rows with x rounded to bf16 once for all of them (one staging chunk), a cuBLAS product each; anything
     * else a {@link #matmul} each.
     */
    void matmulShared(Tensor x, Tensor[] ws, Tensor[] ys) {
        if (ws.length != ys.length) {
            throw new IllegalArgumentException("matmulShared: " + ws.length + " weights for " + ys.length + " outputs");
        }
        ctx.devContiguous("matmulShared x", x, DType.F32);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        DType dtype = ws.length == 0 ? null : ws[0].dtype();
        boolean narrowAll = narrow() && ws.length >= 2 && ws.length <= 3 && dtype == DType.F32 && m <= NARROW_MAX_ROWS && k > 0
                && k % 4 == 0;
        boolean stagedAll = ws.length >= 2 && dtype == DType.BF16 && m > QGEMV_MAX_ROWS && DeviceScratch.stagingRows(m, k) >= m;
        boolean gemvAll = QGEMV && ws.length >= 2 && ws.length <= 3 && dtype == DType.BF16 && m <= QGEMV_MAX_ROWS && k % 8 == 0
                && !"off".equals(System.getProperty("orbit.cuda.gemvShared"));
        for (int i = 0; i < ws.length; i++) {
            ctx.devContiguous("matmulShared w", ws[i], null);
            ctx.devContiguous("matmulShared y", ys[i], DType.F32);
            if (ws[i].rank() != 2 || ws[i].dim(1) != k || ys[i].size(-1) != ws[i].dim(0) || CudaContext.rows(ys[i]) != m) {
                throw new IllegalArgumentException("matmulShared: x " + x + " · wᵀ " + ws[i] + " -> y " + ys[i] + " do not agree");
            }
            narrowAll &= ws[i].dtype() == DType.F32 && ws[i].size(0) <= NARROW_MAX_N && aligned16(x, ws[i]);
            stagedAll &= ws[i].dtype() == DType.BF16;
            gemvAll &= ws[i].dtype() == DType.BF16 && aligned16(x, ws[i]);
        }
        if (m == 0) {
            return;
        }
        if (gemvAll) {
            Three t = three(ws, ys);
            qgemv.launchBf16LowRank(x, m, k, t.w(), t.y(), t.n(), new long[3], new long[3], new float[3], new int[3]);
            return;
        }
        if (narrowAll) {
            Three t = three(ws, ys);
            long blocks = 0;
            for (int rows : t.n()) {
                blocks += (rows + 7) / 8;
            }
            if (blocks > 0) {
                launchNarrow3(x, m, k, t.w(), t.y(), t.n(), blocks, 0L);
            }
        } else if (stagedAll) {
            Tensor xb = ctx.scratch(CudaContext.Scratch.X_BF16, DType.BF16, DeviceScratch.stagingElements(m, k)); // [m, k]
            rows.toBf16(x.reshape((long) m * k), xb, (long) m * k);
            for (int i = 0; i < ws.length; i++) {
                if (ws[i].size(0) > 0) {
                    ctx.cublas.gemm(CudaAllocator.address(xb), CudaAllocator.address(ws[i]), CudaAllocator.address(ys[i]), m,
                            ws[i].size(0), k, true);
                }
            }
        } else {
            for (int i = 0; i < ws.length; i++) {
                matmul(x, ws[i], ys[i]);
            }
        }
    }

    /**
     * {@link org.orbitrl.kernels.Backend#rmsNormMatmulShared}: {@code ys[i] = rmsnorm(x) · ws[i]ᵀ} in one {@code
     * bgemv_norm_scale_m1} launch ({@code bgemv_norm_lr_m1} under {@code -Dorbit.cuda.normFold=stage}) for {@value
     * CudaQgemv#NORM_SHARED_MAX_ROWS} row of x and one to three bf16 weights
     * (K a multiple of 8, the normed rows within a block's shared memory, x and the weights 16-byte aligned), the norm
     * weight f32 or bf16 [K]; {@code -Dorbit.cuda.normShared=off} (read at each call) declines. False, with nothing
     * written, for any other call; throws where the shapes do not agree.
     */
    boolean rmsNormMatmulShared(Tensor x, Tensor normWeight, float eps, Tensor[] ws, Tensor[] ys) {
        if (ws.length != ys.length || ws.length == 0 || ws.length > 3) {
            throw new IllegalArgumentException("rmsNormMatmulShared: " + ws.length + " weights for " + ys.length
                    + " outputs (one to three)");
        }
        ctx.devContiguous("rmsNormMatmulShared x", x, DType.F32);
        ctx.devContiguous("rmsNormMatmulShared norm weight", normWeight, null);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        if (normWeight.numel() != k || (normWeight.dtype() != DType.F32 && normWeight.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("rmsNormMatmulShared: norm weight " + normWeight + " is not f32 or bf16 [" + k
                    + "] for x " + x);
        }
        boolean takes = QGEMV && m >= 1 && m <= CudaQgemv.NORM_SHARED_MAX_ROWS && k % 8 == 0
                && !"off".equals(System.getProperty("orbit.cuda.normShared"))
                && 4L * m * k + qgemv.normSharedStaticBytes(m) <= CudaMoePairs.MAX_SHARED;
        for (int i = 0; i < ws.length; i++) {
            ctx.devContiguous("rmsNormMatmulShared w", ws[i], null);
            ctx.devContiguous("rmsNormMatmulShared y", ys[i], DType.F32);
            if (ws[i].rank() != 2 || ws[i].dim(1) != k || ys[i].size(-1) != ws[i].dim(0) || CudaContext.rows(ys[i]) != m) {
                throw new IllegalArgumentException("rmsNormMatmulShared: x " + x + " · wᵀ " + ws[i] + " -> y " + ys[i]
                        + " do not agree");
            }
            takes &= ws[i].dtype() == DType.BF16 && aligned16(x, ws[i]);
        }
        if (!takes) {
            return false;
        }
        Three t = three(ws, ys);
        qgemv.launchBf16NormShared(x, m, k, normWeight, eps, t.w(), t.y(), t.n());
        return true;
    }

    /** Up to three weights' and outputs' addresses and the weights' rows, as the three-product launches take them (0: none). */
    private record Three(long[] w, long[] y, int[] n) {
    }

    private static Three three(Tensor[] ws, Tensor[] ys) {
        Three t = new Three(new long[3], new long[3], new int[3]);
        for (int i = 0; i < ws.length; i++) {
            t.w()[i] = CudaAllocator.address(ws[i]);
            t.y()[i] = CudaAllocator.address(ys[i]);
            t.n()[i] = ws[i].size(0);
        }
        return t;
    }

    /**
     * {@code narrow_matmul3_f32}: y_i = x · w_iᵀ for the up to three f32 weights at addresses w (n_i rows, 0: none), over
     * {@code blocks} row blocks in all; with xb (not 0) also x rounded to bf16 into it.
     */
    void launchNarrow3(Tensor x, int m, int k, long[] w, long[] y, int[] n, long blocks, long xb) {
        int stride = Math.min(k / 4, CudaMoePairs.LONG_K_PIECES);   // the 16-byte x pieces a row stages
        int mt = narrowRows();
        ctx.launch2dShared(narrow3, blocks, (m + mt - 1) / mt, 256, 16 * mt * stride, x, m, k, mt, w[0], y[0], n[0], w[1], y[1],
                n[1], w[2], y[2], n[2], xb);
    }

    /**
     * {@link #launchNarrow3} (no bf16 x) and {@link CudaQgemv#launchBf16LowRank} in one launch ({@link
     * CudaQgemv#launchBf16LowRankA}: the same bits); false, with nothing launched, where that launch does not take the
     * shapes. Its counters are the context's first two tickets.
     */
    boolean launchNarrow3Gemv(Tensor x, int m, int k, long[] aw, long[] ay, int[] an, long aBlocks, long[] w, long[] y, int[] n,
                              long[] lo, long[] b, float[] scales, int[] ranks) {
        int stride = Math.min(k / 4, CudaMoePairs.LONG_K_PIECES);
        int mt = narrowRows();
        return qgemv.launchBf16LowRankA(x, m, k, w, y, n, lo, b, scales, ranks, aw, ay, an, aBlocks, (m + mt - 1) / mt, mt,
                16 * mt * stride, ctx.tickets);
    }

    /**
     * {@code y += x · wᵀ} (x, y f32, w bf16 [n, k]): the GEMV with the add folded in up to
     * {@value #QGEMV_MAX_ROWS} rows, else cuBLAS with β = 1 on bf16-rounded x.
     */
    void matmulAccumulate(Tensor x, Tensor w, Tensor y) {
        ctx.devContiguous("matmulAccumulate x", x, DType.F32);
        ctx.devContiguous("matmulAccumulate y", y, DType.F32);
        ctx.devContiguous("matmulAccumulate w", w, DType.BF16);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        if (w.rank() != 2 || w.dim(1) != k || y.size(-1) != w.dim(0) || CudaContext.rows(y) != m) {
            throw new IllegalArgumentException("matmulAccumulate: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        int n = w.size(0);
        if (m == 0 || n == 0) {
            return;
        }
        if (m <= QGEMV_MAX_ROWS && k % 8 == 0 && aligned16(x, w)) {
            qgemv.launchBf16(x, w, y, m, n, k, true);
        } else {
            staged(x, w, y, m, n, k, true);
        }
    }

    /** {@code y += alpha · x · wᵀ}, all f32: one cuBLAS product with β = 1. */
    void matmulAxpyF32(Tensor x, Tensor w, float alpha, Tensor y) {
        ctx.devContiguous("matmulAxpy x", x, DType.F32);
        ctx.devContiguous("matmulAxpy w", w, DType.F32);
        ctx.devContiguous("matmulAxpy y", y, DType.F32);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        if (w.rank() != 2 || w.dim(1) != k || y.size(-1) != w.dim(0) || CudaContext.rows(y) != m) {
            throw new IllegalArgumentException("matmulAxpy: y " + y + " += alpha · x " + x + " · wᵀ " + w + " do not agree");
        }
        int n = w.size(0);
        if (m == 0 || n == 0) {
            return;
        }
        // column-major: yᵀ [n, m] += alpha · w [k, n]ᵀ · xᵀ [k, m]
        ctx.cublas.gemm(true, false, n, m, k, alpha, CudaAllocator.address(w), k, CudaAllocator.address(x), k, 1f,
                CudaAllocator.address(y), n, false);
    }

    /** x f32 [m, k] rounded to bf16 into scratch, then cuBLAS bf16 with f32 output. w is bf16 [n, k]. */
    private void bf16Gemm(Tensor x, Tensor w, Tensor y, int m, int n, int k) {
        staged(x, w, y, m, n, k, false);
    }

    /**
     * y [m, n] = (or +=, {@code accumulate}) x [m, k] · wᵀ with x rounded to bf16 in the staging scratch,
     * {@link DeviceScratch#stagingRows} rows at a time (one cuBLAS product each), so that the scratch
     * stays within {@link DeviceScratch#STAGING_BYTES} whatever m is.
     */
    private void staged(Tensor x, Tensor w, Tensor y, int m, int n, int k, boolean accumulate) {
        long chunk = DeviceScratch.stagingRows(m, k);
        Tensor xb = ctx.scratch(CudaContext.Scratch.X_BF16, DType.BF16, DeviceScratch.stagingElements(m, k)); // [chunk, k]
        Tensor flat = x.reshape((long) m * k);
        long ya = CudaAllocator.address(y);
        for (long r = 0; r < m; r += chunk) {
            int rs = (int) Math.min(chunk, m - r);
            rows.toBf16(flat.slice(0, r * k, (r + rs) * k), xb, (long) rs * k);
            if (accumulate) {
                ctx.cublas.gemmAccumulate(CudaAllocator.address(xb), CudaAllocator.address(w), ya + 4L * r * n, rs, n, k);
            } else {
                ctx.cublas.gemm(CudaAllocator.address(xb), CudaAllocator.address(w), ya + 4L * r * n, rs, n, k, true);
            }
        }
    }

    /**
     * y = x · wᵀ with x's rows kept f32 (see {@code Backend#matmulF32}): an f32 w as {@link #matmul} takes it; an FP8
     * block weight by the FP8 GEMV ({@link #fp8Gemv}) and a bf16 one by the bf16 GEMV (up to {@value #QGEMV_MAX_ROWS}
     * rows), both on x as it is; a bf16 w, or an FP8 one with E8M0 scales dequantized to bf16 (exactly), at up to
     * {@value #SPLIT_X_MAX_ROWS} rows by {@link #splitXGemm}; anything else widened or dequantized into the reused f32
     * buffer, then the f32 product.
     */
    void matmulF32(Tensor x, Tensor w, QuantizedTensor q, Tensor y) {
        if (w != null && w.dtype() == DType.F32) {
            matmul(x, w, y);
            return;
        }
        if (w != null && (w.rank() != 2 || w.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("matmulF32: the weight must be f32 or bf16 [N, K], got " + w);
        }
        ctx.devContiguous("matmulF32 x", x, DType.F32);
        ctx.devContiguous("matmulF32 y", y, DType.F32);
        int n = Math.toIntExact(q != null ? q.rows() : w.size(0));
        int k = Math.toIntExact(q != null ? q.cols() : w.size(1));
        if (x.size(-1) != k || y.size(-1) != n || CudaContext.rows(y) != CudaContext.rows(x)) {
            throw new IllegalArgumentException("matmulF32: x " + x + " · wᵀ " + (q != null ? q : w) + " -> y " + y
                    + " do not agree");
        }
        int m = CudaContext.rows(x);
        if (m == 0 || n == 0) {
            return;
        }
        if (w != null) {
            ctx.devContiguous("matmulF32 w", w, DType.BF16);
        }
        if (q != null && fp8Block(q) && fp8Gemv(m, n, k) && aligned16(x, q.codes())) {
            fp8GemvLaunch(x, q, y, m, n, k);   // the exact weights times x as it is, f32 sums
            return;
        }
        if (w != null && QGEMV && m <= QGEMV_MAX_ROWS && k % 8 == 0 && aligned16(x, w)) {
            qgemv.launchBf16(x, w, y, m, n, k, false);   // likewise
            return;
        }
        if (SPLIT_X && m <= SPLIT_X_MAX_ROWS && (w != null || q.format() == Fp8Block128Ue8m0.INSTANCE) && k % 8 == 0) {
            Tensor wb = w;
            if (wb == null) {   // E4M3 values times powers of two: exact in bf16
                wb = ctx.scratch(CudaContext.Scratch.DEQUANT_BF16, DType.BF16, (long) n * k).reshape(n, k);
                dequantizeFp8(q, wb);
            }
            splitXGemm(x, wb, y, m, n, k);
            return;
        }
        matmul(x, f32Weight(w, q, n, k), y);
    }

    /**
     * {@code -Dorbit.cuda.splitX=off} keeps {@link #matmulF32}'s products of more rows than its GEMVs take on the weight
     * widened to f32 and cuBLAS's f32 product.
     */
    private static final boolean SPLIT_X = !"off".equals(System.getProperty("orbit.cuda.splitX"));
    /** Rows of x up to which {@link #matmulF32} takes {@link #splitXGemm} (a decode batch; more rows keep the f32 product). */
    static final int SPLIT_X_MAX_ROWS = 256;

    /**
     * y [m, n] = x [m, k] · wᵀ for a bf16 w (exact weight values) through bf16 tensor cores with x's rows kept to within
     * 2^-18 of their values: x split into hi = bf16(x) and lo = bf16(x − hi) ({@code split_bf16_f32}), then y = hi · wᵀ
     * and y += lo · wᵀ (cuBLAS, f32 accumulation). The weight is read twice at bf16 where the f32 product read it widened
     * to f32 (twice the bytes, after a widening pass) on the f32 CUDA cores. A value beyond bf16's largest finite one
     * (about 3.39e38) has an infinite hi and its products are NaN.
     */
    private void splitXGemm(Tensor x, Tensor wb, Tensor y, int m, int n, int k) {
        long mk = (long) m * k;
        long xa = splitX(x, mk);
        ctx.cublas.gemm(xa, CudaAllocator.address(wb), CudaAllocator.address(y), m, n, k, true);
        ctx.cublas.gemmAccumulate(xa + 2 * mk, CudaAllocator.address(wb), CudaAllocator.address(y), m, n, k);
    }

    /**
     * The n f32 values of x as two bf16 parts ({@code split_bf16_f32}) in the reused buffer: hi = bf16(x) at the
     * returned address, lo = bf16(x − hi) 2n bytes after it; valid until the buffer's next use.
     */
    private long splitX(Tensor x, long n) {
        Tensor xs = ctx.scratch(CudaContext.Scratch.X_BF16, DType.BF16, 2 * n);   // hi [n], then lo [n]
        ctx.launch(splitBf16, ctx.gridFor(n, 256), 256, x, xs, xs.slice(0, n, 2 * n), n);
        return CudaAllocator.address(xs);
    }

    /** {@code gemv_fp8_block} over an FP8 block weight (the caller checked {@link #fp8Gemv} and the alignment). */
    private void fp8GemvLaunch(Tensor x, QuantizedTensor w, Tensor y, int m, int n, int k) {
        int cols = n < 4096 && m <= 2 ? 1 : FP8_GEMV_COLUMNS;   // a narrow weight at two rows: more warps
        fp8GemvLaunch(x, w, y, m, n, k, cols, n, k);
    }

    /** {@code gemv_fp8_block}, x row m of group g at {@code m · xStride + g · k} for the rows [g · groupRows, + groupRows). */
    private void fp8GemvLaunch(Tensor x, QuantizedTensor w, Tensor y, int m, int n, int k, int cols, int groupRows, int xStride) {
        ctx.devContiguous("fp8 weight codes", w.codes(), DType.F8E4M3);
        ctx.devContiguous("fp8 weight scales", w.scales(), null);
        ctx.launch(gemvFp8, gemvGrid((n + cols - 1) / cols), GEMV_BLOCK, x, w.codes(), w.scales(),
                w.format() == Fp8Block128Ue8m0.INSTANCE ? 1 : 0, y, m, n, k, cols, groupRows, xStride);
    }

    /**
     * {@code Backend#matmulF32Grouped} outside exact mode: y [m, G, r] = x [m, G, k] by the G blocks of rows of an FP8 block
     * weight [G · r, k], each group's rows against its own slice of x, in one call where {@link #matmulF32} would make G:
     * at up to {@link #FP8_GEMV_MAX_ROWS} rows one {@code gemv_fp8_block} over the whole weight (at 2 to 4 rows the same
     * sums as its per-group products, which take that kernel too); at up to {@value #SPLIT_X_MAX_ROWS} rows of an E8M0-scaled weight the weight dequantized to
     * bf16 once (exact) and x split once into bf16 hi and lo ({@link #splitXGemm}'s form), then two strided-batched
     * cuBLAS products over the groups. False, having done nothing, for anything else (another format, more rows, an
     * unaligned x): the caller then multiplies group by group.
     */
    boolean matmulF32Grouped(Tensor x, QuantizedTensor q, int groups, Tensor y) {
        if (!fp8Block(q) || groups <= 0 || q.rows() % groups != 0) {
            return false;
        }
        ctx.devContiguous("matmulF32Grouped x", x, DType.F32);
        ctx.devContiguous("matmulF32Grouped y", y, DType.F32);
        int n = Math.toIntExact(q.rows());
        int k = Math.toIntExact(q.cols());
        int r = n / groups;
        if (x.rank() != 3 || x.size(1) != groups || x.size(2) != k || y.rank() != 3 || y.size(0) != x.size(0)
                || y.size(1) != groups || y.size(2) != r) {
            throw new IllegalArgumentException("matmulF32Grouped: x " + x + " by the " + groups + " groups of " + q
                    + " -> y " + y + ": expected x [m, " + groups + ", " + k + "] and y [m, " + groups + ", " + r + "]");
        }
        int m = x.size(0);
        if (m == 0) {
            return true;
        }
        if (m <= FP8_GEMV_MAX_ROWS && k % 16 == 0 && r % FP8_GEMV_COLUMNS == 0 && aligned16(x, q.codes())) {
            fp8GemvLaunch(x, q, y, m, n, k, FP8_GEMV_COLUMNS, r, groups * k);
            return true;
        }
        if (SPLIT_X && m <= SPLIT_X_MAX_ROWS && q.format() == Fp8Block128Ue8m0.INSTANCE && k % 8 == 0) {
            Tensor wb = ctx.scratch(CudaContext.Scratch.DEQUANT_BF16, DType.BF16, (long) n * k).reshape(n, k);
            dequantizeFp8(q, wb);   // E4M3 values times powers of two: exact in bf16
            long mk = (long) m * groups * k;
            long xa = splitX(x, mk);   // hi [m, G, k], then lo
            long wa = CudaAllocator.address(wb);
            long ya = CudaAllocator.address(y);
            // column-major per group g: y_gᵀ [r, m] (ld G·r) = W_g [r, k] (stored k-major: op T, ld k) · x_gᵀ [k, m] (ld G·k)
            ctx.cublas.gemmStridedBatched(true, false, r, m, k, 1f, wa, k, (long) r * k, xa, groups * k, k,
                    0f, ya, groups * r, r, groups, true);
            ctx.cublas.gemmStridedBatched(true, false, r, m, k, 1f, wa, k, (long) r * k, xa + 2 * mk, groups * k, k,
                    1f, ya, groups * r, r, groups, true);
            return true;
        }
        return false;
    }

    /**
     * The weight [n, k] as f32: w itself where it is f32, else a bf16 w widened or a quantized q dequantized into the
     * reused f32 buffer ({@code EXACT_DEQUANT}), valid until its next use. The products that keep their rows f32
     * ({@link #matmulF32} and the train ops' transposed form) read their weight through it.
     */
    Tensor f32Weight(Tensor w, QuantizedTensor q, int n, int k) {
        if (q == null && w.dtype() == DType.F32) {
            return w;
        }
        Tensor wf = ctx.scratch(CudaContext.Scratch.EXACT_DEQUANT, DType.F32, (long) n * k).reshape(n, k);
        if (q != null) {
            dequantize(q, wf);
        } else {
            ctx.launch(widen, ctx.gridFor((long) n * k, 256), 256, w, wf, (long) n * k);
        }
        return wf;
    }

    /**
     * Whether an FP8 block weight's product of m rows goes by {@code gemv_fp8_block}: 2 to {@link #FP8_GEMV_MAX_ROWS}
     * rows, and one row of a weight of 4096 output columns or more (below that the bf16 one-row GEMV over the
     * dequantized weight is faster: {@code Fp8LinearBench}); K a multiple of 16.
     */
    static boolean fp8Gemv(int m, int n, int k) {
        return m >= 1 && m <= FP8_GEMV_MAX_ROWS && (m > 1 || n >= 4096) && k % 16 == 0;
    }

    void matmulQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        ctx.devContiguous("matmulQuantized x", x, DType.F32);
        ctx.devContiguous("matmulQuantized y", y, DType.F32);
        if (fp8Block(w)) {   // the FP8 GEMV at few rows; else dequantized to bf16 in the reused buffer, the bf16 products
            int m = CudaContext.rows(x);
            int k = x.size(-1);
            if (w.cols() != k || y.size(-1) != w.rows() || CudaContext.rows(y) != m) {
                throw new IllegalArgumentException("matmulQuantized: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
            }
            int n = Math.toIntExact(w.rows());
            if (m == 0 || n == 0) {
                return;
            }
            if (fp8Gemv(m, n, k) && aligned16(x, w.codes())) {
                fp8GemvLaunch(x, w, y, m, n, k);
                return;
            }
            Tensor wb = ctx.scratch(CudaContext.Scratch.DEQUANT_BF16, DType.BF16, w.rows() * w.cols())
                    .reshape(w.rows(), w.cols());
            dequantizeFp8(w, wb);
            matmul(x, wb, y);
            return;
        }
        QuantLayout layout = QuantLayout.of(w, ctx);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        int n = Math.toIntExact(w.rows());
        if (w.cols() != k || y.size(-1) != n || CudaContext.rows(y) != m) {
            throw new IllegalArgumentException("matmulQuantized: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        if (m == 0) {
            return;
        }
        if (QGEMV && m <= QGEMV_MAX_ROWS && aligned16(x, w.codes())) {
            qgemv.launch(CudaQgemv.MODE_DENSE, x, w, layout, y, m, m, 1, null, null, n, k, 1);
            return;
        }
        if (m == 1 && aligned16(x, w.codes())) { // decode at batch 1: 8-byte code loads, see quant.cu
            ctx.launch(gemv1.get(layout), gemvGrid(n), GEMV_BLOCK, x, w.codes(), w.scales(), w.zeros(), w.globalScale(), y, n, k);
            return;
        }
        if (m <= GEMV_MAX_ROWS && aligned16(x, w.codes())) {
            ctx.launch(gemv.get(layout), gemvGrid(n), GEMV_BLOCK,
                    x, w.codes(), w.scales(), w.zeros(), w.globalScale(), y, m, n, k);
            return;
        }
        Tensor wb = ctx.scratch(CudaContext.Scratch.DEQUANT_BF16, DType.BF16, (long) n * k); // [n, k], reused
        dequantize(w, layout, wb, true);
        bf16Gemm(x, wb, y, m, n, k);
    }

    /**
     * One launch for every (token, expert) pair of a mixture-of-experts layer at decode:
     * {@code y[p] = x[p or p / topk] · W[ids[p]]ᵀ}. experts: [E·N, K], expert e's rows at e·N;
     * ids: i32 [tokens, topk]; x: f32 [tokens, K] (shared by a token's experts) or [tokens·topk, K];
     * y: f32 [tokens·topk, N] (any shape with that many elements).
     */
    void moeMatmulQuantized(Tensor x, QuantizedTensor experts, int numExperts, Tensor ids, Tensor y) {
        ctx.devContiguous("moeMatmulQuantized x", x, DType.F32);
        ctx.devContiguous("moeMatmulQuantized y", y, DType.F32);
        ctx.devContiguous("moeMatmulQuantized expert ids", ids, DType.I32);
        QuantLayout layout = QuantLayout.of(experts, ctx);
        if (numExperts <= 0 || experts.rows() % numExperts != 0) {
            throw new IllegalArgumentException("moeMatmulQuantized: " + experts + " does not stack " + numExperts + " experts");
        }
        int n = Math.toIntExact(experts.rows() / numExperts);
        int k = Math.toIntExact(experts.cols());
        int pairs = Math.toIntExact(ids.numel());
        int topk = ids.rank() == 0 ? 1 : ids.size(-1);
        int tokens = topk == 0 ? 0 : pairs / topk;
        int xRows = CudaContext.rows(x);
        if (x.size(-1) != k || (xRows != tokens && xRows != pairs) || y.numel() != (long) pairs * n) {
            throw new IllegalArgumentException("moeMatmulQuantized: x " + x + ", ids " + ids + ", y " + y + " do not fit "
                    + numExperts + " experts of [" + n + ", " + k + "] (x rows must be tokens or tokens*topk; y tokens*topk*" + n + ")");
        }
        if (pairs > 65535) {
            throw new IllegalArgumentException("moeMatmulQuantized: " + pairs + " (token, expert) pairs exceed one launch (65535); "
                    + "this path is for decode, use the chunked path for prefill");
        }
        if (pairs == 0) {
            return;
        }
        if (!aligned16(x, experts.codes())) {
            throw new IllegalArgumentException("moeMatmulQuantized: x and the codes must be 16-byte aligned");
        }
        if (QGEMV) {
            qgemv.launch(CudaQgemv.MODE_PAIRS, x, experts, layout, y, pairs, 1, xRows == pairs && pairs != tokens ? 1 : topk, ids, null,
                    n, k, numExperts);
            return;
        }
        ctx.launch2d(moeGemv.get(layout), gemvGrid(n), pairs, GEMV_BLOCK, x, xRows == pairs && pairs != tokens ? 1 : 0, topk, ids,
                experts.codes(), experts.scales(), experts.zeros(), experts.globalScale(), y, n, k, numExperts, ctx.errorFlag);
    }

    void dequantize(QuantizedTensor w, Tensor out) {
        ctx.devContiguous("dequantize out", out, null);
        if (out.numel() != w.rows() * w.cols() || (out.rank() == 2 && (out.dim(0) != w.rows() || out.dim(1) != w.cols()))
                || (out.dtype() != DType.F32 && out.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("dequantize: " + w + " into " + out + " (expected f32 or bf16 ["
                    + w.rows() + ", " + w.cols() + "])");
        }
        if (fp8Block(w)) {
            dequantizeFp8(w, out);
            return;
        }
        dequantize(w, QuantLayout.of(w, ctx), out, out.dtype() == DType.BF16);
    }

    /** Whether w is FP8 E4M3 with 128×128 block scales (DeepSeek's fp8 checkpoints), f32 or E8M0 scales. */
    static boolean fp8Block(QuantizedTensor w) {
        return w.format() == Fp8Block128.INSTANCE || w.format() == Fp8Block128Ue8m0.INSTANCE;
    }

    /** {@code dequant_fp8_block}: one thread a run of 8 values; rows of K values, K a multiple of 8. */
    private void dequantizeFp8(QuantizedTensor w, Tensor out) {
        ctx.devContiguous("fp8 weight codes", w.codes(), DType.F8E4M3);
        ctx.devContiguous("fp8 weight scales", w.scales(), null);
        if (w.cols() % 8 != 0 || CudaAllocator.address(w.codes()) % 8 != 0 || CudaAllocator.address(out) % 16 != 0) {
            throw new IllegalArgumentException(w + ": the CUDA FP8 dequantization needs a column count divisible by 8 and "
                    + "aligned codes and output, got " + w.cols() + " columns, codes " + w.codes() + ", out " + out);
        }
        long units = w.rows() * (w.cols() / 8);
        ctx.launch(dequantFp8, ctx.gridFor(units, 256), 256, w.codes(), w.scales(),
                w.format() == Fp8Block128Ue8m0.INSTANCE ? 1 : 0, out, out.dtype() == DType.BF16 ? 1 : 0,
                Math.toIntExact(w.rows()), Math.toIntExact(w.cols()));
    }

    private void dequantize(QuantizedTensor w, QuantLayout layout, Tensor out, boolean bf16) {
        long chunks = w.rows() * w.cols() / 32;
        ctx.launch(dequant.get(layout), ctx.gridFor(chunks, 256), 256,
                w.codes(), w.scales(), w.zeros(), w.globalScale(), out, bf16 ? 1 : 0, Math.toIntExact(w.rows()), Math.toIntExact(w.cols()));
    }

    private static long gemvGrid(int n) {
        return (n + (GEMV_BLOCK / 32) - 1) / (GEMV_BLOCK / 32);
    }

    private static boolean aligned16(Tensor a, Tensor b) {
        return CudaAllocator.address(a) % 16 == 0 && CudaAllocator.address(b) % 16 == 0;
    }
}
