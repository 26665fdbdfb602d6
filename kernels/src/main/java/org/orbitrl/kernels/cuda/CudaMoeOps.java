package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.DevicePointer;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;

import static org.bytedeco.cuda.global.cudart.cudaMemcpyAsync;
import static org.bytedeco.cuda.global.cudart.cudaMemcpyDeviceToHost;

/**
 * Mixture-of-experts products on the device, for every token count:
 * <ul>
 *   <li>{@link #route}: pairs grouped by expert on the device (one launch, {@code moe.cu});</li>
 *   <li>{@link #grouped}: decode at any batch, every weight byte of an active expert read once: INT4
 *       experts at more than one token take the tensor-core kernel ({@link CudaMoeMma}: x rounded to
 *       bf16, weights exact, f32 accumulation), everything else the fused dequantize-GEMV over each
 *       active expert's pairs (x and weights exact in f32);</li>
 *   <li>{@link #chunked}: large token counts: x rows gathered by expert and rounded to bf16,
 *       {@code chunkExperts} active experts dequantized at a time into one reused bf16 buffer, one
 *       cuBLAS GEMM per expert (bf16 × bf16, f32 accumulate), rows scattered back to pair order;</li>
 *   <li>{@link #backwardInput}: the activation gradient through the frozen base, dx = dy · W, the same
 *       way (no weight gradient is ever formed).</li>
 * </ul>
 * The chunked paths read the per-expert counts on the host (one synchronisation per call).
 */
final class CudaMoeOps {
    /** Threads of a {@code moe_combine} block: a column each, so a token's row takes {@code ceil(H / 256)} blocks. */
    private static final int COMBINE_THREADS = 256;
    private final CudaContext ctx;
    private final CudaMatmulOps matmul;
    private final CudaQgemv qgemv;
    private final CudaMoeMma mma;
    private boolean tensorCores = true;
    private final Kernel route;
    private final Kernel gather;
    private final Kernel scatter;
    private final Kernel combine;
    private final Kernel router;
    private final Kernel routerLogits;
    private final Kernel swiglu;
    private final Kernel toBf16;
    /** {@code -Dorbit.cuda.router=block}: the router in one block per token (the logits and the top-k together). */
    private static final boolean SPREAD_ROUTER = !"block".equals(System.getProperty("orbit.cuda.router"));
    private Tensor rowsIn;   // bf16 [pairs, K or N], grown on demand
    private Tensor rowsOut;  // f32 [pairs, N or K]
    private Tensor dequant;  // bf16 [chunkExperts, N, K]

    CudaMoeOps(CudaContext ctx, CudaMatmulOps matmul, CudaQgemv qgemv) {
        this.ctx = ctx;
        this.matmul = matmul;
        this.qgemv = qgemv;
        this.mma = new CudaMoeMma(ctx);
        this.route = ctx.kernel("moe", "moe_route");
        this.gather = ctx.kernel("moe", "moe_gather_bf16");
        this.scatter = ctx.kernel("moe", "moe_scatter_rows");
        this.combine = ctx.kernel("moe", "moe_combine");
        this.router = ctx.kernel("moe", "moe_router_topk");
        this.routerLogits = ctx.kernel("moe", "moe_router_logits");
        this.swiglu = ctx.kernel("elementwise", "swiglu_f32");
        this.toBf16 = ctx.kernel("elementwise", "f32_to_bf16");
    }

