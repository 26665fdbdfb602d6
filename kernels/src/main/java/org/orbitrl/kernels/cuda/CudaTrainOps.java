package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.DevicePointer;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import static org.bytedeco.cuda.global.cudart.cudaMemsetAsync;

/**
 * The training-side operations on the device: activation gradients through frozen weights, the
 * adapter-gradient product, accumulations, row gathers and scatters, bias, and the backward passes
 * of RMSNorm and SwiGLU (kernels in {@code train.cu}).
 *
 * <p>Precision of {@code dx = dy · w}: f32 weights through cuBLAS in f32 (no TF32); bf16 weights
 * with dy rounded to bf16 and cuBLAS bf16 × bf16 with f32 accumulation (as the forward's GEMM path);
 * quantized weights dequantized into a reused bf16 buffer, then the same. {@code matmulTN} is an f32
 * cuBLAS product with beta 1.
 */
final class CudaTrainOps {
    private static final int EW_BLOCK = 256;

    private final CudaContext ctx;
    private final CudaRowOps rows;
    private final CudaMatmulOps matmul;
    private final Kernel axpy;
    private final Kernel addBias;
    private final Kernel gather;
    private final Kernel gatherBf16;
    private final Kernel scatterAdd;
    private final Kernel rmsNormBackward;
    private final Kernel rmsNormBackwardWarp;
    private final Kernel swigluBackward;

    CudaTrainOps(CudaContext ctx, CudaRowOps rows, CudaMatmulOps matmul) {
        this.ctx = ctx;
        this.rows = rows;
        this.matmul = matmul;
        this.axpy = ctx.kernel("train", "axpy_f32");
        this.addBias = ctx.kernel("train", "add_bias_f32");
        this.gather = ctx.kernel("train", "gather_rows_f32");
        this.gatherBf16 = ctx.kernel("train", "gather_rows_bf16_f32");
        this.scatterAdd = ctx.kernel("train", "scatter_add_rows_f32");
        this.rmsNormBackward = ctx.kernel("train", "rmsnorm_backward_f32");
        this.rmsNormBackwardWarp = ctx.kernel("train", "rmsnorm_backward_warp_f32");
        this.swigluBackward = ctx.kernel("train", "swiglu_backward_f32");
    }

    /** dx [M, K] = dy [M, N] · w [N, K], w f32 or bf16. */
    void matmulTransposed(Tensor dy, Tensor w, Tensor dx) {
        ctx.devContiguous("matmulTransposed w", w, null);
        int n = w.size(0);
        int k = w.size(1);
        int m = checkTransposed(dy, dx, n, k, w.toString());
        if (m == 0 || k == 0) {
            return;
        }
        if (n == 0) {
            zero(dx);
            return;
        }
        switch (w.dtype()) {
            // column-major: dxᵀ [K, M] = wᵀ [K, N] · dyᵀ [N, M], w is col-major [K, N] (ld K), dy col-major [N, M] (ld N)
            case F32 -> ctx.cublas.gemm(false, false, k, m, n, 1f, CudaAllocator.address(w), k,
                    CudaAllocator.address(dy), n, 0f, CudaAllocator.address(dx), k, false);
            case BF16 -> bf16Transposed(dy, w, dx, m, n, k);
            default -> throw new IllegalArgumentException("matmulTransposed: weight must be f32 or bf16, got " + w);
        }
    }

    /** dx [M, K] += alpha · dy [M, N] · w [N, K], all f32: one cuBLAS product with β = 1. */
    void matmulTransposedAxpyF32(Tensor dy, Tensor w, float alpha, Tensor dx) {
        ctx.devContiguous("matmulTransposedAxpy w", w, DType.F32);
        int n = w.size(0);
        int k = w.size(1);
        int m = checkTransposed(dy, dx, n, k, w.toString());
        if (m == 0 || k == 0 || n == 0) {
            return;
        }
        // column-major: dxᵀ [K, M] += alpha · wᵀ [K, N] · dyᵀ [N, M], as matmulTransposed's f32 product
        ctx.cublas.gemm(false, false, k, m, n, alpha, CudaAllocator.address(w), k, CudaAllocator.address(dy), n, 1f,
                CudaAllocator.address(dx), k, false);
    }

