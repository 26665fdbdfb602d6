package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * The mixture-of-experts operations of a {@link CudaBackend} ({@link CudaBackend#moe()}): the decode
 * products over stacked quantized experts, the device routing buffer and the chunked products for
 * large token counts, and the grouped block of training and prefill (the {@code moe*} operations of
 * {@link org.orbitrl.kernels.Backend}, which the backend forwards here).
 */
public final class CudaMoe {
    private final CudaContext ctx;
    private final CudaMatmulOps matmul;
    private final CudaMoeOps ops;
    private final CudaMoeTrain train;

    CudaMoe(CudaContext ctx, CudaRowOps rowOps, CudaMatmulOps matmul, CudaBackend backend) {
        this.ctx = ctx;
        this.matmul = matmul;
        this.ops = new CudaMoeOps(ctx, matmul, matmul.qgemv);
        this.train = new CudaMoeTrain(ctx, rowOps, backend);
    }

    /** The decode operations' launcher, shared with {@link CudaFusedDecode}. */
    CudaMoeOps ops() {
        return ops;
    }

    /**
     * Mixture-of-experts decode in one launch: for every (token, expert) pair p,
     * {@code y[p] = x[row] · W[ids[p]]ᵀ} with the fused dequantize-GEMV.
     *
     * @param x          f32 [tokens, K] (each token's experts read its row: gate and up projections) or
     *                   [tokens·topk, K] (one row per pair: the down projection)
     * @param experts    the layer's experts stacked as one quantized [E·N, K] matrix (expert e: rows e·N ..)
     * @param numExperts E
     * @param ids        i32 [tokens, topk], the experts each token is routed to; an id outside [0, E) is
     *                   reported by the next {@link CudaBackend#synchronize} as {@link IndexOutOfBoundsException}
     * @param y          f32 with tokens·topk·N elements, row p = pair p
     */
    public void moeMatmulQuantized(Tensor x, QuantizedTensor experts, int numExperts, Tensor ids, Tensor y) {
        ctx.device.bind();
        matmul.moeMatmulQuantized(x, experts, numExperts, ids, y);
    }

    /** A routing buffer for a layer of {@code numExperts} experts and up to {@code maxPairs} (token, expert) pairs. */
    public MoeRouting moeRouting(int numExperts, int maxPairs) {
        ctx.device.bind();
        return new MoeRouting(ctx.allocator, numExperts, maxPairs);
    }

    /**
     * Groups the pairs of {@code ids} (i32 [tokens, topk]) by expert into {@code routing}, on the device
     * (one launch, capturable in a CUDA graph). An id outside the layer's experts is reported by the
     * next {@link CudaBackend#synchronize} as {@link IndexOutOfBoundsException}.
     */
    public void moeRoute(Tensor ids, MoeRouting routing) {
        ctx.device.bind();
        ops.route(ids, routing);
    }

    /**
     * {@code y[p] = x[p or p / topk] · W[e(p)]ᵀ} for every routed pair p, each active expert's weight
     * read once, in one launch that reads the routing on the device: the decode path at any batch.
     * INT4 and MXFP4 experts at more than one token: tensor cores, x rounded to bf16 (see
     * {@link #moeGroupedTensorCores}); otherwise the fused dequantize-GEMV over the expert's pairs.
     *
     * @param x       f32 or bf16 [tokens, K] (shared by a token's experts) or [tokens·topk, K]
     * @param experts quantized [E·N, K], expert e's rows at e·N
     * @param y       f32 with tokens·topk·N elements, row p = pair p
     */
    public void moeMatmulGrouped(Tensor x, QuantizedTensor experts, MoeRouting routing, Tensor y) {
        ctx.device.bind();
        ops.grouped(x, experts, routing, y);
    }

    /**
     * The gate and up products of a SwiGLU expert layer and the activation between them, for every
     * routed pair p: {@code act[p] = silu(x[p / div] · G[e(p)]ᵀ) · (x[p / div] · U[e(p)]ᵀ)}, rounded to
     * bf16 (the next product, {@link #moeMatmulGrouped} over the down projection, rounds x to bf16 on
     * the tensor cores anyway). INT4 experts at more than one token take one tensor-core launch for both
     * matrices (see {@link #moeFusedDecode}); otherwise the two grouped products, the SwiGLU in f32 and
     * the rounding, with the same numbers. Capturable in a CUDA graph.
     *
     * @param x    f32 or bf16 [tokens, K] (shared by a token's experts) or [tokens·topk, K]
     * @param gate quantized [E·N, K]
     * @param up   quantized [E·N, K], the same format and shape
     * @param act  bf16 with tokens·topk·N elements, row p = pair p
     */
    public void moeSwigluGrouped(Tensor x, QuantizedTensor gate, QuantizedTensor up, MoeRouting routing, Tensor act) {
        ctx.device.bind();
        ops.gateUp(x, gate, up, routing, act);
    }

    /**
     * Whether the grouped decode products take the fused launch shapes: gate and up in one launch
     * ({@link #moeSwigluGrouped}), a weight stage refilled after its products, and short K (the down
     * projection) in three blocks an SM. On unless {@code -Dorbit.cuda.moeFused=off}; the numbers are
     * the same either way.
     */
    public boolean moeFusedDecode() {
        return ops.fused();
    }

    /** Turns the fused launch shapes of {@link #moeFusedDecode} on or off. */
    public void moeFusedDecode(boolean enabled) {
        ops.fused(enabled);
    }

    /**
     * Whether {@link #moeMatmulGrouped} may multiply INT4 and MXFP4 experts on the tensor cores when more than one
     * token is routed (x rounded to bf16, weight values exact, f32 accumulation; on by default). Off,
     * every batch takes the fused dequantize-GEMV (x and weights exact in f32), as the batch of one
     * always does.
     */
    public void moeGroupedTensorCores(boolean enabled) {
        ops.tensorCores(enabled);
    }

    /**
     * The same product for large token counts (prefill, training): {@code chunkExperts} active experts
     * at a time are dequantized into one reused bf16 buffer and multiplied through cuBLAS (x rounded to
     * bf16, f32 accumulation). Reads the per-expert counts on the host (one synchronisation).
     */
    public void moeMatmulChunked(Tensor x, QuantizedTensor experts, MoeRouting routing, Tensor y, int chunkExperts) {
        ctx.device.bind();
        ops.chunked(x, experts, routing, y, chunkExperts);
    }

    /**
     * The activation gradient through the frozen experts: {@code dx[p] = dy[p] · W[e(p)]} (dy f32
     * [pairs, N], dx f32 [pairs, K], one row per pair; a token's rows are summed by the caller). The
     * weight gradient is never formed. Chunked as {@link #moeMatmulChunked}.
     */
    public void moeBackwardInput(Tensor dy, QuantizedTensor experts, MoeRouting routing, Tensor dx, int chunkExperts) {
        ctx.device.bind();
        ops.backwardInput(dy, experts, routing, dx, chunkExperts);
    }

    /**
     * The router of a mixture-of-experts layer in one launch: logits {@code x · wᵀ} (x f32 [tokens, H],
     * w bf16 [E, H], f32 accumulation), softmax over the experts, the {@code topk} largest probabilities
     * in descending order (ties to the lower expert) into values f32 [tokens, topk] and indices i32
     * [tokens, topk], divided by their sum when {@code normalize} (Qwen3's norm_topk_prob).
     */
    public void moeRouterTopk(Tensor x, Tensor w, int topk, boolean normalize, Tensor values, Tensor indices) {
        ctx.device.bind();
        ops.routerTopk(x, w, topk, normalize, values, indices);
    }

    /**
     * {@code out[t] (+)= Σ_j w[t, j]·ys[t·topk + j]}, divided by {@code Σ_j w[t, j]} when {@code normalize}:
     * the routed experts' outputs weighted into each token's row (ys f32 [tokens·topk, H], weights f32
     * [tokens, topk], out f32 [tokens, H]; {@code accumulate} adds into out, e.g. the residual stream).
     */
    public void moeCombine(Tensor ys, Tensor weights, boolean normalize, Tensor out, boolean accumulate) {
        ctx.device.bind();
        ops.combine(ys, weights, normalize, out, accumulate);
    }

    // ------------------------------------------------------------------ the grouped block (Backend's moe* contracts)

    /** See {@link org.orbitrl.kernels.Backend#moeTopk}. */
    public void moeTopk(Tensor probs, int k, boolean normalize, Tensor chosen, Tensor weights, Tensor ids) {
        ctx.device.bind();
        train.topk(probs, k, normalize, chosen, weights, ids);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeSigmoidTopk}. */
    public void moeSigmoidTopk(Tensor logits, Tensor bias, int groups, int topkGroups, int k, boolean normalize, float scaling,
                               Tensor scores, Tensor weights, Tensor ids) {
        ctx.device.bind();
        train.sigmoidTopk(logits, bias, groups, topkGroups, k, normalize, scaling, scores, weights, ids);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeScoreTopk}. */
    public void moeScoreTopk(Tensor logits, boolean sqrtSoftplus, Tensor bias, Tensor fixed, int k, float scaling, Tensor scores,
                             Tensor weights, Tensor ids) {
        ctx.device.bind();
        train.scoreTopk(logits, sqrtSoftplus, bias, fixed, k, scaling, scores, weights, ids);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeSigmoidRouterBackward}. */
    public void moeSigmoidRouterBackward(Tensor scores, Tensor ids, Tensor dWeight, boolean normalize, float scaling, Tensor dLogits) {
        ctx.device.bind();
        train.sigmoidRouterBackward(scores, ids, dWeight, normalize, scaling, dLogits);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeGroup}; an id out of range is reported by the next {@link CudaBackend#synchronize}. */
    public void moeGroup(Tensor ids, int experts, Tensor offsets, Tensor order, Tensor position) {
        ctx.device.bind();
        train.group(ids, experts, offsets, order, position);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeGather}. */
    public void moeGather(Tensor src, Tensor order, int k, Tensor weights, Tensor dst) {
        ctx.device.bind();
        train.gather(src, order, k, weights, dst);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertMatmul}: chunked bf16 dequantization and one cuBLAS grouped product a chunk. */
    public void moeExpertMatmul(Tensor xs, ExpertWeights experts, int[] offsets, Tensor ys, int chunk) {
        ctx.device.bind();
        train.expertMatmul(xs, experts, offsets, ys, chunk, false);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertMatmulShared}. */
    public void moeExpertMatmulShared(Tensor xs, ExpertWeights[] experts, int[] offsets, Tensor[] ys, int chunk) {
        ctx.device.bind();
        train.expertMatmulShared(xs, experts, offsets, ys, chunk);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertMatmulTransposed}. */
    public void moeExpertMatmulTransposed(Tensor dys, ExpertWeights experts, int[] offsets, Tensor dxs, int chunk) {
        ctx.device.bind();
        train.expertMatmul(dys, experts, offsets, dxs, chunk, true);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertMatmulRouted}. */
    public boolean moeExpertMatmulRouted(Tensor xs, ExpertWeights experts, Tensor offsets, float scale, Tensor ys, boolean accumulate) {
        ctx.device.bind();
        return train.expertMatmulRouted(xs, experts, offsets, scale, ys, accumulate);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertMatmulAccumulate}. */
    public void moeExpertMatmulAccumulate(Tensor xs, ExpertWeights experts, int[] offsets, float scale, Tensor ys, boolean transposed,
                                          int chunk) {
        ctx.device.bind();
        train.expertMatmulAccumulate(xs, experts, offsets, scale, ys, transposed, chunk);
    }

    /**
     * Whether the grouped bf16 expert products have cuBLAS write f32 directly (true) or write bf16 rows
     * widened in place (false); null before the first such product.
     */
    Boolean groupedBf16InF32Out() {
        return train.groupedBf16InF32Out();
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertWeightGrad}: one cuBLAS grouped f32 product. */
    public void moeExpertWeightGrad(Tensor dys, Tensor xs, int[] offsets, float scale, Tensor[] grads) {
        ctx.device.bind();
        train.expertWeightGrad(dys, xs, offsets, scale, grads);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeCombineGrouped}. */
    public void moeCombineGrouped(Tensor ys, Tensor position, Tensor weights, Tensor out, boolean accumulate) {
        ctx.device.bind();
        train.combine(ys, position, weights, out, accumulate);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertBiasPairs}. */
    public void moeExpertBiasPairs(Tensor ys, Tensor bias, Tensor ids) {
        ctx.device.bind();
        train.expertBiasPairs(ys, bias, ids);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertBias}. */
    public void moeExpertBias(Tensor ys, Tensor bias, Tensor offsets) {
        ctx.device.bind();
        train.expertBias(ys, bias, offsets);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeWeightGrad}. */
    public void moeWeightGrad(Tensor dout, Tensor ys, Tensor position, Tensor dWeight) {
        ctx.device.bind();
        train.weightGrad(dout, ys, position, dWeight);
    }

    /** See {@link org.orbitrl.kernels.Backend#moeRouterBackward}. */
    public void moeRouterBackward(Tensor probs, Tensor chosen, Tensor weights, Tensor ids, Tensor dWeight, boolean normalize,
                                  Tensor dLogits) {
        ctx.device.bind();
        train.routerBackward(probs, chosen, weights, ids, dWeight, normalize, dLogits);
    }
}