    void routerTopk(Tensor x, Tensor w, int topk, boolean normalize, Tensor values, Tensor indices) {
        ctx.devContiguous("moeRouterTopk x", x, DType.F32);
        ctx.devContiguous("moeRouterTopk router weight", w, DType.BF16);
        ctx.devContiguous("moeRouterTopk values", values, DType.F32);
        ctx.devContiguous("moeRouterTopk indices", indices, DType.I32);
        int h = x.size(-1);
        int tokens = CudaContext.rows(x);
        if (w.rank() != 2 || w.dim(1) != h || h % 8 != 0 || topk <= 0 || topk > w.dim(0)
                || values.numel() != (long) tokens * topk || indices.numel() != (long) tokens * topk) {
            throw new IllegalArgumentException("moeRouterTopk: x " + x + " (hidden a multiple of 8), router " + w + " [experts, hidden], top "
                    + topk + " into " + values + " and " + indices + " [tokens, topk]");
        }
        int e = w.size(0);
        long shared = 4L * (h + e);
        if (shared > 48 * 1024 || CudaAllocator.address(w) % 16 != 0) {
            throw new IllegalArgumentException("moeRouterTopk: hidden " + h + " + experts " + e + " exceed the kernel's shared memory, or "
                    + w + " is not 16-byte aligned");
        }
        if (tokens == 0) {
            return;
        }
        if (SPREAD_ROUTER) {
            // The logits over the whole device (a block per token and 8 experts), then one warp per token
            // for the softmax and the top-k: one block per token left a single SM reading the router at
            // batch 1 (64 us a layer on the H200, 43% of a Qwen3-30B-A3B decode step).
            Tensor logits = ctx.scratch(CudaContext.Scratch.ROUTER_LOGITS, DType.F32, (long) tokens * e);   // [tokens, E]
            int chunks = (e + 7) / 8;
            ctx.launchShared(routerLogits, (long) tokens * chunks, 256, 4 * h, x, w, h, e, logits);
            ctx.launchShared(router, tokens, 32, 4 * (h + e), x, w, h, e, topk, normalize ? 1 : 0, values, indices, logits);
        } else {
            ctx.launchShared(router, tokens, 256, (int) shared, x, w, h, e, topk, normalize ? 1 : 0, values, indices, 0L);
        }
    }

    void combine(Tensor ys, Tensor weights, boolean normalize, Tensor out, boolean accumulate) {
        ctx.devContiguous("moeCombine expert outputs", ys, DType.F32);
        ctx.devContiguous("moeCombine weights", weights, DType.F32);
        ctx.devContiguous("moeCombine out", out, DType.F32);
        int h = out.size(-1);
        int tokens = CudaContext.rows(out);
        int topk = weights.size(-1);
        if (CudaContext.rows(weights) != tokens || ys.numel() != (long) tokens * topk * h) {
            throw new IllegalArgumentException("moeCombine: expert outputs " + ys + " must be [tokens*topk, " + h + "] for weights "
                    + weights + " [tokens, topk] and out " + out + " [tokens, " + h + "]");
        }
        if (tokens > 0) {
            // a column a thread: one round trip of its topk loads, not one a 256-column pass of a single block
            int chunks = Math.min((h + COMBINE_THREADS - 1) / COMBINE_THREADS, 65535);
            ctx.launch2d(combine, tokens, chunks, COMBINE_THREADS, ys, weights, topk, normalize ? 1 : 0, out, accumulate ? 1 : 0, h);
        }
    }

    void route(Tensor ids, MoeRouting routing) {
        ctx.devContiguous("moeRoute expert ids", ids, DType.I32);
        int pairs = Math.toIntExact(ids.numel());
        int topk = ids.rank() == 0 ? 1 : ids.size(-1);
        routing.routed(pairs, topk);
        int e = routing.numExperts();
        if (2L * e * 4 > 48 * 1024) {
            throw new IllegalArgumentException("moeRoute: " + e + " experts exceed the routing kernel's shared memory (6144 at most)");
        }
        Tensor order = routing.order();
        ctx.launchShared(route, 1, 1024, routeShared(e, pairs), ids, pairs, e, routing.offsets(), routing.active(), order,
                ctx.errorFlag);
    }

    /** Pairs up to which {@code moe_route} ranks every pair at once, given room for their ids (MR_RANK_PAIRS in moe.cu). */
    static final int ROUTE_RANK_PAIRS = 1024;

    /**
     * {@code moe_route}'s shared memory: two ints an expert, and when it fits (the parallel placing) a byte an expert for
     * each 32-pair tile (its count of that expert's pairs), rounded up to whole ints.
     */
    static int routeShared(int experts, int pairs) {
        int shared = 2 * experts * 4;
        long table = ((long) (pairs + 31) / 32 * experts + 3) / 4 * 4;
        return pairs <= ROUTE_RANK_PAIRS && shared + table <= 48 * 1024 ? shared + (int) table : shared;
    }

