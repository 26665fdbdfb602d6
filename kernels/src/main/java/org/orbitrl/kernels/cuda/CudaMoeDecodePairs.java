package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;
import java.util.EnumMap;

/**
 * The routed experts of a decode step of few tokens (below {@link CudaMoePairs#STACKED_PAIRS} pairs) with their LoRA
 * terms, on {@code qgemv.cu}'s decode fusions: gate, up, their terms and the SwiGLU in one launch ({@code
 * qgemv_swiglu_lora_*}), and the down products, their terms and the weighting back into the tokens in another ({@code
 * qgemv_down_combine_lora_*}). The products read x in f32 and the quantized weights exactly, as the pair GEMVs do; each
 * term is {@code s · Σ_j lo[p, j] · B_e[n, j]} (j in order) added to its product before the SwiGLU or the weighting.
 * {@link CudaMoePairs} checks the shapes and makes the B tables; {@code -Dorbit.cuda.moeDecodePairs=off} (read at each
 * call) declines, and the caller runs the separate products.
 */
final class CudaMoeDecodePairs {
    /** Rows of a down block: 32 / QGD_KQ * QGD_R. */
    private static final int DOWN_ROWS = 32 / 8 * 2;
    /** Experts a token the down launch takes (a warp each): QGD_MAX_TOPK. */
    private static final int MAX_TOPK = 16;

    /**
     * {@value} ({@code on|off}, read at each call; on by default): INT4 down products soon after this class's gate/up
     * launch over the same ids take {@code qgemv_down_combine_pre_int4}, which reads the ids and issues its first steps'
     * weight loads before it waits for the launch before it (the same sums, the same bits). The ids may be read there
     * because the router wrote them before the gate/up launch, whose blocks wait for the router before they let any later
     * launch start, and because nothing between rewrites them: the kernel is taken only by the thread that made that
     * gate/up launch, once, while it has issued at most {@link #PROLOGUE_GAP} other launches since (the pairs' LoRA A
     * product and the like; {@code GroupedExperts} issues nothing else between them). Measured on an H100 (Qwen3-30B-A3B
     * shape, a one-sequence captured step with dependent launches): 3.051-3.054 → 2.956-2.961 ms; at 8 sequences the
     * grouped products take the experts and nothing changes.
     */
    static final String DOWN_PROLOGUE_PROPERTY = "orbit.cuda.downPrologue";
    /**
     * {@value} ({@code on|off}, read at each call; on by default): the gate/up launch takes its {@code _xf} kernels,
     * which issue x's copies into shared memory first, before the expert id is read and the weights' loads are issued,
     * and decode the scales after x is staged (the plain kernels stage x behind the weights and decode each scale as it
     * is loaded: the kernel timeline puts x staged 6.1 µs after the wait at one token of Qwen3-30B-A3B, the last weight
     * in, and no warp multiplies before it; the {@code _xf} kernels 1.6 µs). The same sums, the same bits. Measured on an
     * H100 (Qwen3-30B-A3B shape, a one-sequence captured step): 2.573 ms against 2.621 with it off.
     */
    static final String X_FIRST_PROPERTY = "orbit.cuda.swigluXFirst";
    /**
     * {@value} ({@code wait|loads}, read at each call; {@code loads} by default): where the x-first gate/up launch lets
     * the launch after it start its blocks, which at one token is the down launch's prologue streaming its experts'
     * weights: at its wait ({@code qgemv_swiglu_lora_*xf_*}), or once every warp's first weight loads are issued
     * ({@code qgemv_swiglu_lora_*xfl_*}), so that the down prologue's loads queue behind gate/up's rather than ahead of
     * them (the {@code _pk} kernels, which choose the experts themselves, trigger at their wait). The same bits: the down launch's wait waits for gate/up's completion either way, and gate/up still waits for
     * the router before it lets it start. Measured on an H100 (Qwen3-30B-A3B shape, a one-sequence captured step, two
     * pairs of variants in one JVM): 2.498-2.525 ms at the wait against 2.461-2.482 once the loads are issued.
     */
    static final String GATE_UP_TRIGGER_PROPERTY = "orbit.cuda.gateUpTrigger";
    /**
     * {@value} ({@code wait|staged|early}, read at each call; {@code wait} by default): where the down launch's prologue
     * form lets the launch after it start, which at one token is the next layer's q/k/v product streaming its weights
     * ahead of its wait: at its wait, once a block's act rows are staged ({@code qgemv_down_combine_pre_lt_int4}), or as
     * soon as its prologue's loads are issued, before its wait ({@code qgemv_down_combine_pre_et_int4}: q/k/v's blocks
     * then start during the gate/up launch's tail). The same bits. Measured on an H100 as above: {@code staged} no faster
     * (2.497-2.513 ms against 2.486-2.525); {@code early} within the rounds' spread, and with q/k/v staged in shared
     * memory (a form since removed) slower.
     */
    static final String DOWN_TRIGGER_PROPERTY = "orbit.cuda.downTrigger";
    /**
     * {@value} ({@code on|off}, read at each call; off by default, not yet measured): with the down trigger at its wait
     * (its default), the down prologue form whose loads after the wait go out at once as asynchronous copies into shared
     * memory ({@code qgemv_down_combine_pre_cp_int4}: the act rows, the token's expert weights and the rows of out it adds
     * to), where the plain kernel's act rows cost a round trip through the L2 an iteration of their loop and its weights
     * and out two more after the products. The same bits. The other triggers keep their plain loads.
     */
    static final String DOWN_COPIES_PROPERTY = "orbit.cuda.downCopies";
    /** Launches a thread may issue between the gate/up launch and the down launch that takes its prologue. */
    static final int PROLOGUE_GAP = 4;

