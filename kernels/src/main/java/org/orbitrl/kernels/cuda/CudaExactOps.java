package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * The products of exact mode: {@code y = x · wᵀ} where every output row is computed by the same
 * instructions in the same order whatever the number of rows and wherever the row sits in the
 * batch, so a token's logits in a one-row decode step equal, bit for bit, its logits in a
 * training forward over the whole sequence. One kernel ({@code exact_matmul_f32} in
 * {@code train.cu}) serves f32 and bf16 weights with f32 arithmetic on the exact weight values;
 * a quantized weight is first dequantized to f32 (exact) into a reused buffer.
 */
final class CudaExactOps {
    private static final int ROWS_PER_BLOCK = 8;  // EXACT_ROWS in train.cu
    private static final int BLOCK = 256;         // 8 warps, one output column each

    private final CudaContext ctx;
    private final CudaMatmulOps matmul;
    private final Kernel exact;

    CudaExactOps(CudaContext ctx, CudaMatmulOps matmul) {
        this.ctx = ctx;
        this.matmul = matmul;
        this.exact = ctx.kernel("train", "exact_matmul_f32");
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
        if (w.dtype() != DType.F32 && w.dtype() != DType.BF16) {
            throw new IllegalArgumentException("matmul: weight must be f32 or bf16, got " + w);
        }
        launch(x, w, w.dtype() == DType.BF16, y, m, w.size(0), k);
    }

    void matmulQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        ctx.devContiguous("matmulQuantized x", x, DType.F32);
        ctx.devContiguous("matmulQuantized y", y, DType.F32);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        int n = Math.toIntExact(w.rows());
        if (w.cols() != k || y.size(-1) != n || CudaContext.rows(y) != m) {
            throw new IllegalArgumentException("matmulQuantized: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        if (m == 0 || n == 0) {
            return;
        }
        Tensor wf = ctx.scratch(CudaContext.Scratch.EXACT_DEQUANT, DType.F32, (long) n * k); // [n, k]
        matmul.dequantize(w, wf);
        launch(x, wf, false, y, m, n, k);
    }

    private void launch(Tensor x, Tensor w, boolean bf16, Tensor y, int m, int n, int k) {
        if (m == 0 || n == 0) {
            return;
        }
        int chunks = (m + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
        if (chunks > 65535) {
            throw new IllegalArgumentException("exact matmul: " + m + " rows exceed " + 65535 * ROWS_PER_BLOCK + " per call");
        }
        long grid = (n + (BLOCK / 32) - 1) / (BLOCK / 32);
        ctx.launch2d(exact, grid, chunks, BLOCK, x, w, bf16 ? 1 : 0, y, m, n, k);
    }
}
