package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.EnumMap;

/**
 * The fused operations of a decode step at few tokens ({@link CudaBackend#fusedDecode()}): each folds
 * work that would be a launch of its own into the launch that consumes it, because at one token a
 * launch costs more in latency than the bytes it moves. Together they take a Qwen3-MoE layer's decode
 * from twelve launches to seven: the attention's norm into the q/k/v product, the MLP's norm and the
 * softmax and top-k into the router's product, the SwiGLU into the experts' gate and up product, and the
 * weighted combine and the residual add into the experts' down product.
 *
 * <p>Numbers: every product is f32 activations times the exact weight values with f32 accumulation (the
 * GEMV kernels' arithmetic); the norms use {@code rmsnorm_f32}'s expression, with the sum of squares
 * reduced in a different order. Each op is deterministic (no atomics on values) and capturable in a
 * CUDA graph.
 */
public final class CudaFusedDecode {
    /** Rows of x up to which {@link #rmsNormMatmul} runs as one launch (the normalized rows are staged per block). */
    static final int NORM_GEMV_MAX_ROWS = 4;
    /** Most routed experts per token of {@link #moeDownCombine} (one warp each; QGD_MAX_TOPK in qgemv.cu). */
    static final int MAX_TOPK = 16;
    /** Warps of a moe_decode block (MD_WARPS). */
    private static final int PERSISTENT_WARPS = 8;
    private static final int SHARED_LIMIT = 48 * 1024;
    /** Dynamic shared memory a launch may opt in to (sm_90: 227 KiB). */
    private static final int MAX_SHARED = 227 * 1024;

    private final CudaContext ctx;
    private final CudaMatmulOps matmul;
    private final CudaRowOps rows;
    /** The router's launches (its own class: the router, its norm and its add folded in, the tiles, the asks ahead). */
    private final CudaDecodeRouter router;
    private final Kernel norm1;
    private final Kernel norm4;
    private final EnumMap<QuantLayout, Kernel> swiglu = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> swigluR2 = new EnumMap<>(QuantLayout.class);
    /** Rows of each matrix a lane of the gate/up launch takes: 4 (QGS_R, fewer larger blocks) or 2; {@code -Dorbit.cuda.decodeGateUpRows}. */
    private int gateUpRows = Integer.getInteger("orbit.cuda.decodeGateUpRows", 4);
    /** Most warps a block of the gate/up launch and of the one-row norm GEMV ({@code -Dorbit.cuda.decodeWarps}, 8 or 4). */
    private int warps = Integer.getInteger("orbit.cuda.decodeWarps", 8);
    private final EnumMap<QuantLayout, Kernel> downCombine = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> moeDecode = new EnumMap<>(QuantLayout.class);
    /** u32 [2]: moe_decode's grid barrier (arrivals, departures); 0 between launches. */
    private final Tensor gridBarrier;
    /**
     * Whether {@link #moeDecode} takes its one cooperative launch where it can ({@code -Dorbit.cuda.moeDecode=persistent};
     * off by default: on the H200 it measured 0.96x to 1.06x of the three launches, varying from run to run).
     */
    private boolean persistentMoe = "persistent".equals(System.getProperty("orbit.cuda.moeDecode"));
    /** i64 [grid, 16]: moe_decode's phase timestamps per block, when set (tracing); null otherwise. */
    private Tensor moeTrace;

    CudaFusedDecode(CudaContext ctx, CudaMatmulOps matmul, CudaRowOps rows, CudaMoeOps moeOps) {
        this.ctx = ctx;
        this.matmul = matmul;
        this.rows = rows;
        this.router = new CudaDecodeRouter(ctx, rows, moeOps);
        this.norm1 = ctx.kernel("bgemv", "bgemv_norm1");
        this.norm4 = ctx.kernel("bgemv", "bgemv_norm_m4");
        for (QuantLayout l : QuantLayout.values()) {
            swiglu.put(l, ctx.kernel("qgemv", "qgemv_swiglu_" + l.kernelSuffix()));
            swigluR2.put(l, ctx.kernel("qgemv", "qgemv_swiglu_r2_" + l.kernelSuffix()));
            downCombine.put(l, ctx.kernel("qgemv", "qgemv_down_combine_" + l.kernelSuffix()));
            moeDecode.put(l, ctx.kernel("moe_decode", "moe_decode_" + l.kernelSuffix()));
        }
        this.gridBarrier = ctx.allocator.allocate(MemoryCategory.RUNTIME_RESERVE, DType.I32, 2);
    }