    private final CudaContext ctx;
    private final EnumMap<QuantLayout, Kernel> swiglu = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> swiglu6 = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> swigluXf = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> swiglu6Xf = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> swigluXfl = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> swiglu6Xfl = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> swigluPick = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> swiglu6Pick = new EnumMap<>(QuantLayout.class);
    private final EnumMap<QuantLayout, Kernel> down = new EnumMap<>(QuantLayout.class);
    private final Kernel downPre;
    private final Kernel downPreLate;
    private final Kernel downPreEarly;
    private final Kernel downPreCopies;
    private final Kernel downPrePick;
    private long swigluIds = -1;     // the ids of the last gate/up launch, Launcher.launches() just after it, and its thread
    private long swigluAt = -1;
    private Thread swigluBy;

    CudaMoeDecodePairs(CudaContext ctx) {
        this.ctx = ctx;
        for (QuantLayout l : QuantLayout.values()) {
            swiglu.put(l, ctx.kernel("qgemv", "qgemv_swiglu_lora_" + l.kernelSuffix()));
            swiglu6.put(l, ctx.kernel("qgemv", "qgemv_swiglu_lora_r6_" + l.kernelSuffix()));
            swigluXf.put(l, ctx.kernel("qgemv", "qgemv_swiglu_lora_xf_" + l.kernelSuffix()));
            swiglu6Xf.put(l, ctx.kernel("qgemv", "qgemv_swiglu_lora_r6_xf_" + l.kernelSuffix()));
            swigluXfl.put(l, ctx.kernel("qgemv", "qgemv_swiglu_lora_xfl_" + l.kernelSuffix()));
            swiglu6Xfl.put(l, ctx.kernel("qgemv", "qgemv_swiglu_lora_r6_xfl_" + l.kernelSuffix()));
            swigluPick.put(l, ctx.kernel("qgemv", "qgemv_swiglu_lora_xf_pk_" + l.kernelSuffix()));
            swiglu6Pick.put(l, ctx.kernel("qgemv", "qgemv_swiglu_lora_r6_xf_pk_" + l.kernelSuffix()));
            down.put(l, ctx.kernel("qgemv", "qgemv_down_combine_lora_" + l.kernelSuffix()));
        }
        downPre = ctx.kernel("qgemv", "qgemv_down_combine_pre_int4");
        downPreLate = ctx.kernel("qgemv", "qgemv_down_combine_pre_lt_int4");
        downPreEarly = ctx.kernel("qgemv", "qgemv_down_combine_pre_et_int4");
        downPreCopies = ctx.kernel("qgemv", "qgemv_down_combine_pre_cp_int4");
        downPrePick = ctx.kernel("qgemv", "qgemv_down_combine_pre_pk_int4");
    }

    /** Whether {@link #DOWN_PROLOGUE_PROPERTY} asks for the prologue form. */
    static boolean downPrologue() {
        return Switches.onOff(DOWN_PROLOGUE_PROPERTY, true);
    }

    /** Whether {@link #X_FIRST_PROPERTY} asks for the x-first kernels. */
    static boolean xFirst() {
        return Switches.onOff(X_FIRST_PROPERTY, true);
    }

    /** Whether {@link #GATE_UP_TRIGGER_PROPERTY} asks for the trigger once the weights' loads are issued. */
    static boolean gateUpTriggersLate() {
        return twoWay(GATE_UP_TRIGGER_PROPERTY, "loads", true);
    }

    /** Where {@link #DOWN_TRIGGER_PROPERTY} asks the down prologue kernel to let its dependents start: wait, staged or early. */
    static String downTrigger() {
        return Switches.oneOf(DOWN_TRIGGER_PROPERTY, "wait", "wait", "staged", "early");
    }