    /**
     * Exact mode's dx [M, K] = dy [M, N] · w [N, K]: f32 arithmetic on the exact weight values (a bf16
     * weight is widened to f32, a quantized one dequantized to f32, into a reused buffer), through
     * cuBLAS f32; nothing is rounded to bf16.
     */
    void matmulTransposedF32(Tensor dy, Tensor w, QuantizedTensor q, Tensor dx) {
        int n = q != null ? Math.toIntExact(q.rows()) : w.size(0);
        int k = q != null ? Math.toIntExact(q.cols()) : w.size(1);
        if (w != null) {
            ctx.devContiguous("matmulTransposed w", w, null);
            if (w.rank() != 2 || (w.dtype() != DType.F32 && w.dtype() != DType.BF16)) {
                throw new IllegalArgumentException("matmulTransposed: weight must be f32 or bf16 [N, K], got " + w);
            }
        }
        int m = checkTransposed(dy, dx, n, k, q != null ? q.toString() : w.toString());
        if (m == 0 || k == 0) {
            return;
        }
        if (n == 0) {
            zero(dx);
            return;
        }
        Tensor wf = matmul.f32Weight(w, q, n, k);
        ctx.cublas.gemm(false, false, k, m, n, 1f, CudaAllocator.address(wf), k,
                CudaAllocator.address(dy), n, 0f, CudaAllocator.address(dx), k, false);
    }

    /** dx [M, K] = dy [M, N] · w [N, K] for a quantized w, through a reused bf16 dequantization buffer. */
    void matmulQuantizedTransposed(Tensor dy, QuantizedTensor w, Tensor dx) {
        int n = Math.toIntExact(w.rows());
        int k = Math.toIntExact(w.cols());
        int m = checkTransposed(dy, dx, n, k, w.toString());
        if (m == 0 || k == 0) {
            return;
        }
        Tensor wb = ctx.scratch(CudaContext.Scratch.DEQUANT_BF16, DType.BF16, (long) n * k); // [n, k]
        matmul.dequantize(w, wb);
        bf16Transposed(dy, wb, dx, m, n, k);
    }

    /**
     * dx [m, k] = dy [m, n] · wb [n, k] with dy rounded to bf16 in the staging scratch,
     * {@link DeviceScratch#stagingRows} rows at a time (the LM head's dy [tokens, vocab] would
     * otherwise need a bf16 copy as large as itself).
     */
    private void bf16Transposed(Tensor dy, Tensor wb, Tensor dx, int m, int n, int k) {
        long chunk = DeviceScratch.stagingRows(m, n);
        Tensor db = ctx.scratch(CudaContext.Scratch.X_BF16, DType.BF16, DeviceScratch.stagingElements(m, n)); // [chunk, n]
        Tensor flat = dy.reshape((long) m * n);
        long dxa = CudaAllocator.address(dx);
        for (long r = 0; r < m; r += chunk) {
            int rs = (int) Math.min(chunk, m - r);
            rows.toBf16(flat.slice(0, r * n, (r + rs) * n), db, (long) rs * n);
            ctx.cublas.gemm(false, false, k, rs, n, 1f, CudaAllocator.address(wb), k,
                    CudaAllocator.address(db), n, 0f, dxa + 4L * r * k, k, true);
        }
    }

    private int checkTransposed(Tensor dy, Tensor dx, int n, int k, String w) {
        ctx.devContiguous("matmulTransposed dy", dy, DType.F32);
        ctx.devContiguous("matmulTransposed dx", dx, DType.F32);
        int m = CudaContext.rows(dy);
        if (dy.size(-1) != n || dx.size(-1) != k || dx.numel() != (long) m * k) {
            throw new IllegalArgumentException("matmulTransposed: dy " + dy + " · w " + w + " -> dx " + dx + " do not agree");
        }
        return m;
    }

    /** c [P, Q] += alpha · aᵀ · b for a [M, P], b [M, Q] (a and b may have a row stride; last dimension contiguous). */
    void matmulTN(Tensor a, Tensor b, float alpha, Tensor c) {
        ctx.dev("matmulTN a", a);
        ctx.dev("matmulTN b", b);
        ctx.devContiguous("matmulTN c", c, DType.F32);
        if (a.rank() != 2 || b.rank() != 2 || c.rank() != 2 || a.dtype() != DType.F32 || b.dtype() != DType.F32
                || b.dim(0) != a.dim(0) || c.dim(0) != a.dim(1) || c.dim(1) != b.dim(1)) {
            throw new IllegalArgumentException("matmulTN: aᵀ " + a + " · b " + b + " -> c " + c + " do not agree");
        }
        int m = a.size(0);
        int p = a.size(1);
        int q = b.size(1);
        if (p == 0 || q == 0 || m == 0) {
            return;
        }
        long lda = rowStride("matmulTN a", a);
        long ldb = rowStride("matmulTN b", b);
        // column-major: cᵀ [Q, P] += alpha · bᵀ [Q, M] · a [M, P]; b is col-major [Q, M] (ld ldb), a col-major [P, M] (ld lda)
        ctx.cublas.gemm(false, true, q, p, m, alpha, CudaAllocator.address(b), Math.toIntExact(ldb),
                CudaAllocator.address(a), Math.toIntExact(lda), 1f, CudaAllocator.address(c), q, false);
    }