    /** The router of a decode step's few tokens: its product, softmax and top-k, with the norm or the add before it. */
    public CudaDecodeRouter router() {
        return router;
    }

    /**
     * {@code y = rmsnorm(x) · wᵀ} (or {@code y += ...} when {@code accumulate}): x f32 [M, K], norm weight f32
     * or bf16 [K], w bf16 [N, K], y f32 [M, N]. One launch up to {@value #NORM_GEMV_MAX_ROWS} rows
     * (K a multiple of 8, aligned operands); otherwise the norm into scratch and the product.
     */
    public void rmsNormMatmul(Tensor x, Tensor normWeight, float eps, Tensor w, Tensor y, boolean accumulate) {
        ctx.device.bind();
        ctx.devContiguous("rmsNormMatmul x", x, DType.F32);
        ctx.devContiguous("rmsNormMatmul y", y, DType.F32);
        ctx.devContiguous("rmsNormMatmul w", w, DType.BF16);
        ctx.devContiguous("rmsNormMatmul norm weight", normWeight, null);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        if (w.rank() != 2 || w.dim(1) != k || y.size(-1) != w.dim(0) || CudaContext.rows(y) != m || normWeight.numel() != k
                || (normWeight.dtype() != DType.F32 && normWeight.dtype() != DType.BF16)) {
            throw new IllegalArgumentException("rmsNormMatmul: rmsnorm(x " + x + ", weight " + normWeight + " f32 or bf16 [" + k
                    + "]) · wᵀ " + w + " -> y " + y + " do not agree");
        }
        int n = w.size(0);
        if (m == 0 || n == 0) {
            return;
        }
        if (m <= NORM_GEMV_MAX_ROWS && k % 8 == 0 && 4L * m * k <= SHARED_LIMIT && CudaAllocator.address(x) % 16 == 0
                && CudaAllocator.address(w) % 16 == 0) {
            int nwBf16 = normWeight.dtype() == DType.BF16 ? 1 : 0;
            if (m == 1) { // bgemv_norm1: 8 k lanes, 4 rows a lane (BGN_KQ, BGN_R)
                int blockWarps = Math.min(warps, CudaQgemv.warpsFor(k / 8, 8));
                ctx.launchShared(norm1, (n + 15) / 16, 32 * blockWarps, 4 * k, x, normWeight, nwBf16, eps, w, y, n, k, accumulate ? 1 : 0);
            } else {
                int warps = CudaQgemv.warpsFor(k / 8, CudaQgemv.bf16KLanes(4));
                long grid = (n + CudaQgemv.bf16RowsPerBlock(4) - 1) / CudaQgemv.bf16RowsPerBlock(4);
                ctx.launchShared(norm4, grid, 32 * warps, 4 * m * k, x, m, normWeight, nwBf16, eps, w, y, n, k, accumulate ? 1 : 0);
            }
            return;
        }
        Tensor normed = ctx.scratch(CudaContext.Scratch.X_F32, DType.F32, (long) m * k).reshape(m, k); // [M, K]
        rows.rmsNorm(x.reshape(m, k), normWeight, eps, normed);
        if (accumulate) {
            matmul.matmulAccumulate(normed, w, y);
        } else {
            matmul.matmul(normed, w, y);
        }
    }

    /** Rows of each of gate and up a lane of {@link #moeSwigluPairs} takes (4 or 2); a block takes 4 lanes' rows. */
    public void gateUpRowsPerLane(int rows) {
        if (rows != 2 && rows != 4) {
            throw new IllegalArgumentException("gate/up rows a lane: 2 or 4, got " + rows);
        }
        this.gateUpRows = rows;
    }

    public int gateUpRowsPerLane() {
        return gateUpRows;
    }

    /** Most warps a block of the gate/up launch and of the one-row norm GEMV takes (4 or 8; the warps split K). */
    public void blockWarps(int w) {
        if (w != 4 && w != 8) {
            throw new IllegalArgumentException("decode block warps: 4 or 8, got " + w);
        }
        this.warps = w;
    }

    public int blockWarps() {
        return warps;
    }

