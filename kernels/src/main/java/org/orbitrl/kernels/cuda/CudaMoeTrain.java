package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.MoeHostOps;
import org.orbitrl.kernels.MoeRoutingHostOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * The grouped mixture-of-experts block's operations on the device ({@code moe_train.cu}; the
 * contracts are {@link org.orbitrl.kernels.Backend}'s {@code moe*} methods). The expert products are
 * {@link CudaExpertGemm}'s: {@code chunk} active experts at a time dequantized into one reused bf16
 * buffer [chunk, N, K] (the only weight copy alive) by one launch, then one cuBLAS grouped product
 * over the chunk's experts and their contiguous rows (bf16 × bf16, f32 accumulate).
 */
final class CudaMoeTrain {
    private static final int BLOCK = 128;
    /**
     * {@code -Dorbit.cuda.groupedExperts=off}: the expert products one expert at a time through the
     * backend's own products ({@link MoeHostOps}), the plain reference of the grouped ones.
     */
    private static final boolean GROUPED = !"off".equals(System.getProperty("orbit.cuda.groupedExperts"));
    /**
     * {@code -Dorbit.cuda.narrowExperts=off}: f32 experts with a narrow side (LoRA factors) through the
     * grouped cuBLAS products as the other f32 experts (and the accumulating products as a product and an
     * axpy), instead of {@link CudaNarrowExperts}. Read at every call (benchmarks compare both).
     */
    static final String NARROW_PROPERTY = "orbit.cuda.narrowExperts";
    /**
     * {@code -Dorbit.cuda.moeGroup=single}: the grouping by one block ({@code moe_route}) instead of the
     * counting sort over the device ({@code moe_group_count}, {@code moe_group_scan},
     * {@code moe_group_scatter}). Read at every call.
     */
    static final String GROUP_PROPERTY = "orbit.cuda.moeGroup";
    /**
     * {@code -Dorbit.cuda.moeGather=elementwise}: moeGather a thread an element ({@code moe_gather_pairs})
     * instead of a block a row ({@code moe_gather_rows}). Read at every call.
     */
    static final String GATHER_PROPERTY = "orbit.cuda.moeGather";
    /**
     * {@code -Dorbit.cuda.moeTopk=block}: the top-k choice a block a token ({@code moe_topk_weights}) instead of a warp a
     * token ({@code moe_topk_warps}, the same choice and weights). Read at every call.
     */
    static final String TOPK_PROPERTY = "orbit.cuda.moeTopk";
    private static final int TOPK_WARPS = 8;   // tokens a block of moe_topk_warps (MT_WARPS)
    /** Most experts the counting sort takes (its scan is one block of 1024 threads, its scatter 8·E ints of shared memory). */
    private static final int SORT_MAX_EXPERTS = 1024;
    private static final int SORT_TILE = 2048;   // pairs a block of the counting sort (MG_TILE)
    private final CudaContext ctx;
    private final CudaBackend backend;
    private final Kernel topk;
    private final Kernel topkWarps;
    private final Kernel route;
    private final Kernel positions;
    private final Kernel gather;
    private final Kernel gatherRows;
    private final Kernel combine;
    private final Kernel expertBias;
    private final Kernel expertBiasPairs;
    private final Kernel weightGrad;
    private final Kernel routerBackward;
    private final Kernel sigmoidTopk;
    private final Kernel scoreTopk;
    private final Kernel sigmoidRouterBackward;
    private final Kernel groupCount;
    private final Kernel groupScan;
    private final Kernel groupScatter;
    private final CudaExpertGemm experts;
    private final CudaNarrowExperts narrow;
    private final CudaExactExperts exactExperts;
    private Tensor active;   // i32 [1 + E] written by the routing kernel
    private Tensor tileCounts;   // i32 [tiles, E] of the counting sort, grown on demand