    /** See {@link org.orbitrl.kernels.Backend#blockGradTN}: one strided-batched cuBLAS product over the blocks. */
    void blockGradTN(Tensor x, Tensor g, int bs, Tensor out) {
        ctx.dev("blockGradTN x", x);
        ctx.dev("blockGradTN g", g);
        ctx.devContiguous("blockGradTN out", out, DType.F32);
        int blocks = out.rank() == 3 ? out.size(0) : 0;
        if (bs <= 0 || x.rank() != 2 || g.rank() != 2 || x.dtype() != DType.F32 || g.dtype() != DType.F32 || x.dim(0) != g.dim(0)
                || x.dim(1) != (long) blocks * bs || g.dim(1) != x.dim(1) || out.dim(1) != bs || out.dim(2) != bs) {
            throw new IllegalArgumentException("blockGradTN: x " + x + ", g " + g + " [M, blocks·" + bs + "] -> out " + out
                    + " [blocks, " + bs + ", " + bs + "] do not agree");
        }
        int m = x.size(0);
        if (m == 0 || blocks == 0) {
            return;
        }
        long ldx = rowStride("blockGradTN x", x);
        long ldg = rowStride("blockGradTN g", g);
        // per block, as matmulTN: out_iᵀ [bs, bs] += g_iᵀ [bs, M] · x_i [M, bs] in column-major terms
        ctx.cublas.gemmStridedBatched(false, true, bs, bs, m, 1f, CudaAllocator.address(g), Math.toIntExact(ldg), bs,
                CudaAllocator.address(x), Math.toIntExact(ldx), bs, 1f, CudaAllocator.address(out), bs, (long) bs * bs, blocks, false);
    }

    private static long rowStride(String what, Tensor t) {
        long[] st = t.strides();
        if (st[1] != 1 && t.dim(1) > 1) {
            throw new IllegalArgumentException(what + " must have a contiguous last dimension, got " + t);
        }
        return t.dim(0) <= 1 ? Math.max(1, t.dim(1)) : Math.max(st[0], t.dim(1));
    }

    void axpy(float alpha, Tensor x, Tensor y) {
        ctx.devContiguous("axpy x", x, DType.F32);
        ctx.devContiguous("axpy y", y, DType.F32);
        if (x.numel() != y.numel()) {
            throw new IllegalArgumentException("axpy: " + x + " into " + y + ": element counts differ");
        }
        long n = x.numel();
        if (n > 0) {
            ctx.launch(axpy, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, alpha, x, y, n);
        }
    }

    void addBias(Tensor y, Tensor bias) {
        ctx.devContiguous("addBias y", y, DType.F32);
        ctx.devContiguous("addBias bias", bias, DType.F32);
        int n = Math.toIntExact(bias.numel());
        if (y.size(-1) != n) {
            throw new IllegalArgumentException("addBias: bias " + bias + " for " + y);
        }
        long total = y.numel();
        if (total > 0) {
            ctx.launch(addBias, ctx.gridFor(total, EW_BLOCK), EW_BLOCK, y, bias, n, total);
        }
    }

    /** dst f32 [n, h] row i = src row rows[i]: src f32, or bf16 (a paged KV cache's rows) widened to f32. */
    void gatherRows(Tensor src, Tensor rowIds, Tensor dst) {
        ctx.devContiguous("gatherRows src", src, null);
        if (src.dtype() != DType.F32 && src.dtype() != DType.BF16) {
            throw new IllegalArgumentException("gatherRows: src " + src + " must be f32 or bf16");
        }
        ctx.devContiguous("gatherRows dst", dst, DType.F32);
        ctx.devContiguous("gatherRows rows", rowIds, null);
        integral("gatherRows rows", rowIds);
        int h = src.size(-1);
        int n = Math.toIntExact(rowIds.numel());
        if (dst.size(-1) != h || dst.numel() != (long) n * h) {
            throw new IllegalArgumentException("gatherRows: " + n + " rows of " + src + " into " + dst);
        }
        if ((long) n * h > 0) {
            ctx.launch(src.dtype() == DType.BF16 ? gatherBf16 : gather, ctx.gridFor((long) n * h, EW_BLOCK), EW_BLOCK, src, rowIds,
                    rowIds.dtype() == DType.I64 ? 1 : 0, dst, n, h, src.numel() / h, ctx.errorFlag);
        }
    }