    /**
     * The gate and up products of every routed pair and the SwiGLU between them, in one launch:
     * {@code act[p] = silu(x[p / d] · G[e]ᵀ) · (x[p / d] · U[e]ᵀ)} with {@code e = ids[p]} and d = topk
     * when x has a row per token, 1 when it has one per pair. gate and up stack E experts as [E·I, H] in
     * the same quantized format; x f32 [tokens or pairs, H]; ids i32 [tokens, topk]; act f32 [pairs, I].
     * An id outside [0, E) is reported by the next synchronize as {@link IndexOutOfBoundsException}.
     */
    public void moeSwigluPairs(Tensor x, QuantizedTensor gate, QuantizedTensor up, int numExperts, Tensor ids, Tensor act) {
        ctx.device.bind();
        ctx.devContiguous("moeSwigluPairs x", x, DType.F32);
        ctx.devContiguous("moeSwigluPairs act", act, DType.F32);
        ctx.devContiguous("moeSwigluPairs expert ids", ids, DType.I32);
        QuantLayout layout = QuantLayout.of(gate, ctx);
        if (QuantLayout.of(up, ctx) != layout || gate.rows() != up.rows() || gate.cols() != up.cols() || numExperts <= 0
                || gate.rows() % numExperts != 0) {
            throw new IllegalArgumentException("moeSwigluPairs: gate " + gate + " and up " + up + " must stack " + numExperts
                    + " experts of one shape and format");
        }
        int n = Math.toIntExact(gate.rows() / numExperts);
        int k = Math.toIntExact(gate.cols());
        int pairs = Math.toIntExact(ids.numel());
        int topk = ids.rank() == 0 ? 1 : ids.size(-1);
        int tokens = pairs / Math.max(1, topk);
        int xRows = CudaContext.rows(x);
        if (x.size(-1) != k || (xRows != tokens && xRows != pairs) || act.numel() != (long) pairs * n || k % 32 != 0) {
            throw new IllegalArgumentException("moeSwigluPairs: x " + x + ", ids " + ids + ", act " + act + " do not fit " + numExperts
                    + " experts of [" + n + ", " + k + "] (x rows: tokens or tokens*topk; act: tokens*topk*" + n + "; K a multiple of 32)");
        }
        if (pairs > 65535) {
            throw new IllegalArgumentException("moeSwigluPairs: " + pairs + " (token, expert) pairs exceed one launch (65535)");
        }
        if (CudaAllocator.address(x) % 16 != 0 || CudaAllocator.address(gate.codes()) % 16 != 0 || CudaAllocator.address(up.codes()) % 16 != 0) {
            throw new IllegalArgumentException("moeSwigluPairs: x and the codes must be 16-byte aligned");
        }
        if (4L * k > MAX_SHARED) {
            throw new IllegalArgumentException("moeSwigluPairs: K " + k + " exceeds the kernel's shared memory (" + MAX_SHARED / 4 + " values)");
        }
        if (pairs == 0) {
            return;
        }
        int xDiv = xRows == pairs && pairs != tokens ? 1 : topk;
        int rowsPerBlock = 32 / 8 * gateUpRows; // 32 / QGS_KQ * rows a lane
        int w = Math.min(warps, CudaQgemv.warpsFor(k / 32, 8));
        Kernel kernel = (gateUpRows == 2 ? swigluR2 : swiglu).get(layout);
        ctx.launch2dShared(kernel, (n + rowsPerBlock - 1) / rowsPerBlock, pairs, 32 * w, 4 * k, x, xDiv, ids,
                gate.codes(), gate.scales(), gate.zeros(), gate.globalScale(), up.codes(), up.scales(), up.zeros(), up.globalScale(),
                act, n, k, numExperts, ctx.errorFlag);
    }

