package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.MoeHostOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.ArrayList;
import java.util.List;

/**
 * The grouped mixture-of-experts block's operations on the device ({@code moe_train.cu}; the
 * contracts are {@link org.orbitrl.kernels.Backend}'s {@code moe*} methods). The expert products
 * convert the grouped rows to bf16 once, dequantize {@code chunk} active experts at a time into one
 * reused bf16 buffer [chunk, N, K] (the only weight copy alive) and run one cuBLAS GEMM per expert
 * over its contiguous rows (bf16 × bf16, f32 accumulate).
 */
final class CudaMoeTrain {
    private static final int BLOCK = 128;
    private final CudaContext ctx;
    private final CudaRowOps rowOps;
    private final CudaMatmulOps matmul;
    private final CudaBackend backend;
    private final Kernel topk;
    private final Kernel route;
    private final Kernel positions;
    private final Kernel gather;
    private final Kernel combine;
    private final Kernel weightGrad;
    private final Kernel routerBackward;
    private Tensor active;   // i32 [1 + E] written by the routing kernel
    private Tensor rowsIn;   // bf16 [P, inCols], grown on demand
    private Tensor dequant;  // bf16 [chunk, N, K], grown on demand

    CudaMoeTrain(CudaContext ctx, CudaRowOps rowOps, CudaMatmulOps matmul, CudaBackend backend) {
        this.ctx = ctx;
        this.rowOps = rowOps;
        this.matmul = matmul;
        this.backend = backend;
        this.topk = ctx.kernel("moe_train", "moe_topk_weights");
        this.route = ctx.kernel("moe", "moe_route");
        this.positions = ctx.kernel("moe_train", "moe_positions");
        this.gather = ctx.kernel("moe_train", "moe_gather_pairs");
        this.combine = ctx.kernel("moe_train", "moe_combine_grouped");
        this.weightGrad = ctx.kernel("moe_train", "moe_weight_grad");
        this.routerBackward = ctx.kernel("moe_train", "moe_router_backward");
    }

    void topk(Tensor probs, int k, boolean normalize, Tensor chosen, Tensor weights, Tensor ids) {
        ctx.devContiguous("moeTopk probs", probs, DType.F32);
        ctx.devContiguous("moeTopk chosen", chosen, DType.F32);
        ctx.devContiguous("moeTopk weights", weights, DType.F32);
        ctx.devContiguous("moeTopk ids", ids, DType.I32);
        int e = probs.size(-1);
        int t = CudaContext.rows(probs);
        long p = (long) t * k;
        if (k <= 0 || k > e || chosen.numel() != p || weights.numel() != p || ids.numel() != p || 4L * e > 48 * 1024) {
            throw new IllegalArgumentException("moeTopk: top " + k + " of " + probs + " into " + chosen + ", " + weights + " and " + ids
                    + " [tokens, k] (at most 12288 experts)");
        }
        if (t > 0) {
            ctx.launchShared(topk, t, BLOCK, 4 * e, probs, e, k, normalize ? 1 : 0, chosen, weights, ids);
        }
    }