    /** The down prologue kernel {@link #downTrigger} and {@link #DOWN_COPIES_PROPERTY} ask for. */
    private Kernel downPrologueKernel() {
        return switch (downTrigger()) {
            case "staged" -> downPreLate;
            case "early" -> downPreEarly;
            default -> Switches.onOff(DOWN_COPIES_PROPERTY, false) ? downPreCopies : downPre;
        };
    }

    /** {@code key} as {@code wait}: false; as {@code late}: true; unset: {@code byDefault}; anything else an error naming both. */
    private static boolean twoWay(String key, String late, boolean byDefault) {
        return Switches.oneOf(key, byDefault ? late : "wait", "wait", late).equals(late);
    }

    /** Whether a call of this many pairs, ids [tokens, k] and x a row per xDiv pairs may take these launches. */
    static boolean takes(int pairs, Tensor ids, int xDiv) {
        return pairs > 0 && pairs < CudaMoePairs.STACKED_PAIRS && ids.rank() == 2 && (xDiv == 1 || xDiv == ids.size(-1))
                && !"off".equals(System.getProperty("orbit.cuda.moeDecodePairs"));
    }

    /**
     * act [P, N] = silu(x · G_eᵀ + g) · (x · U_eᵀ + u) for stacked g and u of one layout; the terms' tables from
     * {@link CudaMoePairs} (null with their LoRA). False, writing nothing, where x or K do not suit the kernel.
     */
    boolean swiglu(Tensor x, int xDiv, QuantizedTensor g, QuantizedTensor u, int experts, Tensor ids, Backend.PairLora gl,
                   Tensor gTable, Backend.PairLora ul, Tensor uTable, int rank, Tensor act) {
        QuantLayout layout = QuantLayout.of(g, ctx);
        int n = Math.toIntExact(g.rows() / experts);
        int k = Math.toIntExact(g.cols());
        if (QuantLayout.of(u, ctx) != layout || k % 32 != 0 || 4L * k > CudaMoePairs.MAX_SHARED
                || CudaAllocator.address(x) % 16 != 0 || CudaAllocator.address(g.codes()) % 16 != 0
                || CudaAllocator.address(u.codes()) % 16 != 0) {
            return false;
        }
        int pairs = Math.toIntExact(ids.numel());
        int warps = CudaQgemv.warpsFor(k / 32, 8);
        int laneRows = swigluLaneRows(layout, n, pairs, 32 * warps, 4 * k);
        int rows = 32 / 8 * laneRows;   // 32 / QGS_KQ row lanes
        long before = Launcher.launches();
        boolean xf = xFirst();
        boolean late = xf && gateUpTriggersLate();
        // a router launch's choice of these ids left to this launch: the x-first kernels that pick each pair's expert
        CudaDecodeRouter.Pending pick = xf ? CudaDecodeRouter.pendingPicks(ids) : null;
        if (pick != null && (pick.experts() != experts || pick.topk() != ids.size(-1))) {
            pick = null;
        }
        Kernel kernel = pick != null ? (laneRows == 6 ? swiglu6Pick : swigluPick).get(layout)
                : (laneRows == 6 ? xf ? late ? swiglu6Xfl : swiglu6Xf : swiglu6 : xf ? late ? swigluXfl : swigluXf : swiglu).get(layout);
        Object[] args = {x, xDiv, ids, g.codes(), g.scales(), g.zeros(), g.globalScale(), u.codes(), u.scales(), u.zeros(),
                u.globalScale(), act, n, k, experts, ctx.errorFlag, gl == null ? null : gl.lo(), gTable, gl == null ? 0f : gl.scale(),
                ul == null ? null : ul.lo(), uTable, ul == null ? 0f : ul.scale(), rank};
        if (pick != null) {
            Launcher.take(pick);
            args = Arrays.copyOf(args, args.length + 2);
            args[args.length - 2] = pick.logits();
            args[args.length - 1] = pick.topk();
        }
        ctx.launch2dShared(kernel, (n + rows - 1) / rows, pairs, 32 * warps, 4 * k, args);
        if (pick != null) {
            Launcher.defer(pick.withIds());   // the weights still to come: the down launch's prologue, or moe_router_select
        }
        long after = Launcher.launches();
        swigluIds = after > before ? CudaAllocator.address(ids) : -1;
        swigluAt = after;
        swigluBy = Thread.currentThread();
        return true;
    }