    /** x rows: tokens (shared by a token's experts) or pairs; returns pair / xDiv's divisor. */
    private static int xDiv(String op, Tensor x, MoeRouting r, int k) {
        int rows = CudaContext.rows(x);
        int tokens = r.pairs() / Math.max(1, r.topk());
        if (x.size(-1) != k || (rows != tokens && rows != r.pairs())) {
            throw new IllegalArgumentException(op + ": x " + x + " must have rows of " + k + " for each of the " + tokens
                    + " tokens or " + r.pairs() + " pairs");
        }
        return rows == r.pairs() ? 1 : r.topk();
    }

    private static int[] expertShape(String op, QuantizedTensor experts, MoeRouting r) {
        int e = r.numExperts();
        if (experts.rows() % e != 0) {
            throw new IllegalArgumentException(op + ": " + experts + " does not stack " + e + " experts");
        }
        return new int[]{Math.toIntExact(experts.rows() / e), Math.toIntExact(experts.cols())};
    }

    void grouped(Tensor x, QuantizedTensor experts, MoeRouting r, Tensor y) {
        QuantLayout layout = QuantLayout.of(experts, ctx);
        int[] nk = expertShape("moeMatmulGrouped", experts, r);
        ctx.devContiguous("moeMatmulGrouped x", x, null);
        ctx.devContiguous("moeMatmulGrouped y", y, DType.F32);
        int xDiv = xDiv("moeMatmulGrouped", x, r, nk[1]);
        int pairs = r.pairs();
        if (y.numel() != (long) pairs * nk[0]) {
            throw new IllegalArgumentException("moeMatmulGrouped: y " + y + " must hold " + pairs + " x " + nk[0] + " values");
        }
        if (pairs == 0) {
            return;
        }
        int tokens = pairs / Math.max(1, r.topk());
        if (tensorCores && tokens > 1 && CudaMoeMma.supportsPlain(layout, experts, x, nk[1])) {
            mma.launch(x, xDiv, experts, r, y, nk[0], nk[1]);
            return;
        }
        int blocks = Math.min(r.numExperts(), pairs);
        int perExpert = (2 * pairs + blocks - 1) / blocks;
        qgemv.launch(CudaQgemv.MODE_GROUPED, x, experts, layout, y, blocks, perExpert, xDiv, null, r, nk[0], nk[1], r.numExperts());
    }

    /**
     * {@code act[p] = silu(x[p / xDiv] · G_eᵀ) · (x[p / xDiv] · U_eᵀ)} rounded to bf16: one launch of
     * {@link CudaMoeMma#launchGateUp} where the tensor-core kernel takes both matrices and the fused
     * shapes are on, else the two {@link #grouped} products, the SwiGLU and the rounding.
     */
    void gateUp(Tensor x, QuantizedTensor gate, QuantizedTensor up, MoeRouting r, Tensor act) {
        int[] nk = expertShape("moeSwigluGrouped gate", gate, r);
        int[] nkUp = expertShape("moeSwigluGrouped up", up, r);
        if (nk[0] != nkUp[0] || nk[1] != nkUp[1]) {
            throw new IllegalArgumentException("moeSwigluGrouped: gate " + gate + " and up " + up + " must stack experts of the same shape");
        }
        ctx.devContiguous("moeSwigluGrouped x", x, null);
        ctx.devContiguous("moeSwigluGrouped act", act, DType.BF16);
        int xDiv = xDiv("moeSwigluGrouped", x, r, nk[1]);
        int pairs = r.pairs();
        long elements = (long) pairs * nk[0];
        if (act.numel() != elements) {
            throw new IllegalArgumentException("moeSwigluGrouped: act " + act + " must hold " + pairs + " x " + nk[0] + " values");
        }
        if (pairs == 0) {
            return;
        }
        int tokens = pairs / Math.max(1, r.topk());
        if (mma.fused() && tensorCores && tokens > 1 && CudaMoeMma.supports(QuantLayout.of(gate, ctx), gate, x, nk[1])
                && CudaMoeMma.supports(QuantLayout.of(up, ctx), up, x, nk[1])) {
            mma.launchGateUp(x, xDiv, gate, up, r, act, nk[0], nk[1]);
            return;
        }
        Tensor g = ctx.scratch(CudaContext.Scratch.MOE_GATE, DType.F32, elements); // [pairs, N]
        Tensor u = ctx.scratch(CudaContext.Scratch.MOE_UP, DType.F32, elements);   // [pairs, N]
        grouped(x, gate, r, g);
        grouped(x, up, r, u);
        long grid = ctx.gridFor(elements, 256);
        ctx.launch(swiglu, grid, 256, g, u, g, elements);
        ctx.launch(toBf16, grid, 256, g, act, elements);
    }