    /**
     * The down products of every token's routed experts, weighted and added into its row in one launch:
     * {@code out[t] (+)= c · Σ_j w[t, j] · (act[t·topk + j] · D[ids[t, j]]ᵀ)} with {@code c = 1 / Σ_j w[t, j]}
     * when {@code normalize}, else 1; the experts are added in j order. act f32 [tokens·topk, I]; down
     * stacks E experts as [E·H, I]; ids i32 and w f32 [tokens, topk] (topk at most {@value #MAX_TOPK});
     * out f32 [tokens, H], added into when {@code accumulate} (the residual stream).
     */
    public void moeDownCombine(Tensor act, QuantizedTensor down, int numExperts, Tensor ids, Tensor weights, boolean normalize,
                               Tensor out, boolean accumulate) {
        ctx.device.bind();
        ctx.devContiguous("moeDownCombine act", act, DType.F32);
        ctx.devContiguous("moeDownCombine expert ids", ids, DType.I32);
        ctx.devContiguous("moeDownCombine weights", weights, DType.F32);
        ctx.devContiguous("moeDownCombine out", out, DType.F32);
        QuantLayout layout = QuantLayout.of(down, ctx);
        if (numExperts <= 0 || down.rows() % numExperts != 0) {
            throw new IllegalArgumentException("moeDownCombine: " + down + " does not stack " + numExperts + " experts");
        }
        int n = Math.toIntExact(down.rows() / numExperts);
        int k = Math.toIntExact(down.cols());
        int topk = ids.rank() == 0 ? 1 : ids.size(-1);
        int tokens = CudaContext.rows(out);
        if (out.size(-1) != n || ids.numel() != (long) tokens * topk || weights.numel() != (long) tokens * topk
                || act.numel() != (long) tokens * topk * k || k % 32 != 0 || topk > MAX_TOPK) {
            throw new IllegalArgumentException("moeDownCombine: act " + act + " [tokens*topk, " + k + "], ids " + ids + " and weights "
                    + weights + " [tokens, topk <= " + MAX_TOPK + "] do not fit out " + out + " [tokens, " + n + "] (K a multiple of 32)");
        }
        if (tokens > 65535) {
            throw new IllegalArgumentException("moeDownCombine: " + tokens + " tokens exceed one launch (65535)");
        }
        if (CudaAllocator.address(act) % 16 != 0 || CudaAllocator.address(down.codes()) % 16 != 0) {
            throw new IllegalArgumentException("moeDownCombine: act and the codes must be 16-byte aligned");
        }
        if (4L * topk * k > MAX_SHARED) {
            throw new IllegalArgumentException("moeDownCombine: " + topk + " rows of " + k + " activations exceed the kernel's shared memory ("
                    + MAX_SHARED + " bytes)");
        }
        if (tokens == 0) {
            return;
        }
        int rowsPerBlock = 32 / 8 * 2; // 32 / QGD_KQ * QGD_R
        ctx.launch2dShared(downCombine.get(layout), (n + rowsPerBlock - 1) / rowsPerBlock, tokens, 32 * topk, 4 * topk * k, act, ids,
                weights, topk,
                normalize ? 1 : 0, down.codes(), down.scales(), down.zeros(), down.globalScale(), out, accumulate ? 1 : 0, n, k,
                numExperts, ctx.errorFlag);
    }
    /** Whether {@link #moeDecode} runs as one cooperative launch where it can (else as its three launches). */
    public void persistentMoe(boolean on) {
        this.persistentMoe = on;
    }

    public boolean persistentMoe() {
        return persistentMoe;
    }

    /** Records moe_decode's phase timestamps (global timer, ns) into {@code trace} i64 [grid, 16], or stops (null). */
    void traceMoe(Tensor trace) {
        this.moeTrace = trace;
    }

