package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A decode step's MoE router on the device ({@link CudaFusedDecode#router()}): the router's product, the softmax and
 * the top-k of a few tokens in one launch, with the norm before it ({@link #moeRouterNormTopk}) or the residual add and
 * the norm ({@link #addNormRouterTopk}) folded in, and from {@link #tileRows}' token count a launch of tiles that can
 * also group the pairs by expert ({@link #moeRouterTopk}). The block-a-token launches spread a token's logits over
 * ceil(E / 4) blocks; the block that finishes the token last (the backend's tickets) selects its experts, so launches
 * on one backend run one after another (its stream).
 *
 * <p>Numbers: the logits are f32 activations times the router's bf16 values with f32 accumulation; ties go to the lower
 * expert; every form gives the same bits (no atomics on values), and each is capturable in a CUDA graph.
 */
public final class CudaDecodeRouter {
    /** Warps of a block-a-token launch's block, an expert each (moe_router_norm_topk). */
    private static final int ROUTER_WARPS = 4;
    /** Experts a block of {@code moe_router_tiles} takes (RT_WARPS in moe.cu), most x rows it stages, their bytes. */
    private static final int TILE_WARPS = 8;
    private static final int TILE_MOST_ROWS = 8;
    private static final int TILE_SHARED = 96 * 1024;
    /**
     * {@code -Dorbit.cuda.routerTiles=N}: the router of x as it is takes {@code moe_router_tiles} from N tokens a call
     * (8 by default; {@code off}: never), a block an expert chunk and a tile of tokens, where below it takes
     * {@code moe_router_norm_topk}, a block a token and four experts. The same bits either way. Read at each call.
     */
    static final String ROUTER_TILES_PROPERTY = "orbit.cuda.routerTiles";
    /** {@code -Dorbit.cuda.routerGroups=off}: the tiled router leaves the grouping of the pairs to its own launch. */
    static final String ROUTER_GROUPS_PROPERTY = "orbit.cuda.routerGroups";
    /** Shared memory the block-a-token launches take at most (hidden + experts floats). */
    private static final int SHARED_LIMIT = 48 * 1024;
    /**
     * {@value} ({@code on|off}, read at each call; on by default): {@link #moeRouterNormTopk}, {@link #moeRouterTopk}
     * where it takes the block-a-token launch (a decode step's few tokens) and {@link #addNormRouterTopk} take {@code
     * moe_router_norm_topk_pre} ({@code moe_router_add_norm_topk_pre}), whose warps issue their router rows' loads, and
     * whose blocks ask the L2 for the norm weight's lines, before the kernel waits for the launch before it (under
     * dependent launches they stream while that launch runs); the same sums, the same bits. Measured on an H100
     * (Qwen3-30B-A3B's captured one-sequence step): 2.903-2.921 ms against 2.930-2.954 with {@code off}.
     */
    static final String ROUTER_PROLOGUE_PROPERTY = "orbit.cuda.routerPrologue";
    /**
     * {@value} ({@code on|off}, read at each call; on by default): the prologue form's last block selects a token's
     * experts with all its warps ({@code moe_router_norm_topk_rk_pre}, {@code moe_router_add_norm_topk_rk_pre}: router.cuh's
     * router_select_block, each warp's first top-k by shuffles, then each candidate's place among them) where the logits
     * fit its threads, in place of its first warp's top-k rounds of reductions; the same values and experts. Taken where
     * the prologue form is ({@link #ROUTER_PROLOGUE_PROPERTY} or pending asks). Measured on an H100 (Qwen3-30B-A3B's
     * captured one-sequence step): the router's span 6.05 → 5.08 µs in the kernel timeline (50.5 µs a layer against
     * 51.2-51.3), the step 2.582-2.615 ms against 2.581-2.664 in three pairs of variants of one JVM.
     */
    static final String ROUTER_RANK_PROPERTY = "orbit.cuda.routerRank";
    /**
     * {@value} ({@code on|off}, read at each call; off by default, not yet measured): {@link #addNormRouterTopk}'s
     * block-selecting prologue form takes {@code moe_router_add_norm_topk_rk_pre_nb}, whose threads load the norm weight
     * as its bits and make it a value where the norm is applied: {@code moe_router_add_norm_topk_rk_pre}'s SASS (nvcc
     * 13.0, sm_90) converts each float4's bf16 weights right after their loads, so that a thread's four float4s of x, d
     * and the weight go out in four round trips, one after another, where here they go out together. The same bits.
     */
    static final String ROUTER_NORM_BITS_PROPERTY = "orbit.cuda.routerNormBits";
    /**
     * {@value} ({@code on|off}, read at each call; off by default): the block-a-token router of a decode step whose pairs
     * take {@link CudaMoeDecodePairs}' launches writes its logits (and h) and leaves ({@code moe_router_norm_logits_pre},
     * no ticket, no selection); the choice of experts is left to the launches that read the logits first ({@link
     * Pending}, a {@link Launcher.Deferred}): the gate/up launch over the same ids picks each pair's expert in its blocks
     * ({@code qgemv_swiglu_lora_*_xf_pk_*}, router.cuh's router_picks_block) and writes the ids, the down launch chooses
     * the experts and their weights in its prologue ({@code qgemv_down_combine_pre_pk_int4}) and writes the weights; any
     * other launch of the thread first, a host copy or a sync has {@code moe_router_select} choose them (router_select_block).
     * The same values and experts every way; the router's span loses its ticket, read-back and selection (about 3 µs in
     * the kernel timeline of a one-sequence Qwen3-30B-A3B step on an H100), the gate/up launch gains a selection. Measured
     * on an H100 (that step): 2.686-2.705 ms against 2.642-2.663 with it off, so it stays off (that form's gate/up kernel
     * spilled; the picks' fallback to the rescans since, which leaves it 8 bytes of spill, is not yet timed). The choice
     * is the router thread's: the launches that read the ids or weights must come from the thread that launched the
     * router (a decode step's do), since another thread's launch does not make it first.
     */
    static final String ROUTER_DEFER_PROPERTY = "orbit.cuda.routerDefer";
    /** Most frozen tensors one router launch asks of the L2 ({@link #prefetchFrozen}; the kernels' a0..a2). */
    static final int AHEAD = 3;
    /** Most experts a deferred choice takes: the gate/up pick's logits (QG_WARPS * 32 in qgemv.cu). */
    private static final int DEFER_MOST_EXPERTS = 256;

    private final CudaContext ctx;
    private final CudaRowOps rows;
    private final CudaMoeOps moeOps;
    private final Kernel routerNormTopk;
    private final Kernel routerNormTopkPre;
    private final Kernel routerTiles;
    private final Kernel routerAddNormTopk;
    private final Kernel routerAddNormTopkPre;
    private final Kernel routerNormTopkRank;
    private final Kernel routerAddNormTopkRank;
    private final Kernel routerAddNormTopkRankBits;
    private final Kernel routerLogits;
    private final Kernel routerSelect;
    /** The asks of {@link #prefetchFrozen} no router launch has carried yet. */
    private final List<Tensor> ahead = new ArrayList<>(AHEAD);
    /** Whether those asks go as bulk prefetches (else a line each). */
    private boolean aheadBulk;

    CudaDecodeRouter(CudaContext ctx, CudaRowOps rows, CudaMoeOps moeOps) {
        this.ctx = ctx;
        this.rows = rows;
        this.moeOps = moeOps;
        this.routerNormTopk = ctx.kernel("moe", "moe_router_norm_topk");
        this.routerNormTopkPre = ctx.kernel("moe", "moe_router_norm_topk_pre");
        this.routerTiles = ctx.kernel("moe", "moe_router_tiles");
        this.routerAddNormTopk = ctx.kernel("moe", "moe_router_add_norm_topk");
        this.routerAddNormTopkPre = ctx.kernel("moe", "moe_router_add_norm_topk_pre");
        this.routerNormTopkRank = ctx.kernel("moe", "moe_router_norm_topk_rk_pre");
        this.routerAddNormTopkRank = ctx.kernel("moe", "moe_router_add_norm_topk_rk_pre");
        this.routerAddNormTopkRankBits = ctx.kernel("moe", "moe_router_add_norm_topk_rk_pre_nb");
        this.routerLogits = ctx.kernel("moe", "moe_router_norm_logits_pre");
        this.routerSelect = ctx.kernel("moe", "moe_router_select");
    }

    /**
     * A router launch's choice of experts for {@code tokens} tokens, left to the launches that read its logits [T, E]
     * first ({@link #ROUTER_DEFER_PROPERTY}): until then values and indices [T, topk] hold nothing of it. {@code
     * idsWritten}: a gate/up launch has picked the experts and written indices; the weights are still to come.
     */
    record Pending(CudaDecodeRouter router, Tensor logits, Tensor values, Tensor indices, int tokens, int experts, int topk,
                   boolean normalize, boolean idsWritten) implements Launcher.Deferred {
        /** The same choice with the indices written. */
        Pending withIds() {
            return new Pending(router, logits, values, indices, tokens, experts, topk, normalize, true);
        }

        /** Whether this choice's indices are those at {@code ids}. */
        boolean writes(Tensor ids) {
            return CudaAllocator.address(ids) == CudaAllocator.address(indices) && ids.numel() == indices.numel();
        }

        /** {@code moe_router_select}: the values and indices from the logits, on the router's stream. */
        @Override
        public void settle() {
            router.select(this);
        }
    }

    /** Whether {@link #ROUTER_DEFER_PROPERTY} asks for the deferred choice. */
    static boolean routerDefer() {
        return Switches.onOff(ROUTER_DEFER_PROPERTY, false);
    }

    /** The choice of {@code indices}' experts left to the thread's next launch and not yet picked, or null. */
    static Pending pendingPicks(Tensor indices) {
        return Launcher.deferred() instanceof Pending p && !p.idsWritten() && p.writes(indices) ? p : null;
    }

    /** The weights of {@code indices}' experts left to the thread's next launch, the experts picked, or null. */
    static Pending pendingWeights(Tensor indices, Tensor values) {
        return Launcher.deferred() instanceof Pending p && p.idsWritten() && p.writes(indices)
                && CudaAllocator.address(values) == CudaAllocator.address(p.values()) ? p : null;
    }

    /**
     * Whether a block-a-token launch over these tokens leaves its choice to the launches after it: the switch on, the
     * prologue form taken, the pairs below {@link CudaMoePairs#STACKED_PAIRS} (the decode launches that pick), at most
     * {@value #DEFER_MOST_EXPERTS} experts and as many as the down launch's threads (32 a pick), top 16 at most.
     */
    private boolean defers(int tokens, int experts, int topk) {
        return routerDefer() && (routerPrologue() || !ahead.isEmpty()) && (long) tokens * topk < CudaMoePairs.STACKED_PAIRS
                && experts <= DEFER_MOST_EXPERTS && topk <= 16 && experts <= 32 * topk && (experts + 31) / 32 * topk <= 128;
    }

    /** The logits-only router launch, its choice left to the thread's next launches. */
    private void deferChoice(int chunks, int tokens, int shared, Tensor x, Tensor normWeight, int nwBf16, float eps, Tensor h,
                             Tensor router, int hd, int e, int topk, boolean normalize, Tensor logits, Tensor values, Tensor indices) {
        ctx.launch2dShared(routerLogits, chunks, tokens, 32 * ROUTER_WARPS, shared,
                withAsks(x, normWeight, nwBf16, eps, h, router, hd, e, logits));
        Launcher.defer(new Pending(this, logits, values, indices, tokens, e, topk, normalize, false));
    }

    /** {@link Pending#settle}: moe_router_select, a block a token. */
    private void select(Pending p) {
        ctx.device.bind();
        int threads = Math.min(1024, Math.max(32, (p.experts() + 31) / 32 * 32));
        ctx.launchShared(routerSelect, p.tokens(), threads, 4 * p.experts(), p.logits(), p.experts(), p.topk(), p.normalize() ? 1 : 0,
                p.values(), p.indices());
    }

    /** What {@link #moeRouterTopk} did: declined (nothing launched), selected the experts, or also grouped the pairs. */
    enum Router { DECLINED, SELECTED, SELECTED_AND_GROUPED }

    /**
     * The router of x as it is (normed before): values and indices [T, topk] of the topk largest of softmax(x ·
     * routerᵀ) per token, divided by their sum when {@code normalize}: {@code moe_router_norm_topk} without its norm, or
     * from {@link #tileRows}' token count {@code moe_router_tiles}, one launch up to {@link CudaContext#TICKETS} tokens
     * (the router of any batch above). Declines, launching nothing, where the shapes do not suit it (router not bf16
     * [E, hidden] 16-byte aligned, hidden not a multiple of 8, hidden + E floats past the kernel's shared memory). Where
     * {@code routing} is given and the call takes {@code moe_router_tiles} with at most
     * {@value CudaMoeOps#ROUTE_RANK_PAIRS} pairs, the pairs are also grouped by expert into it in the same launch (the
     * last block runs {@code moe_route}'s body: the same offsets, active experts and order), unless
     * {@code -Dorbit.cuda.routerGroups=off} (read at each call).
     */
    Router moeRouterTopk(Tensor x, Tensor router, int topk, boolean normalize, Tensor values, Tensor indices, MoeRouting routing) {
        ctx.device.bind();
        ctx.devContiguous("moeRouterTopk x", x, DType.F32);
        ctx.devContiguous("moeRouterTopk values", values, DType.F32);
        ctx.devContiguous("moeRouterTopk indices", indices, DType.I32);
        int hd = x.size(-1);
        int tokens = CudaContext.rows(x);
        if (router.dtype() != DType.BF16 || router.rank() != 2 || !router.isContiguous() || router.dim(1) != hd || hd % 8 != 0
                || CudaAllocator.address(router) % 16 != 0 || 4L * (hd + router.size(0)) > SHARED_LIMIT || tokens == 0) {
            return Router.DECLINED;
        }
        int e = router.size(0);
        if (topk <= 0 || topk > e || values.numel() != (long) tokens * topk || indices.numel() != (long) tokens * topk) {
            throw new IllegalArgumentException("moeRouterTopk: x " + x + ", router " + router + " [experts, hidden], top " + topk
                    + " into " + values + " and " + indices + " [tokens, topk]");
        }
        if (tokens > CudaContext.TICKETS) {
            moeOps.routerTopk(x, router, topk, normalize, values, indices);
            return Router.SELECTED;
        }
        Tensor logits = ctx.scratch(CudaContext.Scratch.ROUTER_LOGITS, DType.F32, (long) tokens * e); // [T, E]
        int tt = tileRows(tokens, e, hd, ctx.device.multiprocessors(), System.getProperty(ROUTER_TILES_PROPERTY));
        if (tt > 0 && CudaAllocator.address(x) % 16 == 0) {
            int chunks = (e + TILE_WARPS - 1) / TILE_WARPS;
            int shared = 4 * Math.max(tt * hd, TILE_WARPS * e);
            int pairs = tokens * topk;
            boolean group = routing != null && routing.numExperts() == e && pairs <= CudaMoeOps.ROUTE_RANK_PAIRS
                    && pairs <= routing.maxPairs() && !"off".equals(System.getProperty(ROUTER_GROUPS_PROPERTY));
            if (group) {
                routing.routed(pairs, topk);
            }
            ctx.launch2dShared(routerTiles, chunks, (tokens + tt - 1) / tt, 32 * TILE_WARPS, shared, x, router, hd, e, tokens, tt,
                    topk, normalize ? 1 : 0, logits, ctx.tickets, values, indices, group ? routing.offsets() : null,
                    group ? routing.active() : null, group ? routing.order() : null,
                    group ? ctx.tickets.slice(0, CudaContext.TICKETS - 1, CudaContext.TICKETS) : null, ctx.errorFlag);
            return group ? Router.SELECTED_AND_GROUPED : Router.SELECTED;
        }
        if (defers(tokens, e, topk)) {
            deferChoice((e + ROUTER_WARPS - 1) / ROUTER_WARPS, tokens, 4 * (hd + e), x, null, 0, 0f, null, router, hd, e, topk, normalize,
                    logits, values, indices);
            return Router.SELECTED;
        }
        launchRouter(routerNormTopk, routerRank() ? routerNormTopkRank : routerNormTopkPre, (e + ROUTER_WARPS - 1) / ROUTER_WARPS,
                tokens, 4 * (hd + e), x, null, 0, 0f, null, router, hd, e, topk, normalize ? 1 : 0, logits, ctx.tickets, values,
                indices);
        return Router.SELECTED;
    }

    /**
     * {@link org.orbitrl.kernels.Backend#addRmsNormRouterTopk}: {@code moe_router_add_norm_topk}, {@code moe_router_norm_topk}
     * over the rows a + b, its blocks writing their shares of the sum and of its norm (norm weight f32 or bf16 [H]), where
     * {@link #moeRouterTopk} takes that block-a-token launch for these tokens (fewer than the tiles' bound); false,
     * launching nothing, otherwise. Throws where the shapes do not agree.
     */
    boolean addNormRouterTopk(Tensor a, Tensor b, Tensor sum, Tensor normWeight, float eps, Tensor normed, Tensor router, int topk,
                              boolean normalize, Tensor values, Tensor indices) {
        for (Tensor t : new Tensor[]{a, b, sum, normed}) {
            ctx.devContiguous("addRmsNormRouterTopk rows", t, DType.F32);
        }
        ctx.devContiguous("addRmsNormRouterTopk norm weight", normWeight, null);
        ctx.devContiguous("addRmsNormRouterTopk values", values, DType.F32);
        ctx.devContiguous("addRmsNormRouterTopk indices", indices, DType.I32);
        int hd = a.size(-1);
        int tokens = CudaContext.rows(a);
        for (Tensor t : new Tensor[]{b, sum, normed}) {
            if (t.size(-1) != hd || CudaContext.rows(t) != tokens) {
                throw new IllegalArgumentException("addRmsNormRouterTopk: " + t + " is not [" + tokens + ", " + hd + "] as a " + a);
            }
        }
        if (normWeight.numel() != hd || (normWeight.dtype() != DType.F32 && normWeight.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("addRmsNormRouterTopk: norm weight " + normWeight + " is not f32 or bf16 [" + hd + "]");
        }
        if (router.dtype() != DType.BF16 || router.rank() != 2 || !router.isContiguous() || router.dim(1) != hd || hd % 8 != 0
                || CudaAllocator.address(router) % 16 != 0 || 4L * (hd + router.size(0)) > SHARED_LIMIT || tokens == 0
                || tokens > CudaContext.TICKETS || CudaAllocator.address(a) % 16 != 0 || CudaAllocator.address(b) % 16 != 0
                || tileRows(tokens, router.size(0), hd, ctx.device.multiprocessors(), System.getProperty(ROUTER_TILES_PROPERTY)) > 0) {
            return false;
        }
        for (Tensor out : new Tensor[]{sum, normed}) {   // every block reads whole rows of a and b while others write
            for (Tensor in : new Tensor[]{a, b}) {
                if (overlap(out, in)) {
                    throw new IllegalArgumentException("addRmsNormRouterTopk: " + out + " overlaps its input " + in);
                }
            }
        }
        int e = router.size(0);
        if (topk <= 0 || topk > e || values.numel() != (long) tokens * topk || indices.numel() != (long) tokens * topk) {
            throw new IllegalArgumentException("addRmsNormRouterTopk: router " + router + " [experts, hidden], top " + topk
                    + " into " + values + " and " + indices + " [tokens, topk]");
        }
        Tensor logits = ctx.scratch(CudaContext.Scratch.ROUTER_LOGITS, DType.F32, (long) tokens * e); // [T, E]
        launchRouter(routerAddNormTopk, routerRank() ? routerNormBits() ? routerAddNormTopkRankBits : routerAddNormTopkRank
                        : routerAddNormTopkPre,
                (e + ROUTER_WARPS - 1) / ROUTER_WARPS, tokens, 4 * (hd + e), a, b, sum,
                normWeight, normWeight.dtype() == DType.BF16 ? 1 : 0, eps, normed, router, hd, e, topk, normalize ? 1 : 0, logits,
                ctx.tickets, values, indices);
        return true;
    }

    private static boolean overlap(Tensor p, Tensor q) {
        long pa = CudaAllocator.address(p);
        long qa = CudaAllocator.address(q);
        return pa < qa + q.byteSize() && qa < pa + p.byteSize();
    }

    /**
     * The x rows a block of {@code moe_router_tiles} stages for {@code tokens} tokens over {@code experts} experts of
     * {@code hidden} values, on {@code sms} multiprocessors: enough that the expert chunks times the tiles come near one
     * block an SM, at most {@value #TILE_MOST_ROWS} and {@value #TILE_SHARED} bytes of rows (two blocks an SM); 0 where
     * the call takes {@code moe_router_norm_topk} (fewer tokens than the switch's bound, the switch off, a row past the
     * bytes, or the selecting warps' logits past them).
     */
    static int tileRows(int tokens, int experts, int hidden, int sms, String property) {
        int from = 8;
        if (property != null) {
            if (property.equals("off")) {
                return 0;
            }
            try {
                from = Integer.parseInt(property);
            } catch (NumberFormatException ex) {
                throw new IllegalArgumentException("-D" + ROUTER_TILES_PROPERTY + "=" + property + ": expected off or a token count");
            }
        }
        int fit = TILE_SHARED / (4 * hidden);
        if (tokens < Math.max(1, from) || fit < 1 || 4L * TILE_WARPS * experts > TILE_SHARED) {
            return 0;
        }
        long chunks = (experts + TILE_WARPS - 1) / TILE_WARPS;
        long rows = (tokens * chunks + sms - 1) / sms;
        return (int) Math.max(1, Math.min(Math.min(rows, TILE_MOST_ROWS), fit));
    }

    /**
     * The router of a decode step in one launch: {@code h = rmsnorm(x)} (written out: the experts' input),
     * router logits {@code h · routerᵀ}, softmax, and the top-k probabilities (ties to the lower expert),
     * divided by their sum when {@code normalize}. x f32 [T, H], norm weight f32 or bf16 [H], router bf16
     * [E, H] (H a multiple of 8), h f32 [T, H], values f32 [T, topk], indices i32 [T, topk]. The logits are
     * spread over ceil(E / 4) blocks a token; the block that finishes a token last selects its experts.
     * The tickets that find that block are the backend's own, so launches of this op on one backend run
     * one after another (its stream); up to 4096 tokens a launch, more take the unfused norm and router.
     */
    public void moeRouterNormTopk(Tensor x, Tensor normWeight, float eps, Tensor router, int topk, boolean normalize, Tensor h,
                                  Tensor values, Tensor indices) {
        ctx.device.bind();
        ctx.devContiguous("moeRouterNormTopk x", x, DType.F32);
        ctx.devContiguous("moeRouterNormTopk h", h, DType.F32);
        ctx.devContiguous("moeRouterNormTopk router", router, DType.BF16);
        ctx.devContiguous("moeRouterNormTopk norm weight", normWeight, null);
        ctx.devContiguous("moeRouterNormTopk values", values, DType.F32);
        ctx.devContiguous("moeRouterNormTopk indices", indices, DType.I32);
        int hd = x.size(-1);
        int tokens = CudaContext.rows(x);
        int e = router.rank() == 2 ? router.size(0) : 0;
        if (router.rank() != 2 || router.dim(1) != hd || hd % 8 != 0 || h.numel() != (long) tokens * hd || normWeight.numel() != hd
                || (normWeight.dtype() != DType.F32 && normWeight.dtype() != DType.BF16) || topk <= 0 || topk > e
                || values.numel() != (long) tokens * topk || indices.numel() != (long) tokens * topk) {
            throw new IllegalArgumentException("moeRouterNormTopk: x " + x + " (hidden a multiple of 8), norm weight " + normWeight
                    + ", router " + router + " [experts, hidden], top " + topk + " into h " + h + ", " + values + " and " + indices
                    + " [tokens, topk]");
        }
        long shared = 4L * (hd + e);
        if (shared > SHARED_LIMIT || CudaAllocator.address(router) % 16 != 0) {
            throw new IllegalArgumentException("moeRouterNormTopk: hidden " + hd + " + experts " + e
                    + " exceed the kernel's shared memory, or " + router + " is not 16-byte aligned");
        }
        if (tokens == 0) {
            return;
        }
        if (tokens > CudaContext.TICKETS) { // more tokens than tickets: the norm, then the router of any batch
            rows.rmsNorm(x, normWeight, eps, h);
            moeOps.routerTopk(h, router, topk, normalize, values, indices);
            return;
        }
        Tensor logits = ctx.scratch(CudaContext.Scratch.ROUTER_LOGITS, DType.F32, (long) tokens * e); // [T, E]
        int chunks = (e + ROUTER_WARPS - 1) / ROUTER_WARPS;
        if (defers(tokens, e, topk)) {
            deferChoice(chunks, tokens, (int) shared, x, normWeight, normWeight.dtype() == DType.BF16 ? 1 : 0, eps, h, router, hd, e,
                    topk, normalize, logits, values, indices);
            return;
        }
        launchRouter(routerNormTopk, routerRank() ? routerNormTopkRank : routerNormTopkPre, chunks, tokens, (int) shared, x,
                normWeight, normWeight.dtype() == DType.BF16 ? 1 : 0, eps, h, router, hd, e, topk, normalize ? 1 : 0, logits,
                ctx.tickets, values, indices);
    }

    /**
     * Frozen tensors whose bytes the next router launch asks of the L2 before its wait (the {@code _pre} form, whatever
     * {@link #ROUTER_PROLOGUE_PROPERTY} says), a line at a time or in bulk prefetches ({@code bulk}): up to {@value #AHEAD}
     * contiguous device tensors, 16-byte aligned (others are left out); replaces the asks not yet carried, and none clears
     * them. A hint: no value changes.
     */
    void prefetchFrozen(boolean bulk, Tensor... frozen) {
        ahead.clear();
        aheadBulk = bulk;
        for (Tensor t : frozen) {
            if (ahead.size() < AHEAD && t != null && t.isContiguous() && ctx.allocator.owns(t)
                    && CudaAllocator.address(t) % 16 == 0) {
                ahead.add(t);
            }
        }
    }

    /**
     * One router launch of the block-a-token form: {@code pre} (the prologue kernel, its last seven parameters the asks of
     * {@link #prefetchFrozen}, which it takes and clears) where asks are pending or the prologue is asked for, else
     * {@code plain}.
     */
    private void launchRouter(Kernel plain, Kernel pre, int gridX, int tokens, int shared, Object... args) {
        if (ahead.isEmpty() && !routerPrologue()) {
            ctx.launch2dShared(plain, gridX, tokens, 32 * ROUTER_WARPS, shared, args);
            return;
        }
        ctx.launch2dShared(pre, gridX, tokens, 32 * ROUTER_WARPS, shared, withAsks(args));
    }

    /** args and the asks of {@link #prefetchFrozen} (the prologue kernels' last seven parameters), which it takes and clears. */
    private Object[] withAsks(Object... args) {
        Object[] all = Arrays.copyOf(args, args.length + 2 * AHEAD + 1);
        for (int i = 0; i < AHEAD; i++) {
            Tensor t = i < ahead.size() ? ahead.get(i) : null;
            all[args.length + 2 * i] = t;
            all[args.length + 2 * i + 1] = t == null ? 0L : t.byteSize();
        }
        all[all.length - 1] = aheadBulk ? 1 : 0;
        ahead.clear();
        return all;
    }

    /** Whether {@link #ROUTER_NORM_BITS_PROPERTY} asks for the norm weights loaded as their bits. */
    static boolean routerNormBits() {
        return Switches.onOff(ROUTER_NORM_BITS_PROPERTY, false);
    }

    /** Whether {@link #ROUTER_RANK_PROPERTY} asks for the block's selection. */
    static boolean routerRank() {
        return Switches.onOff(ROUTER_RANK_PROPERTY, true);
    }

    /** Whether {@link #ROUTER_PROLOGUE_PROPERTY} asks for the prologue form. */
    static boolean routerPrologue() {
        return Switches.onOff(ROUTER_PROLOGUE_PROPERTY, true);
    }
}