    void group(Tensor ids, int experts, Tensor offsets, Tensor order, Tensor position) {
        ctx.devContiguous("moeGroup ids", ids, DType.I32);
        ctx.devContiguous("moeGroup offsets", offsets, DType.I32);
        ctx.devContiguous("moeGroup order", order, DType.I32);
        ctx.devContiguous("moeGroup position", position, DType.I32);
        int p = Math.toIntExact(ids.numel());
        if (offsets.numel() != experts + 1 || order.numel() != p || position.numel() != p || 8L * experts > 48 * 1024) {
            throw new IllegalArgumentException("moeGroup: " + p + " pairs of " + experts + " experts into offsets " + offsets
                    + " [E + 1], order " + order + " and position " + position + " [pairs] (at most 6144 experts)");
        }
        if (active == null || active.numel() < experts + 1) {
            if (active != null) {
                ctx.allocator.free(active);
            }
            active = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.I32, experts + 1);
        }
        ctx.launchShared(route, 1, 1024, 8 * experts, ids, p, experts, offsets, active, order, ctx.errorFlag);
        if (p > 0) {
            ctx.launch(positions, ctx.gridFor(p, 256), 256, order, p, position);
        }
    }

    void gather(Tensor src, Tensor order, int k, Tensor weights, Tensor dst) {
        ctx.devContiguous("moeGather src", src, DType.F32);
        ctx.devContiguous("moeGather order", order, DType.I32);
        ctx.devContiguous("moeGather dst", dst, DType.F32);
        int h = src.size(-1);
        int p = Math.toIntExact(order.numel());
        if (weights != null) {
            ctx.devContiguous("moeGather weights", weights, DType.F32);
        }
        if (dst.numel() != (long) p * h || dst.size(-1) != h || (weights != null && weights.numel() != (long) CudaContext.rows(src) * k)) {
            throw new IllegalArgumentException("moeGather: " + p + " pairs (top " + k + ") of " + src + " into " + dst
                    + (weights == null ? "" : " weighted by " + weights));
        }
        if ((long) p * h > 0) {
            ctx.launch(gather, ctx.gridFor((long) p * h, 256), 256, src, order, k, weights, dst, p, h);
        }
    }

    void combine(Tensor ys, Tensor position, Tensor weights, Tensor out, boolean accumulate) {
        ctx.devContiguous("moeCombineGrouped ys", ys, DType.F32);
        ctx.devContiguous("moeCombineGrouped position", position, DType.I32);
        ctx.devContiguous("moeCombineGrouped out", out, DType.F32);
        int h = out.size(-1);
        int t = CudaContext.rows(out);
        int p = Math.toIntExact(position.numel());
        int k = t == 0 ? 1 : p / t;
        if (weights != null) {
            ctx.devContiguous("moeCombineGrouped weights", weights, DType.F32);
        }
        if (p != t * k || ys.numel() != (long) p * h || (weights != null && weights.numel() != p)) {
            throw new IllegalArgumentException("moeCombineGrouped: " + ys + " grouped rows into " + out + " through " + p
                    + " positions" + (weights == null ? "" : ", weights " + weights));
        }
        if (t > 0) {
            ctx.launch(combine, t, 256, ys, position, weights, k, out, accumulate ? 1 : 0, h);
        }
    }

    void weightGrad(Tensor dout, Tensor ys, Tensor position, Tensor dWeight) {
        ctx.devContiguous("moeWeightGrad dout", dout, DType.F32);
        ctx.devContiguous("moeWeightGrad ys", ys, DType.F32);
        ctx.devContiguous("moeWeightGrad position", position, DType.I32);
        ctx.devContiguous("moeWeightGrad dWeight", dWeight, DType.F32);
        int h = dout.size(-1);
        int t = CudaContext.rows(dout);
        int p = Math.toIntExact(position.numel());
        int k = t == 0 ? 1 : p / t;
        if (p != t * k || ys.numel() != (long) p * h || dWeight.numel() != p) {
            throw new IllegalArgumentException("moeWeightGrad: dout " + dout + ", grouped outputs " + ys + ", " + p + " positions into " + dWeight);
        }
        if (p > 0) {
            ctx.launch(weightGrad, (p + 7) / 8, 256, dout, ys, position, k, dWeight, p, h);
        }
    }

    void routerBackward(Tensor probs, Tensor chosen, Tensor weights, Tensor ids, Tensor dWeight, boolean normalize, Tensor dLogits) {
        ctx.devContiguous("moeRouterBackward probs", probs, DType.F32);
        ctx.devContiguous("moeRouterBackward chosen", chosen, DType.F32);
        ctx.devContiguous("moeRouterBackward weights", weights, DType.F32);
        ctx.devContiguous("moeRouterBackward ids", ids, DType.I32);
        ctx.devContiguous("moeRouterBackward dWeight", dWeight, DType.F32);
        ctx.devContiguous("moeRouterBackward dLogits", dLogits, DType.F32);
        int e = probs.size(-1);
        int t = CudaContext.rows(probs);
        int k = t == 0 ? 1 : Math.toIntExact(ids.numel() / t);
        long p = (long) t * k;
        if (chosen.numel() != p || weights.numel() != p || ids.numel() != p || dWeight.numel() != p
                || dLogits.numel() != probs.numel() || 4L * e > 48 * 1024) {
            throw new IllegalArgumentException("moeRouterBackward: probs " + probs + ", chosen " + chosen + ", weights " + weights
                    + ", ids " + ids + ", dWeight " + dWeight + " [tokens, k] -> dLogits " + dLogits);
        }
        if (t > 0) {
            ctx.launchShared(routerBackward, t, BLOCK, 4 * e, probs, chosen, weights, ids, dWeight, k, normalize ? 1 : 0, e, dLogits);
        }
    }

    /**
     * Forward ({@code transposed} false): out rows of expert e = in rows · W_eᵀ; transposed: out rows =
     * in rows · W_e. chunk ≤ 0 (or exact mode): each expert through the backend's own products, no buffer.
     */
    void expertMatmul(Tensor in, ExpertWeights w, int[] offsets, Tensor out, int chunk, boolean transposed) {
        if (chunk <= 0 || backend.exact()) {   // exact mode: the exact quantized products on the weights as stored
            MoeHostOps.expertMatmul(backend, in, w, offsets, out, 0, transposed);
            return;
        }
        String op = transposed ? "moeExpertMatmulTransposed" : "moeExpertMatmul";
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
        List<Integer> act = new ArrayList<>();
        for (int e = 0; e < w.experts(); e++) {
            if (offsets[e + 1] > offsets[e]) {
                act.add(e);
            }
        }
        if (act.isEmpty()) {
            return;
        }
        int c = Math.min(chunk, act.size());
        rowsIn = grown(rowsIn, MemoryCategory.ACTIVATIONS, (long) p * inCols);
        dequant = grown(dequant, MemoryCategory.DEQUANT_BUFFERS, (long) c * n * k);
        Tensor xs = rowsIn.slice(0, 0, (long) p * inCols);           // bf16 [P, inCols]
        rowOps.toBf16(in, xs, (long) p * inCols);
        long xBase = CudaAllocator.address(xs);
        long yBase = CudaAllocator.address(out);
        for (int start = 0; start < act.size(); start += c) {
            int end = Math.min(act.size(), start + c);
            long[] wa = new long[end - start];
            for (int j = start; j < end; j++) {
                int e = act.get(j);
                Tensor slot = dequant.slice(0, (long) (j - start) * n * k, (long) (j - start + 1) * n * k);   // bf16 [n·k]
                QuantizedTensor q = w.quantized(e);
                Tensor d = w.dense(e);
                if (q != null) {
                    matmul.dequantize(q, slot);
                    wa[j - start] = CudaAllocator.address(slot);
                } else if (d.dtype() == DType.BF16) {
                    ctx.devContiguous(op + " expert " + e, d, DType.BF16);
                    wa[j - start] = CudaAllocator.address(d);
                } else {
                    ctx.devContiguous(op + " expert " + e, d, DType.F32);
                    rowOps.toBf16(d, slot, (long) n * k);
                    wa[j - start] = CudaAllocator.address(slot);
                }
            }
            for (int j = start; j < end; j++) {
                int e = act.get(j);
                int m = offsets[e + 1] - offsets[e];
                long xa = xBase + (long) offsets[e] * inCols * 2;
                long ya = yBase + (long) offsets[e] * outCols * 4;
                if (transposed) {
                    ctx.cublas.gemmNN(xa, wa[j - start], ya, m, k, n, true);   // [m, n] · [n, k]
                } else {
                    ctx.cublas.gemm(xa, wa[j - start], ya, m, n, k, true);     // [m, k] · [n, k]ᵀ
                }
            }
        }
    }

    /** {@code current} if it holds {@code elements} bf16 values, else a new buffer (the old one freed). */
    private Tensor grown(Tensor current, MemoryCategory category, long elements) {
        if (current != null && current.numel() >= elements) {
            return current;
        }
        if (current != null) {
            ctx.allocator.free(current);
        }
        return ctx.allocator.allocate(category, DType.BF16, Math.max(elements, 1024));
    }
}