    /**
     * The routed MLP of a decode step with its norm, router and residual add:
     * {@code x += Σ_j w_j · (silu(h · G[e_j]ᵀ) · (h · U[e_j]ᵀ)) · D[e_j]ᵀ} with {@code h = rmsnorm(x)} and
     * (w, e) the router's top-k of {@code h · routerᵀ} as {@link CudaDecodeRouter#moeRouterNormTopk} selects them (written
     * to values and indices). x f32 [T, H]; norm weight f32 or bf16 [H]; router bf16 [E, H]; gate and up
     * stack E experts as [E·I, H], down as [E·H, I], one quantized format; values f32 and indices i32 [T, topk].
     *
     * <p>With {@link #persistentMoe} on, at one token (topk at most 8, H and I multiples of 32) it is one
     * cooperative launch whose blocks pass the router's logits and the SwiGLU rows to each other through
     * two grid barriers ({@code moe_decode.cu}): the three launches' latencies become two barriers'. Its barrier
     * counters are the op's own, so launches of it on one backend run one after another (its stream).
     * Otherwise (the default) it is {@link CudaDecodeRouter#moeRouterNormTopk},
     * {@link #moeSwigluPairs} and {@link #moeDownCombine}. Both ways compute the same products in f32
     * (the norm's sum of squares reduced in a different order).
     */
    public void moeDecode(Tensor x, Tensor normWeight, float eps, Tensor router, int topk, boolean normalize,
                          QuantizedTensor gate, QuantizedTensor up, QuantizedTensor down, int numExperts, Tensor values,
                          Tensor indices) {
        ctx.device.bind();
        ctx.devContiguous("moeDecode x", x, DType.F32);
        ctx.devContiguous("moeDecode router", router, DType.BF16);
        ctx.devContiguous("moeDecode norm weight", normWeight, null);
        ctx.devContiguous("moeDecode values", values, DType.F32);
        ctx.devContiguous("moeDecode indices", indices, DType.I32);
        int hd = x.size(-1);
        int tokens = CudaContext.rows(x);
        QuantLayout layout = QuantLayout.of(gate, ctx);
        if (router.rank() != 2 || router.dim(1) != hd || router.size(0) != numExperts || numExperts <= 0 || topk <= 0 || topk > numExperts
                || QuantLayout.of(up, ctx) != layout || QuantLayout.of(down, ctx) != layout || gate.rows() != up.rows()
                || gate.cols() != hd || up.cols() != hd || gate.rows() % numExperts != 0
                || down.rows() != (long) numExperts * hd || down.cols() != gate.rows() / numExperts) {
            throw new IllegalArgumentException("moeDecode: x " + x + ", router " + router + " [" + numExperts + ", hidden] (top " + topk
                    + " of them), gate " + gate
                    + " and up " + up + " [" + numExperts + "·I, hidden], down " + down + " [" + numExperts
                    + "·hidden, I] in one format do not agree");
        }
        int inter = Math.toIntExact(gate.rows() / numExperts);
        if (tokens == 0) {
            return;
        }
        long shared = 4L * (hd + (long) topk * inter + numExperts); // h, the act rows, the logits
        Kernel kernel = moeDecode.get(layout);
        int grid = persistentMoe && tokens == 1 && topk <= 8 && hd % 32 == 0 && inter % 32 == 0
                && values.numel() == topk && indices.numel() == topk && normWeight.numel() == hd
                && (normWeight.dtype() == DType.F32 || normWeight.dtype() == DType.BF16)
                && shared + kernel.staticSharedBytes() <= MAX_SHARED
                && ctx.device.cooperativeLaunch() && CudaAllocator.address(x) % 16 == 0 && CudaAllocator.address(router) % 16 == 0
                && CudaAllocator.address(gate.codes()) % 16 == 0 && CudaAllocator.address(up.codes()) % 16 == 0
                && CudaAllocator.address(down.codes()) % 16 == 0
                ? persistentGrid(kernel, (int) shared, hd, inter, topk, numExperts) : 0;
        // the scratch both ways take, at the sizes of both, so that switching ways never grows it inside a capture
        Tensor h = ctx.scratch(CudaContext.Scratch.X_F32, DType.F32, (long) tokens * hd).reshape(tokens, hd);
        Tensor act = ctx.scratch(CudaContext.Scratch.MOE_ACT, DType.F32, (long) tokens * topk * inter).reshape(tokens * topk, inter);
        Tensor logits = ctx.scratch(CudaContext.Scratch.ROUTER_LOGITS, DType.F32, (long) tokens * numExperts);
        if (grid == 0) {
            this.router.moeRouterNormTopk(x, normWeight, eps, router, topk, normalize, h, values, indices);
            moeSwigluPairs(h, gate, up, numExperts, indices, act);
            moeDownCombine(act, down, numExperts, indices, values, false, x, true);
            return;
        }
        if (moeTrace != null && moeTrace.numel() < 16L * grid) {
            throw new IllegalArgumentException("moeDecode: trace " + moeTrace + " holds fewer than 16 stamps for each of " + grid + " blocks");
        }
        ctx.launchCooperative(kernel, grid, 32 * PERSISTENT_WARPS, (int) shared, x, normWeight, normWeight.dtype() == DType.BF16 ? 1 : 0,
                eps, router, numExperts, topk, normalize ? 1 : 0, gate.codes(), gate.scales(), gate.zeros(), gate.globalScale(),
                up.codes(), up.scales(), up.zeros(), up.globalScale(), down.codes(), down.scales(), down.zeros(),
                down.globalScale(), hd, inter, logits, act, values, indices, gridBarrier, ctx.errorFlag, moeTrace);
    }

    /**
     * Blocks of the cooperative moe_decode launch: as many as the device holds at once, no more than
     * the widest phase has work for (router warps, gate/up tiles, down chunks); 0 when none fits.
     */
    private int persistentGrid(Kernel kernel, int shared, int hd, int inter, int topk, int experts) {
        int perSm = kernel.residentBlocksPerSm(32 * PERSISTENT_WARPS, shared);
        int tiles = (inter + 15) / 16 * topk;      // 16-row gate/up tiles (32 / MD_KQ * MD_GU_R)
        int chunks = (hd + 7) / 8;                   // 8-row down chunks (32 / MD_KQ * MD_DN_R)
        int routerBlocks = (experts + PERSISTENT_WARPS - 1) / PERSISTENT_WARPS;
        int useful = Math.max(tiles, Math.max(chunks, routerBlocks));
        return (int) Math.min((long) perSm * ctx.device.multiprocessors(), useful);
    }
}