    CudaMoeTrain(CudaContext ctx, CudaRowOps rowOps, CudaBackend backend) {
        this.ctx = ctx;
        this.backend = backend;
        this.experts = new CudaExpertGemm(ctx, rowOps);
        this.exactExperts = backend.exactExperts();
        this.narrow = new CudaNarrowExperts(ctx);
        this.topk = ctx.kernel("moe_train", "moe_topk_weights");
        this.topkWarps = ctx.kernel("moe_train", "moe_topk_warps");
        this.route = ctx.kernel("moe", "moe_route");
        this.positions = ctx.kernel("moe_train", "moe_positions");
        this.gather = ctx.kernel("moe_train", "moe_gather_pairs");
        this.gatherRows = ctx.kernel("moe_train", "moe_gather_rows");
        this.combine = ctx.kernel("moe_train", "moe_combine_grouped");
        this.expertBias = ctx.kernel("moe_train", "moe_expert_bias");
        this.expertBiasPairs = ctx.kernel("moe_train", "moe_expert_bias_pairs");
        this.weightGrad = ctx.kernel("moe_train", "moe_weight_grad");
        this.routerBackward = ctx.kernel("moe_train", "moe_router_backward");
        this.sigmoidTopk = ctx.kernel("moe_train", "moe_sigmoid_topk");
        this.scoreTopk = ctx.kernel("moe_train", "moe_score_topk");
        this.sigmoidRouterBackward = ctx.kernel("moe_train", "moe_sigmoid_router_backward");
        this.groupCount = ctx.kernel("moe_train", "moe_group_count");
        this.groupScan = ctx.kernel("moe_train", "moe_group_scan");
        this.groupScatter = ctx.kernel("moe_train", "moe_group_scatter");
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
            if (!"block".equals(System.getProperty(TOPK_PROPERTY)) && 4L * TOPK_WARPS * e <= 48 * 1024) {
                ctx.launchShared(topkWarps, (t + TOPK_WARPS - 1) / TOPK_WARPS, 32 * TOPK_WARPS, 4 * TOPK_WARPS * e, probs, t, e, k,
                        normalize ? 1 : 0, chosen, weights, ids);
            } else {
                ctx.launchShared(topk, t, BLOCK, 4 * e, probs, e, k, normalize ? 1 : 0, chosen, weights, ids);
            }
        }
    }

    /** Most groups of experts {@code moe_sigmoid_topk} takes (a lane a group; its static shared memory holds 32 a warp). */
    static final int SIGMOID_MAX_GROUPS = 32;
    /**
     * Most experts it takes: each of a block's 8 warps keeps its scores and choices in the 48 KiB of shared memory beside
     * the groups' scores and flags (736).
     */
    static final int SIGMOID_MAX_EXPERTS = (48 * 1024 - 2 * 4 * TOPK_WARPS * SIGMOID_MAX_GROUPS) / (2 * 4 * TOPK_WARPS);

    void sigmoidTopk(Tensor logits, Tensor bias, int groups, int topkGroups, int k, boolean normalize, float scaling, Tensor scores,
                     Tensor weights, Tensor ids) {
        MoeRoutingHostOps.checkSigmoidRouting("moeSigmoidTopk", logits, bias, groups, topkGroups, k, scores);
        ctx.devContiguous("moeSigmoidTopk logits", logits, DType.F32);
        ctx.devContiguous("moeSigmoidTopk scores", scores, DType.F32);
        ctx.devContiguous("moeSigmoidTopk weights", weights, DType.F32);
        ctx.devContiguous("moeSigmoidTopk ids", ids, DType.I32);
        if (bias != null) {
            ctx.devContiguous("moeSigmoidTopk bias", bias, DType.F32);
        }
        int e = logits.size(-1);
        int t = CudaContext.rows(logits);
        long p = (long) t * k;
        if (weights.numel() != p || ids.numel() != p || e > SIGMOID_MAX_EXPERTS || groups > SIGMOID_MAX_GROUPS) {
            throw new IllegalArgumentException("moeSigmoidTopk: top " + k + " of " + logits + " in " + groups + " groups into "
                    + weights + " and " + ids + " [tokens, k] (at most " + SIGMOID_MAX_EXPERTS + " experts and "
                    + SIGMOID_MAX_GROUPS + " groups)");
        }
        if (t > 0) {
            ctx.launchShared(sigmoidTopk, (t + TOPK_WARPS - 1) / TOPK_WARPS, 32 * TOPK_WARPS, 2 * 4 * TOPK_WARPS * e, logits, bias,
                    t, e, groups, topkGroups, k, normalize ? 1 : 0, scaling, scores, weights, ids);
        }
    }

    /** Most experts {@code moe_score_topk} takes: each of a block's 8 warps keeps its scores and choices in 48 KiB (768). */
    static final int SCORE_MAX_EXPERTS = 48 * 1024 / (2 * 4 * TOPK_WARPS);

    void scoreTopk(Tensor logits, boolean sqrtSoftplus, Tensor bias, Tensor fixed, int k, float scaling, Tensor scores,
                   Tensor weights, Tensor ids) {
        MoeRoutingHostOps.checkScoreRouting("moeScoreTopk", logits, bias, fixed, k, scores);
        ctx.devContiguous("moeScoreTopk logits", logits, DType.F32);
        ctx.devContiguous("moeScoreTopk scores", scores, DType.F32);
        ctx.devContiguous("moeScoreTopk weights", weights, DType.F32);
        ctx.devContiguous("moeScoreTopk ids", ids, DType.I32);
        if (bias != null) {
            ctx.devContiguous("moeScoreTopk bias", bias, DType.F32);
        }
        if (fixed != null) {
            ctx.devContiguous("moeScoreTopk fixed", fixed, DType.I32);
        }
        int e = logits.size(-1);
        int t = CudaContext.rows(logits);
        long p = (long) t * k;
        if (weights.numel() != p || ids.numel() != p || e > SCORE_MAX_EXPERTS) {
            throw new IllegalArgumentException("moeScoreTopk: top " + k + " of " + logits + " into " + weights + " and " + ids
                    + " [tokens, k] (at most " + SCORE_MAX_EXPERTS + " experts)");
        }
        if (t > 0) {
            ctx.launchShared(scoreTopk, (t + TOPK_WARPS - 1) / TOPK_WARPS, 32 * TOPK_WARPS, 2 * 4 * TOPK_WARPS * e, logits,
                    sqrtSoftplus ? 1 : 0, bias, fixed, t, e, k, scaling, scores, weights, ids, ctx.errorFlag);
        }
    }

    void sigmoidRouterBackward(Tensor scores, Tensor ids, Tensor dWeight, boolean normalize, float scaling, Tensor dLogits) {
        ctx.devContiguous("moeSigmoidRouterBackward scores", scores, DType.F32);
        ctx.devContiguous("moeSigmoidRouterBackward ids", ids, DType.I32);
        ctx.devContiguous("moeSigmoidRouterBackward dWeight", dWeight, DType.F32);
        ctx.devContiguous("moeSigmoidRouterBackward dLogits", dLogits, DType.F32);
        int e = scores.size(-1);
        int t = CudaContext.rows(scores);
        int k = t == 0 ? 1 : Math.toIntExact(ids.numel() / t);
        if (ids.numel() != (long) t * k || dWeight.numel() != ids.numel() || dLogits.numel() != scores.numel()) {
            throw new IllegalArgumentException("moeSigmoidRouterBackward: scores " + scores + ", ids " + ids + ", dWeight " + dWeight
                    + " [tokens, k] -> dLogits " + dLogits);
        }
        if (t > 0) {
            ctx.launch(sigmoidRouterBackward, (t + TOPK_WARPS - 1) / TOPK_WARPS, 32 * TOPK_WARPS, scores, ids, dWeight, t, e, k,
                    normalize ? 1 : 0, scaling, dLogits);
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
        if ("single".equals(System.getProperty(GROUP_PROPERTY)) || experts > SORT_MAX_EXPERTS || experts == 0) {
            if (active == null || active.numel() < experts + 1) {
                if (active != null) {
                    ctx.allocator.free(active);
                }
                active = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.I32, experts + 1);
            }
            ctx.launchShared(route, 1, 1024, CudaMoeOps.routeShared(experts, p), ids, p, experts, offsets, active, order,
                    ctx.errorFlag);
        } else {
            // counting sort: per tile of 2048 pairs the experts' counts, their scan into offsets and each
            // tile's first slots, then the stable scatter
            int tiles = Math.max(1, (p + SORT_TILE - 1) / SORT_TILE);
            long need = (long) tiles * experts;
            if (tileCounts == null || tileCounts.numel() < need) {
                if (tileCounts != null) {
                    ctx.allocator.free(tileCounts);
                }
                tileCounts = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.I32, Math.max(need, 1024));
            }
            ctx.launchShared(groupCount, tiles, 256, 4 * experts, ids, p, experts, tileCounts, ctx.errorFlag);
            ctx.launch(groupScan, 1, 1024, tileCounts, tiles, experts, offsets);
            if (p > 0) {
                ctx.launchShared(groupScatter, tiles, 256, 4 * 8 * experts, ids, p, experts, tileCounts, order);
            }
        }
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
            if ("elementwise".equals(System.getProperty(GATHER_PROPERTY))) {
                ctx.launch(gather, ctx.gridFor((long) p * h, 256), 256, src, order, k, weights, dst, p, h);
            } else {
                int vec = h % 4 == 0 && CudaAllocator.address(src) % 16 == 0 && CudaAllocator.address(dst) % 16 == 0 ? 1 : 0;
                ctx.launch(gatherRows, ctx.gridFor((long) p * 256, 256), 256, src, order, k, weights, dst, p, h, vec);
            }
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

    void expertBias(Tensor ys, Tensor bias, Tensor offsets) {
        ctx.devContiguous("moeExpertBias ys", ys, DType.F32);
        ctx.devContiguous("moeExpertBias bias", bias, DType.F32);
        ctx.devContiguous("moeExpertBias offsets", offsets, DType.I32);
        int n = ys.size(-1);
        int p = CudaContext.rows(ys);
        int e = bias.rank() == 2 ? bias.size(0) : 0;
        MoeHostOps.checkExpertBias(ys, bias, offsets.numel(), e, n, p);
        if ((long) p * n > 0) {
            ctx.launch(expertBias, p, BLOCK, ys, bias, offsets, e, n);
        }
    }

    void expertBiasPairs(Tensor ys, Tensor bias, Tensor ids) {
        ctx.devContiguous("moeExpertBiasPairs ys", ys, DType.F32);
        ctx.devContiguous("moeExpertBiasPairs bias", bias, DType.F32);
        ctx.devContiguous("moeExpertBiasPairs ids", ids, DType.I32);
        int n = ys.size(-1);
        int p = CudaContext.rows(ys);
        int e = bias.rank() == 2 ? bias.size(0) : 0;
        MoeHostOps.checkExpertBias(ys, bias, e + 1, e, n, p);
        if (ids.numel() != p) {
            throw new IllegalArgumentException("moeExpertBiasPairs: " + ids + " ids for the " + p + " rows of " + ys);
        }
        if ((long) p * n > 0) {
            ctx.launch(expertBiasPairs, p, BLOCK, ys, bias, ids, n);
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
     * in rows · W_e. Dense f32 experts with a narrow side (LoRA factors): {@link CudaNarrowExperts}.
     * Exact mode: the forward through {@link CudaExactExperts} (every expert in one launch, each row as the
     * backend's exact product of its expert alone) where it takes the call, otherwise each expert through
     * the backend's own exact products; transposed (an activation gradient, which need not be
     * batch-invariant) through {@link CudaExactExperts} for quantized and bf16 experts, as outside exact mode
     * where {@link CudaNarrowExperts} takes it (f32 accuracy, a fixed order), otherwise each expert through the
     * backend's exact products. The grouped products switched
     * off, chunk ≤ 0 with a quantized expert among those with rows, or rows not on 16-byte boundaries: each
     * expert through the backend's own products; otherwise the grouped products ({@link CudaExpertGemm}).
     */
    void expertMatmul(Tensor in, ExpertWeights w, int[] offsets, Tensor out, int chunk, boolean transposed) {
        if (backend.exact() && (transposed ? exactExperts.matmulTransposed(in, w, offsets, out) : exactExperts.matmul(in, w, offsets, out))) {
            return;
        }
        if ((!backend.exact() || transposed) && GROUPED && narrowOn() && CudaNarrowExperts.handles(w, offsets)) {
            narrow.matmul(transposed ? "moeExpertMatmulTransposed" : "moeExpertMatmul", in, w, offsets, out, transposed, 1f, 0f);
            return;
        }
        if (backend.exact() || !GROUPED || (chunk <= 0 && quantizedActive(w, offsets)) || !CudaExpertGemm.aligned(in, w, out)) {
            // one product per expert, quantized ones through the backend's quantized products (no chunk buffer)
            MoeHostOps.expertMatmul(backend, in, w, offsets, out, 0, transposed);
            return;
        }
        experts.matmul(in, w, offsets, out, chunk, transposed);
    }

    /**
     * See {@link org.orbitrl.kernels.Backend#moeExpertMatmulShared}: dense f32 sets with a narrow side of one shape (the
     * gate's and the up's LoRA A) in one launch of {@link CudaNarrowExperts}; bf16 and quantized sets through {@link
     * CudaExpertGemm#matmulShared} (the rows rounded to bf16 once) where it takes them; otherwise {@link #expertMatmul} a
     * set. The same bits either way.
     */
    void expertMatmulShared(Tensor in, ExpertWeights[] ws, int[] offsets, Tensor[] outs, int chunk) {
        if (ws.length != outs.length) {
            throw new IllegalArgumentException("moeExpertMatmulShared: " + ws.length + " expert sets for " + outs.length + " outputs");
        }
        if (ws.length == 0) {
            return;
        }
        if (!backend.exact() && GROUPED) {
            boolean narrowAll = narrowOn();
            for (ExpertWeights w : ws) {
                narrowAll &= CudaNarrowExperts.handles(w, offsets) && w.rows() == ws[0].rows() && w.cols() == ws[0].cols()
                        && w.experts() == ws[0].experts();
            }
            if (narrowAll) {
                narrow.matmul("moeExpertMatmulShared", in, ws, offsets, outs, false, 1f, 0f);
                return;
            }
            if (CudaExpertGemm.sharesRows(in, ws, offsets, outs, chunk)) {
                experts.matmulShared(in, ws, offsets, outs, chunk);
                return;
            }
        }
        for (int i = 0; i < ws.length; i++) {
            expertMatmul(in, ws[i], offsets, outs[i], chunk, false);
        }
    }

    /**
     * See {@link org.orbitrl.kernels.Backend#moeExpertMatmulAccumulate}: one launch with the accumulation
     * for dense f32 experts with a narrow side ({@link CudaNarrowExperts}; in exact mode transposed only, as
     * {@link #expertMatmul}); bf16 and quantized experts
     * through {@link CudaExpertGemm}'s batched tiles with β = 1 where {@link #expertMatmul} would take
     * them; otherwise the product into a temporary and an axpy.
     */
    void expertMatmulAccumulate(Tensor in, ExpertWeights w, int[] offsets, float scale, Tensor out, boolean transposed, int chunk) {
        String op = transposed ? "moeExpertMatmulTransposedAccumulate" : "moeExpertMatmulAccumulate";
        if ((!backend.exact() || transposed) && GROUPED && narrowOn() && CudaNarrowExperts.handles(w, offsets)) {
            narrow.matmul(op, in, w, offsets, out, transposed, scale, 1f);
            return;
        }
        if (!backend.exact() && GROUPED && !(chunk <= 0 && quantizedActive(w, offsets)) && CudaExpertGemm.aligned(in, w, out)
                && CudaExpertGemm.accumulates(w, offsets, transposed)) {
            experts.matmul(in, w, offsets, out, chunk, transposed, scale, true);
            return;
        }
        MoeHostOps.expertMatmulAccumulate(backend, in, w, offsets, scale, out, transposed, chunk);
    }

    /**
     * See {@link org.orbitrl.kernels.Backend#moeExpertMatmulRouted}: in exact mode through {@link
     * CudaExactExperts#matmulRouted} (the rows of {@link #expertMatmul}'s exact path), accumulating as {@link
     * #expertMatmulAccumulate} does there (the products into a temporary, then the backend's axpy); declined outside exact
     * mode, whose inference forwards of few tokens take the per-pair kernels instead.
     */
    boolean expertMatmulRouted(Tensor in, ExpertWeights w, Tensor offsets, float scale, Tensor out, boolean accumulate) {
        if (!accumulate && scale != 1f) {
            throw new IllegalArgumentException("moeExpertMatmulRouted: scale " + scale + " without accumulate (expected 1)");
        }
        if (!backend.exact()) {
            return false;
        }
        if (!accumulate) {
            return exactExperts.matmulRouted(in, w, offsets, out);
        }
        Tensor d = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.F32, out.numel());
        try {
            if (!exactExperts.matmulRouted(in, w, offsets, d.reshape(out.shape()))) {
                return false;
            }
            backend.axpy(scale, d.reshape(out.shape()), out);
            return true;
        } finally {
            ctx.allocator.release(d);
        }
    }

    /**
     * See {@link org.orbitrl.kernels.Backend#moeExpertWeightGrad}: with a narrow side (LoRA factors)
     * {@link CudaNarrowExperts}'s kernel (in exact mode too: f32 accuracy, a fixed order, and a gradient need not be
     * batch-invariant), otherwise one grouped f32 product (exact mode, strided or unaligned rows: one product per
     * expert).
     */
    void expertWeightGrad(Tensor dys, Tensor xs, int[] offsets, float scale, Tensor[] grads) {
        if (GROUPED && narrowOn() && dys.isContiguous() && xs.isContiguous() && CudaNarrowExperts.handlesGrad(dys, xs)) {
            narrow.weightGrad("moeExpertWeightGrad", dys, xs, offsets, scale, grads);
            return;
        }
        if (backend.exact() || !GROUPED || !dys.isContiguous() || !xs.isContiguous() || !CudaExpertGemm.aligned(dys, xs, grads)) {
            MoeHostOps.expertWeightGrad(backend, dys, xs, offsets, scale, grads);
            return;
        }
        experts.weightGrad(dys, xs, offsets, scale, grads);
    }

    /** See {@link CudaExpertGemm#bf16InF32Out()}. */
    Boolean groupedBf16InF32Out() {
        return experts.bf16InF32Out();
    }

    private static boolean narrowOn() {
        return !"off".equals(System.getProperty(NARROW_PROPERTY));
    }

    private static boolean quantizedActive(ExpertWeights w, int[] offsets) {
        w.requireHeld("moeExpertMatmul", offsets);
        for (int e = 0; e < w.experts(); e++) {
            if (offsets[e + 1] > offsets[e] && w.quantized(e) != null) {
                return true;
            }
        }
        return false;
    }
}