    /**
     * Gate and up with LoRA terms and the SwiGLU in one tensor-core launch ({@link CudaMoeMma#launchGateUpLora}), f32 x
     * and act; false (nothing launched) where the fused shapes or the tensor cores are off or the kernel does not take
     * the operands.
     */
    boolean gateUpLora(Tensor x, int xDiv, QuantizedTensor gate, QuantizedTensor up, MoeRouting r, Tensor act, int n, int k,
                       Tensor gateLo, Tensor gateB, float gateScale, Tensor upLo, Tensor upB, float upScale, int rank) {
        if (!takesLora(x, gate, k) || !takesLora(x, up, k)) {
            return false;
        }
        mma.launchGateUpLora(x, xDiv, gate, up, r, act, n, k, gateLo, gateB, gateScale, upLo, upB, upScale, rank);
        return true;
    }

    /**
     * One matrix's products with a LoRA term in one tensor-core launch ({@link CudaMoeMma#launchLora}), f32 x and y; false
     * (nothing launched) where the fused shapes or the tensor cores are off or the kernel does not take the operands.
     */
    boolean groupedLora(Tensor x, int xDiv, QuantizedTensor w, MoeRouting r, Tensor y, int n, int k, Tensor lo, Tensor table,
                        float scale, int rank) {
        if (!takesLora(x, w, k)) {
            return false;
        }
        mma.launchLora(x, xDiv, w, r, y, n, k, lo, table, scale, rank);
        return true;
    }

    /** Whether the LoRA-term launches take f32 x against INT4 experts w: the fused shapes and the tensor cores on, and the kernel's operands. */
    private boolean takesLora(Tensor x, QuantizedTensor w, int k) {
        return mma.fused() && tensorCores && x.dtype() == DType.F32 && CudaMoeMma.supports(QuantLayout.of(w, ctx), w, x, k);
    }

    /** Whether the decode products take the fused launch shapes ({@link CudaMoeMma#fused}). */
    boolean fused() {
        return mma.fused();
    }

    void fused(boolean enabled) {
        mma.fused(enabled);
    }

    /** Whether {@link #grouped} may take the tensor-core kernel (on unless turned off). */
    void tensorCores(boolean enabled) {
        tensorCores = enabled;
    }

    void chunked(Tensor x, QuantizedTensor experts, MoeRouting r, Tensor y, int chunkExperts) {
        int[] nk = expertShape("moeMatmulChunked", experts, r);
        ctx.devContiguous("moeMatmulChunked x", x, DType.F32);
        ctx.devContiguous("moeMatmulChunked y", y, DType.F32);
        int xDiv = xDiv("moeMatmulChunked", x, r, nk[1]);
        if (y.numel() != (long) r.pairs() * nk[0]) {
            throw new IllegalArgumentException("moeMatmulChunked: y " + y + " must hold " + r.pairs() + " x " + nk[0] + " values");
        }
        run(x, xDiv, experts, r, y, nk[0], nk[1], chunkExperts, false);
    }

    void backwardInput(Tensor dy, QuantizedTensor experts, MoeRouting r, Tensor dx, int chunkExperts) {
        int[] nk = expertShape("moeBackwardInput", experts, r);
        ctx.devContiguous("moeBackwardInput dy", dy, DType.F32);
        ctx.devContiguous("moeBackwardInput dx", dx, DType.F32);
        if (dy.numel() != (long) r.pairs() * nk[0] || dx.numel() != (long) r.pairs() * nk[1]) {
            throw new IllegalArgumentException("moeBackwardInput: dy " + dy + " must hold " + r.pairs() + " x " + nk[0]
                    + " and dx " + dx + " " + r.pairs() + " x " + nk[1] + " values (one row per pair)");
        }
        run(dy, 1, experts, r, dx, nk[0], nk[1], chunkExperts, true);
    }