    /**
     * Rows of a lane of the gate/up launch for n rows an expert, this many pairs and blocks of {@code threads} threads
     * with {@code shared} bytes of dynamic shared memory, {@code -Dorbit.cuda.swigluRows} (read at each call): {@code
     * auto} (the default) takes 6 ({@code qgemv_swiglu_lora_r6_*}, fewer, larger blocks) where that needs fewer waves of
     * the blocks the device holds at once than 4 ({@code qgemv_swiglu_lora_*}, each kernel's occupancy as the driver
     * gives it), else 4; {@code 4} or {@code 6} fix it. The same sums either way, a row's steps over K being the same.
     * Measured on an H100 at one token of Qwen3-30B-A3B (8 pairs of 768 rows: 256 blocks in one wave against 384 in
     * two): a decode step 4.613 → 4.494 ms, with rollout's adapter 6.213 → 6.073 ms.
     */
    private int swigluLaneRows(QuantLayout layout, int n, int pairs, int threads, int shared) {
        String v = System.getProperty("orbit.cuda.swigluRows", "auto");
        return switch (v) {
            case "4" -> 4;
            case "6" -> 6;
            case "auto" -> {
                long sms = ctx.device.multiprocessors();
                long slots4 = Math.max(1, sms * swiglu.get(layout).residentBlocksPerSm(threads, shared));
                long slots6 = Math.max(1, sms * swiglu6.get(layout).residentBlocksPerSm(threads, shared));
                long waves4 = ((n + 15) / 16 * (long) pairs + slots4 - 1) / slots4;
                long waves6 = ((n + 23) / 24 * (long) pairs + slots6 - 1) / slots6;
                yield waves6 < waves4 ? 6 : 4;
            }
            default -> throw new IllegalArgumentException("-Dorbit.cuda.swigluRows=" + v + ": expected auto, 4 or 6");
        };
    }

    /**
     * out [T, H] (+)= Σ_j weights[t, j] · (act[t·k + j] · D_eᵀ + lora) for stacked d; the term's table from {@link
     * CudaMoePairs} (null without a LoRA). False, writing nothing, where the shapes do not suit the kernel.
     */
    boolean downCombine(Tensor act, QuantizedTensor d, int experts, Tensor ids, Backend.PairLora lora, Tensor table, int rank,
                        Tensor weights, Tensor out, boolean accumulate) {
        long sinceGateUp = swigluIds == CudaAllocator.address(ids) && swigluBy == Thread.currentThread()
                ? Launcher.launches() - swigluAt : -1;
        swigluIds = -1;   // one down call a gate/up launch, taken or not
        QuantLayout layout = QuantLayout.of(d, ctx);
        int n = Math.toIntExact(d.rows() / experts);
        int k = Math.toIntExact(d.cols());
        int topk = ids.size(-1);
        int tokens = ids.size(0);
        if (k % 32 != 0 || topk > MAX_TOPK || 4L * topk * k > CudaMoePairs.MAX_SHARED || CudaAllocator.address(act) % 16 != 0
                || CudaAllocator.address(d.codes()) % 16 != 0) {
            return false;
        }
        ctx.devContiguous("moeDownCombinePairs weights", weights, DType.F32);
        ctx.devContiguous("moeDownCombinePairs out", out, DType.F32);
        if (weights.numel() != (long) tokens * topk || out.size(-1) != n || CudaContext.rows(out) != tokens) {
            throw new IllegalArgumentException("moeDownCombinePairs: weights " + weights + " [" + tokens + ", " + topk + "] and out " + out
                    + " [" + tokens + ", " + n + "] do not fit ids " + ids + " and experts of [" + n + ", " + k + "]");
        }
        boolean pre = layout == QuantLayout.INT4 && downPrologue() && sinceGateUp >= 0 && sinceGateUp <= PROLOGUE_GAP;
        // the weights of a router launch's choice left to this launch (its gate/up launch picked the experts): chosen again
        // in the prologue, from the router's logits
        CudaDecodeRouter.Pending pick = pre ? CudaDecodeRouter.pendingWeights(ids, weights) : null;
        if (pick != null && (pick.experts() != experts || pick.experts() > 32 * topk || pick.topk() != topk)) {
            pick = null;
        }
        Object[] args = {act, ids, weights, topk, 0, d.codes(), d.scales(), d.zeros(), d.globalScale(), out, accumulate ? 1 : 0, n, k,
                experts, ctx.errorFlag, lora == null ? null : lora.lo(), table, lora == null ? 0f : lora.scale(), rank};
        if (pick != null) {
            Launcher.take(pick);
            args = Arrays.copyOf(args, args.length + 2);
            args[args.length - 2] = pick.logits();
            args[args.length - 1] = pick.normalize() ? 1 : 0;
        }
        ctx.launch2dShared(pick != null ? downPrePick : pre ? downPrologueKernel() : down.get(layout), (n + DOWN_ROWS - 1) / DOWN_ROWS, tokens,
                32 * topk, 4 * topk * k, args);
        return true;
    }
}