    void scatterAddRows(Tensor src, Tensor rowIds, Tensor weights, Tensor dst) {
        ctx.devContiguous("scatterAddRows src", src, DType.F32);
        ctx.devContiguous("scatterAddRows dst", dst, DType.F32);
        ctx.devContiguous("scatterAddRows rows", rowIds, null);
        integral("scatterAddRows rows", rowIds);
        int h = dst.size(-1);
        int n = Math.toIntExact(rowIds.numel());
        if (src.size(-1) != h || src.numel() != (long) n * h) {
            throw new IllegalArgumentException("scatterAddRows: " + src + " into " + dst + " at " + n + " rows");
        }
        if (weights != null) {
            ctx.devContiguous("scatterAddRows weights", weights, DType.F32);
            if (weights.numel() != n) {
                throw new IllegalArgumentException("scatterAddRows: weights " + weights + " for " + n + " rows");
            }
        }
        if (n > 0 && h > 0) {
            ctx.launch(scatterAdd, ctx.gridFor(h, 128), 128, src, rowIds, rowIds.dtype() == DType.I64 ? 1 : 0, weights,
                    dst, n, h, dst.numel() / h, ctx.errorFlag);
        }
    }

    void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx) {
        ctx.devContiguous("rmsNormBackward x", x, DType.F32);
        ctx.devContiguous("rmsNormBackward dy", dy, DType.F32);
        ctx.devContiguous("rmsNormBackward dx", dx, DType.F32);
        ctx.devContiguous("rmsNormBackward weight", weight, null);
        CudaContext.sameShape("rmsNormBackward x/dy", x, dy);
        CudaContext.sameShape("rmsNormBackward x/dx", x, dx);
        int h = x.size(-1);
        if (weight.numel() != h || (weight.dtype() != DType.F32 && weight.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("rmsNormBackward: weight " + weight + " must be f32 or bf16 of hidden size " + h);
        }
        int r = CudaContext.rows(x);
        if (r > 0 && h > 0) {
            if (h <= CudaRowOps.WARP_ROW_MAX) {
                ctx.launch(rmsNormBackwardWarp, (r + CudaRowOps.WARP_ROWS - 1) / CudaRowOps.WARP_ROWS, 32 * CudaRowOps.WARP_ROWS, x, weight,
                        weight.dtype() == DType.BF16 ? 1 : 0, dy, dx, h, eps, (long) r);
            } else {
                ctx.launch(rmsNormBackward, r, CudaRowOps.rowBlock(h), x, weight, weight.dtype() == DType.BF16 ? 1 : 0, dy, dx, h, eps);
            }
        }
    }

    void swigluBackward(Tensor gate, Tensor up, Tensor dout, Tensor dgate, Tensor dup) {
        Tensor[] all = {gate, up, dout, dgate, dup};
        String[] names = {"gate", "up", "dout", "dgate", "dup"};
        for (int i = 0; i < all.length; i++) {
            ctx.devContiguous("swigluBackward " + names[i], all[i], DType.F32);
            CudaContext.sameShape("swigluBackward gate/" + names[i], gate, all[i]);
        }
        long n = gate.numel();
        if (n > 0) {
            ctx.launch(swigluBackward, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, gate, up, dout, dgate, dup, n);
        }
    }

    /** Sets a contiguous device tensor to zero bytes, on the stream. */
    void zero(Tensor t) {
        ctx.devContiguous("zero", t, null);
        if (t.byteSize() > 0) {
            CudaCheck.check(cudaMemsetAsync(new DevicePointer(CudaAllocator.address(t)), 0, t.byteSize(), ctx.stream.handle()),
                    "cudaMemsetAsync", t, t.byteSize() + " bytes");
        }
    }

    static void integral(String what, Tensor t) {
        if (t.dtype() != DType.I32 && t.dtype() != DType.I64) {
            throw new IllegalArgumentException(what + " must be i32 or i64, got " + t);
        }
    }
}