    /**
     * Forward: out[p] = in[p / div] · W_eᵀ (in rows of K, out rows of N). Backward: out[p] = in[p] · W_e
     * (in rows of N, out rows of K).
     */
    private void run(Tensor in, int div, QuantizedTensor experts, MoeRouting r, Tensor out, int n, int k, int chunkExperts,
                     boolean backward) {
        if (chunkExperts <= 0) {
            throw new IllegalArgumentException("chunk of experts must be positive, got " + chunkExperts);
        }
        int pairs = r.pairs();
        if (pairs == 0) {
            return;
        }
        int inCols = backward ? n : k;
        int outCols = backward ? k : n;
        int[] offsets = hostOffsets(r);
        List<Integer> active = new ArrayList<>();
        for (int e = 0; e < r.numExperts(); e++) {
            if (offsets[e + 1] > offsets[e]) {
                active.add(e);
            }
        }
        int c = Math.min(chunkExperts, active.size());
        rowsIn = grown(rowsIn, MemoryCategory.ACTIVATIONS, DType.BF16, (long) pairs * inCols);
        rowsOut = grown(rowsOut, MemoryCategory.ACTIVATIONS, DType.F32, (long) pairs * outCols);
        dequant = grown(dequant, MemoryCategory.DEQUANT_BUFFERS, DType.BF16, (long) c * n * k);
        Tensor xs = rowsIn.slice(0, 0, (long) pairs * inCols);    // [pairs, inCols] grouped by expert
        Tensor ys = rowsOut.slice(0, 0, (long) pairs * outCols);  // [pairs, outCols] grouped by expert
        Tensor wb = dequant.slice(0, 0, (long) c * n * k);        // [c, n, k]
        long total = (long) pairs * inCols;
        ctx.launch(gather, ctx.gridFor(total, 256), 256, in, div, r.order(), xs, pairs, inCols);
        for (int start = 0; start < active.size(); start += c) {
            int end = Math.min(active.size(), start + c);
            for (int j = start; j < end; j++) {
                matmul.dequantize(expert(experts, active.get(j), n), wb.slice(0, (long) (j - start) * n * k, (long) (j - start + 1) * n * k));
            }
            for (int j = start; j < end; j++) {
                int e = active.get(j);
                int m = offsets[e + 1] - offsets[e];
                long xa = CudaAllocator.address(xs) + (long) offsets[e] * inCols * 2;
                long wa = CudaAllocator.address(wb) + (long) (j - start) * n * k * 2;
                long ya = CudaAllocator.address(ys) + (long) offsets[e] * outCols * 4;
                if (backward) {
                    ctx.cublas.gemmNN(xa, wa, ya, m, k, n, true); // [m, n] · [n, k]
                } else {
                    ctx.cublas.gemm(xa, wa, ya, m, n, k, true);   // [m, k] · [n, k]ᵀ
                }
            }
        }
        long outTotal = (long) pairs * outCols;
        ctx.launch(scatter, ctx.gridFor(outTotal, 256), 256, ys, r.order(), out, pairs, outCols);
    }

    /** The routing's offsets [E + 1] on the host (waits for the stream). */
    private int[] hostOffsets(MoeRouting r) {
        Tensor dev = r.offsets();
        Tensor host = Tensor.allocate(Arena.ofAuto(), DType.I32, dev.shape()); // [E + 1]
        ctx.device.bind();
        CudaCheck.check(cudaMemcpyAsync(new DevicePointer(CudaAllocator.address(host)), new DevicePointer(CudaAllocator.address(dev)),
                dev.byteSize(), cudaMemcpyDeviceToHost, ctx.stream.handle()), "cudaMemcpyAsync routing offsets");
        ctx.stream.synchronize();
        long[] v = host.toLongArray();
        int[] out = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = (int) v[i];
        }
        return out;
    }

    /** Expert e of a stacked [E·n, K] matrix as its own [n, K] matrix (views, no copy). */
    static QuantizedTensor expert(QuantizedTensor s, int e, int n) {
        return ExpertWeights.expertOfStack(s, e, n);
    }

    /** {@code current} if it holds {@code elements}, else a new buffer (the old one freed). */
    private Tensor grown(Tensor current, MemoryCategory category, DType dtype, long elements) {
        if (current != null && current.numel() >= elements) {
            return current;
        }
        if (current != null) {
            ctx.allocator.free(current);
        }
        return ctx.allocator.allocate(category, dtype, Math.max(elements, 1024));
    }
}
