package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/** Embedding gather, top-k and argmax on the device. */
final class CudaSelectOps {
    private final CudaContext ctx;
    private final Kernel embedding;
    private final Kernel topk;
    private final Kernel argmax;

    CudaSelectOps(CudaContext ctx) {
        this.ctx = ctx;
        this.embedding = ctx.kernel("select", "embedding_f32");
        this.topk = ctx.kernel("select", "topk_f32");
        this.argmax = ctx.kernel("select", "argmax_f32");
    }

    void embedding(Tensor table, Tensor ids, Tensor out) {
        ctx.devContiguous("embedding table", table, null);
        ctx.devContiguous("embedding ids", ids, null);
        ctx.devContiguous("embedding out", out, DType.F32);
        if (table.rank() != 2 || (table.dtype() != DType.F32 && table.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("embedding: table must be f32 or bf16 [vocab, hidden], got " + table);
        }
        integral("embedding ids", ids);
        int n = Math.toIntExact(ids.numel());
        int h = table.size(1);
        if (out.numel() != (long) n * h) {
            throw new IllegalArgumentException("embedding: out " + out + " for " + n + " ids of width " + h);
        }
        if (n > 0) {
            long grid = Math.min(n, ctx.device.multiprocessors() * 16L);
            ctx.launch(embedding, grid, 256, table, table.dtype() == DType.BF16 ? 1 : 0,
                    ids, ids.dtype() == DType.I64 ? 1 : 0, out, n, h, table.dim(0), ctx.errorFlag);
        }
    }

    void topk(Tensor x, int k, Tensor values, Tensor indices) {
        ctx.devContiguous("topk x", x, DType.F32);
        ctx.devContiguous("topk values", values, DType.F32);
        ctx.devContiguous("topk indices", indices, null);
        integral("topk indices", indices);
        int n = x.size(-1);
        int r = CudaContext.rows(x);
        if (k <= 0 || k > n || values.numel() != (long) r * k || indices.numel() != (long) r * k) {
            throw new IllegalArgumentException("topk: k=" + k + " of " + x + " into " + values + ", " + indices);
        }
        if (r > 0) {
            ctx.launch(topk, r, CudaRowOps.rowBlock(n), x, n, k, values, indices,
                    indices.dtype() == DType.I64 ? 1 : 0);
        }
    }

    void argmax(Tensor x, Tensor out) {
        ctx.devContiguous("argmax x", x, DType.F32);
        ctx.devContiguous("argmax out", out, null);
        integral("argmax out", out);
        int n = x.size(-1);
        int r = CudaContext.rows(x);
        if (out.numel() != r) {
            throw new IllegalArgumentException("argmax: out " + out + " for " + r + " rows");
        }
        if (r > 0 && n > 0) {
            ctx.launch(argmax, r, CudaRowOps.rowBlock(n), x, n, out, out.dtype() == DType.I64 ? 1 : 0);
        }
    }

    private static void integral(String what, Tensor t) {
        if (t.dtype() != DType.I32 && t.dtype() != DType.I64) {
            throw new IllegalArgumentException(what + " must be i32 or i64, got " + t);
        }
    }
}
