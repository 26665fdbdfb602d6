package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.HashMap;
import java.util.Map;

/**
 * Launches the bandwidth-oriented fused dequantize-GEMV of {@code qgemv.cu} (f32 or bf16 x, f32 y,
 * fp32 accumulation, weight values exact in f32) in its three modes: dense rows, one
 * (token, expert) pair per block row, and experts grouped by {@link MoeRouting}.
 *
 * <p>Launch shape: a block computes a fixed number of consecutive output rows over the whole of K
 * (its warps split K and reduce through shared memory); that number depends on the compile-time
 * x-row chunk MT (1, 4, 8 or 16) and must match the per-MT configuration in the kernel sources
 * ({@link #quantRowsPerBlock}, {@link #bf16RowsPerBlock}). The warps per block (8, or fewer when K
 * is short) are picked so that every warp has a share of K. Rows of x are processed MT at a time,
 * each weight load used for every row of the chunk.
 */
final class CudaQgemv {
    static final int MAX_CHUNK = 16;
    private static final int MAX_WARPS = 8; // QG_WARPS, BG_WARPS

    static final int MODE_DENSE = 0;
    static final int MODE_PAIRS = 1;
    static final int MODE_GROUPED = 2;

    private final CudaContext ctx;
    private final Map<String, Kernel> kernels = new HashMap<>();
    private final Map<Integer, Kernel> bf16Kernels = new HashMap<>();
    private final Kernel bf16Prologue;       // bgemv_pre1
    private final Kernel bf16PrologueStagedX; // bgemv_pre1_xs
    private final Kernel bf16NormPrologue;   // bgemv_norm_pre1
    private final Kernel bf16NormScalePrologue;   // bgemv_norm_scale_pre1
    private final Map<Integer, Kernel> bf16LowRank = new HashMap<>();
    private final Map<Integer, Kernel> bf16LowRankA = new HashMap<>();
    private final Map<Integer, Kernel> bf16NormShared = new HashMap<>();
    private final Kernel bf16NormScale;
    private final Kernel bf16NormScaleWave;       // bgemv_norm_scale_w1

    CudaQgemv(CudaContext ctx) {
        this.ctx = ctx;
        for (QuantLayout l : QuantLayout.values()) {
            for (int mt : new int[]{1, 4, 8, 16}) {
                for (String xt : new String[]{"f32", "bf16"}) {
                    String name = "qgemv_" + l.kernelSuffix() + "_m" + mt + "_" + xt;
                    kernels.put(name, ctx.kernel("qgemv", name));
                }
            }
        }
        for (int mt : new int[]{1, 4, 8, 16}) {
            bf16Kernels.put(mt, ctx.kernel("bgemv", "bgemv_m" + mt));
            bf16LowRank.put(mt, ctx.kernel("bgemv", "bgemv_lr_m" + mt));
            bf16LowRankA.put(mt, ctx.kernel("bgemv", "bgemv_lra_m" + mt));
            if (mt <= NORM_SHARED_MAX_ROWS) {
                bf16NormShared.put(mt, ctx.kernel("bgemv", "bgemv_norm_lr_m" + mt));
            }
        }
        bf16NormScale = ctx.kernel("bgemv", "bgemv_norm_scale_m1");
        bf16NormScaleWave = ctx.kernel("bgemv", "bgemv_norm_scale_w1");
        this.bf16Prologue = ctx.kernel("bgemv", "bgemv_pre1");
        this.bf16PrologueStagedX = ctx.kernel("bgemv", "bgemv_pre1_xs");
        this.bf16NormPrologue = ctx.kernel("bgemv", "bgemv_norm_pre1");
        this.bf16NormScalePrologue = ctx.kernel("bgemv", "bgemv_norm_scale_pre1");
    }

    /**
     * {@code -Dorbit.cuda.normFold=scale|stage} (read at each call): how {@link #launchBf16NormShared} folds the norm into
     * one row's products. {@code scale} (the default): {@code bgemv_norm_scale_m1}, which multiplies the weights with
     * {@code nw ⊙ x} as it reads x and scales each total by {@code 1 / sqrt(mean(x²) + eps)}, its blocks' weight loads
     * waiting for nothing; {@code stage}: {@code bgemv_norm_lr_m1}, every block staging the normed row in shared memory
     * first (the same values to rounding).
     */
    static final String NORM_FOLD_PROPERTY = "orbit.cuda.normFold";

    private static boolean normScaled() {
        String v = System.getProperty(NORM_FOLD_PROPERTY, "scale");
        return switch (v) {
            case "scale" -> true;
            case "stage" -> false;
            default -> throw new IllegalArgumentException("-D" + NORM_FOLD_PROPERTY + "=" + v + ": expected scale or stage");
        };
    }

    /**
     * {@code -Dorbit.cuda.gemvPrologue=on|plain|off} (read at each call; {@code plain} by default): {@code plain} has a
     * one-row bf16 product take {@code bgemv_pre1} (every weight load of a lane issued before the kernel waits for the one
     * before it; the bits of {@code bgemv_m1}) where a lane's steps fit its registers; {@code on} also the norm-folded
     * one-row q/k/v products, {@code bgemv_norm_scale_pre1} (the bits of {@code bgemv_norm_scale_m1}) or, with the staged
     * fold ({@link #NORM_FOLD_PROPERTY}{@code =stage}), {@code bgemv_norm_pre1} (those of {@code bgemv_norm_lr_m1}). It
     * pays only under dependent launches (a one-sequence step's capture, or {@code -Dorbit.cuda.pdl=on}). Measured on an
     * H100 (Qwen3-30B-A3B shape, one sequence, with the down prologue): off 2.956-2.961, plain 2.929-2.944, on 2.973 ms.
     */
    static final String PROLOGUE_PROPERTY = "orbit.cuda.gemvPrologue";
    static final int PROLOGUE_STEPS = 8;   // BGP_STEPS

    /** Whether {@link #PROLOGUE_PROPERTY} asks for the prologue forms: {@code on} both, {@code plain} the plain product's alone. */
    static boolean prologueAsked(boolean normFolded) {
        String v = System.getProperty(PROLOGUE_PROPERTY, "plain");
        return switch (v) {
            case "on" -> true;
            case "plain" -> !normFolded;
            case "off" -> false;
            default -> throw new IllegalArgumentException("-D" + PROLOGUE_PROPERTY + "=" + v + ": expected on, plain or off");
        };
    }

    /**
     * {@code -Dorbit.cuda.gemvStagedX=on|off} (read at each call; off by default, not yet measured): where a one-row bf16
     * product takes {@code bgemv_pre1} (its weights loaded before its wait), {@code bgemv_pre1_xs} in its place where
     * its row of x fits {@value #STAGED_X_MAX_BYTES} bytes of shared memory: x copied into shared
     * memory after the wait by every thread's asynchronous copies at once, one round trip, where {@code bgemv_pre1}'s SASS
     * (nvcc 13.0, sm_90) reads each step's x right before its multiply-adds use it, a round trip a step (8 at the
     * attention output's K of 4096, o's product). The same bits.
     */
    static final String STAGED_X_PROPERTY = "orbit.cuda.gemvStagedX";
    /** Most bytes of x {@code bgemv_pre1_xs} stages (the default dynamic shared memory limit). */
    static final int STAGED_X_MAX_BYTES = 48 * 1024;

    /** Whether {@link #STAGED_X_PROPERTY} asks for x staged in shared memory. */
    static boolean stagedXAsked() {
        return Switches.onOff(STAGED_X_PROPERTY, false);
    }

    /**
     * {@code -Dorbit.cuda.qkvWave=on|off} (read at each call; {@code on} by default): the norm-folded one-row products
     * without a prologue take {@code bgemv_norm_scale_w1}, built for five blocks an SM, rather than {@code
     * bgemv_norm_scale_m1} (four): the same PTX and bits; at Qwen3-30B-A3B's 640 row blocks of q, k and v one wave on
     * 132 SMs instead of a second wave's tail.
     */
    static final String WAVE_PROPERTY = "orbit.cuda.qkvWave";

    /** Whether {@link #WAVE_PROPERTY} asks for the five-blocks-an-SM build. */
    static boolean waveAsked() {
        return Switches.onOff(WAVE_PROPERTY, true);
    }

    /** Whether a lane of a one-row prologue kernel over K columns in blocks of {@code warps} warps holds all its steps. */
    private static boolean prologueFits(int k, int warps) {
        return ceilDiv(k / 8, warps * bf16KLanes(1)) <= PROLOGUE_STEPS;
    }

    /**
     * Most rows of x {@link #launchBf16NormShared} takes ({@code bgemv_norm_lr_m1}). One: at 8 rows every block staging
     * 64 KiB of normed rows made a Qwen3-30B-A3B-wide step slower than the norm's own launch (9.307 against 7.463 ms on
     * an H100), where one row gained (4.463 against 4.609 ms).
     */
    static final int NORM_SHARED_MAX_ROWS = 1;

    /**
     * {@code ys[i] = rmsnorm(x) · ws[i]ᵀ} for up to three dense bf16 weights ({@code bgemv_norm_lr_m*}, one launch): every
     * block stages the m normalized rows of x ({@code nw ⊙ x / sqrt(mean(x²) + eps)}, the expression of {@code bgemv_norm*},
     * nw f32 or bf16) in 4·m·k bytes of shared memory, then computes its row block as {@link #launchBf16LowRank} does
     * without terms. Addresses w, y per weight (0: none); m at most {@value #NORM_SHARED_MAX_ROWS}, K a multiple of 8, x and
     * the weights 16-byte aligned.
     */
    void launchBf16NormShared(Tensor x, int m, int k, Tensor normWeight, float eps, long[] w, long[] y, int[] n) {
        int mt = chunkFor(m);
        int warps = warpsFor(k / 8, bf16KLanes(mt));
        boolean prologue = m == 1 && prologueAsked(true) && prologueFits(k, warps);
        if (m == 1 && normScaled()) {
            long blocks = lowRankBlocks(1, n);
            if (blocks > 0) {
                ctx.launch(prologue ? bf16NormScalePrologue : waveAsked() ? bf16NormScaleWave : bf16NormScale, blocks,
                        32 * warps, x, k, normWeight,
                        normWeight.dtype() == DType.BF16 ? 1 : 0, eps, w[0], y[0], n[0], w[1], y[1], n[1], w[2], y[2], n[2]);
            }
            return;
        }
        if (prologue) {
            long blocks = lowRankBlocks(1, n);
            if (blocks > 0) {
                ctx.launch2dShared(bf16NormPrologue, blocks, 1, 32 * warps, 4 * k, x, k, normWeight,
                        normWeight.dtype() == DType.BF16 ? 1 : 0, eps, w[0], y[0], n[0], w[1], y[1], n[1], w[2], y[2], n[2]);
            }
            return;
        }
        Object[] lr = lowRankArgs(x, m, k, w, y, n, new long[3], new long[3], new float[3], new int[3], 0);
        Object[] args = new Object[lr.length + 3];
        args[0] = x;
        args[1] = m;
        args[2] = k;
        args[3] = normWeight;
        args[4] = normWeight.dtype() == DType.BF16 ? 1 : 0;
        args[5] = eps;
        System.arraycopy(lr, 3, args, 6, lr.length - 3);
        long blocks = lowRankBlocks(mt, n);
        if (blocks > 0) {
            ctx.launch2dShared(bf16NormShared.get(mt), blocks, 1, 32 * warps, 4 * m * k, args);
        }
    }

    /** Bytes of static shared memory {@link #launchBf16NormShared}'s kernel for m rows declares (beside its 4·m·k). */
    int normSharedStaticBytes(int m) {
        return bf16NormShared.get(chunkFor(m)).staticSharedBytes();
    }

    /**
     * {@code ys[i] = x[M, K] · ws[i]ᵀ + scales[i] · lo_i · b_iᵀ} for up to three dense bf16 weights read by the same x
     * ({@code bgemv_lr_m*}, one launch, each weight's row blocks after the one before's): the sums of {@link #launchBf16},
     * then each output's term over the rank in order. Addresses: w, y per weight (0: none), lo [M, r] and b [N, r] f32
     * (0: no term). K a multiple of 8, x and the weights 16-byte aligned.
     */
    void launchBf16LowRank(Tensor x, int m, int k, long[] w, long[] y, int[] n, long[] lo, long[] b, float[] scales, int[] ranks) {
        int mt = chunkFor(Math.min(m, MAX_CHUNK));
        int warps = warpsFor(k / 8, bf16KLanes(mt));
        long blocks = lowRankBlocks(mt, n);
        if (blocks > 0) {
            ctx.launch(bf16LowRank.get(mt), blocks, 32 * warps, lowRankArgs(x, m, k, w, y, n, lo, b, scales, ranks, 0));
        }
    }

    /**
     * {@link #launchBf16LowRank} with the terms' lo made in the same launch ({@code bgemv_lra_m*}): its first aBlocks ·
     * aChunks blocks are {@code narrow_matmul3_f32}'s for the terms' A (aw, ay, an packed as that launch takes them, amt
     * rows of x a chunk, aShared bytes of shared memory), whose lo the row blocks wait for before their terms: the bits of
     * the two launches in one. flags: i32 [2] of zeros, left zero. False (nothing launched) where the GEMV's blocks would
     * hold fewer warps than the A products' eight (a short K).
     */
    boolean launchBf16LowRankA(Tensor x, int m, int k, long[] w, long[] y, int[] n, long[] lo, long[] b, float[] scales, int[] ranks,
                               long[] aw, long[] ay, int[] an, long aBlocks, int aChunks, int amt, int aShared, Tensor flags) {
        int mt = chunkFor(Math.min(m, MAX_CHUNK));
        if (warpsFor(k / 8, bf16KLanes(mt)) != MAX_WARPS) {
            return false;
        }
        Object[] args = lowRankArgs(x, m, k, w, y, n, lo, b, scales, ranks, 3 * 3 + 4);   // then aw, ay, an of each, and 4
        int at = 3 + 7 * 3;
        for (int i = 0; i < 3; i++) {
            args[at++] = aw[i];
            args[at++] = ay[i];
            args[at++] = an[i];
        }
        args[at++] = (int) aBlocks;
        args[at++] = aChunks;
        args[at++] = amt;
        args[at] = flags;
        ctx.launch2dShared(bf16LowRankA.get(mt), aBlocks * aChunks + lowRankBlocks(mt, n), 1, 32 * MAX_WARPS, aShared, args);
        return true;
    }

    /** The row blocks of {@code bgemv_lr_m*}'s products of n rows each. */
    private static long lowRankBlocks(int mt, int[] n) {
        int rows = bf16RowsPerBlock(mt);
        long blocks = 0;
        for (int i = 0; i < 3; i++) {
            blocks += ceilDiv(n[i], rows);
        }
        return blocks;
    }

    /** {@code bgemv_lr_m*}'s arguments, and {@code extra} slots after them. */
    private static Object[] lowRankArgs(Tensor x, int m, int k, long[] w, long[] y, int[] n, long[] lo, long[] b, float[] scales,
                                        int[] ranks, int extra) {
        Object[] args = new Object[3 + 7 * 3 + extra];
        args[0] = x;
        args[1] = m;
        args[2] = k;
        for (int i = 0; i < 3; i++) {
            args[3 + 7 * i] = w[i];
            args[4 + 7 * i] = y[i];
            args[5 + 7 * i] = n[i];
            args[6 + 7 * i] = lo[i];
            args[7 + 7 * i] = b[i];
            args[8 + 7 * i] = scales[i];
            args[9 + 7 * i] = ranks[i];
        }
        return args;
    }

    /**
     * {@code y[M, N] = x[M, K] · wᵀ} for dense bf16 w (K a multiple of 8, 16-byte aligned x and w), f32
     * x and y ({@code bgemv.cu}): the work split of the quantized kernels, 8 weights a load;
     * {@code accumulate} adds into y.
     */
    void launchBf16(Tensor x, Tensor w, Tensor y, int m, int n, int k, boolean accumulate) {
        int mt = chunkFor(Math.min(m, MAX_CHUNK));
        Kernel kernel = bf16Kernels.get(mt);
        int warps = warpsFor(k / 8, bf16KLanes(mt));
        if (m == 1 && prologueAsked(false) && prologueFits(k, warps)) {
            if (stagedXAsked() && 4L * k <= STAGED_X_MAX_BYTES) {   // x 16-byte aligned: the callers' check
                ctx.launchShared(bf16PrologueStagedX, ceilDiv(n, bf16RowsPerBlock(1)), 32 * warps, 4 * k, x, w, y, n, k,
                        accumulate ? 1 : 0);
            } else {
                ctx.launch(bf16Prologue, ceilDiv(n, bf16RowsPerBlock(1)), 32 * warps, x, w, y, n, k, accumulate ? 1 : 0);
            }
            return;
        }
        ctx.launch(kernel, ceilDiv(n, bf16RowsPerBlock(mt)), 32 * warps, x, m, w, y, n, k, accumulate ? 1 : 0);
    }

    /** k lanes of a warp in {@code qgemv.cu} for chunk mt (QG_KQ_mt). */
    static int quantKLanes(int mt) {
        return mt == 8 ? 8 : 4;
    }

    /** Output rows of a block in {@code qgemv.cu} for chunk mt: 32 / QG_KQ_mt * QG_R_mt. */
    static int quantRowsPerBlock(int mt) {
        int rowsPerLane = switch (mt) {
            case 4, 8 -> 4;
            default -> 2;
        };
        return 32 / quantKLanes(mt) * rowsPerLane;
    }

    /** k lanes of a warp in {@code bgemv.cu} for chunk mt (BG_KQ_mt). */
    static int bf16KLanes(int mt) {
        return mt == 4 ? 4 : 8;
    }

    /** Output rows of a block in {@code bgemv.cu} for chunk mt: 32 / BG_KQ_mt * BG_R_mt. */
    static int bf16RowsPerBlock(int mt) {
        int rowsPerLane = switch (mt) {
            case 4 -> 4;
            case 16 -> 1;
            default -> 2;
        };
        return 32 / bf16KLanes(mt) * rowsPerLane;
    }

    /** Warps per block: 8, halved while the warps' k lanes would outnumber the row's 16-byte loads. */
    static int warpsFor(int loadsPerRow, int kLanes) {
        int warps = MAX_WARPS;
        while (warps > 1 && warps * kLanes > loadsPerRow) {
            warps /= 2;
        }
        return warps;
    }

    /** The compile-time row chunk for about {@code rows} rows of x per weight row. */
    static int chunkFor(int rows) {
        return rows <= 1 ? 1 : rows <= 4 ? 4 : rows <= 8 ? 8 : 16;
    }

    /**
     * Issues one launch.
     *
     * @param x       f32 or bf16, contiguous, rows of K
     * @param w       quantized [E·N, K] (E = 1 for dense)
     * @param y       f32, rows of N
     * @param rows    mode 0: rows of x (= rows of y); mode 1: pairs (blocks in y); mode 2: an upper bound of
     *                active experts (blocks in y)
     * @param chunk   rows of x per weight load (mode 1: 1)
     * @param xDiv    x row = pair / xDiv (modes 1 and 2; 1 in mode 0)
     */
    void launch(int mode, Tensor x, QuantizedTensor w, QuantLayout layout, Tensor y, int rows, int chunk, int xDiv,
                Tensor ids, MoeRouting routing, int n, int k, int numExperts) {
        boolean bf16 = x.dtype() == DType.BF16;
        if (!bf16 && x.dtype() != DType.F32) {
            throw new IllegalArgumentException("quantized GEMV: x must be f32 or bf16, got " + x);
        }
        if (CudaAllocator.address(x) % 16 != 0 || CudaAllocator.address(w.codes()) % 16 != 0) {
            throw new IllegalArgumentException("quantized GEMV: x " + x + " and the codes of " + w + " must be 16-byte aligned");
        }
        int mt = chunkFor(chunk);
        Kernel kernel = kernels.get("qgemv_" + layout.kernelSuffix() + "_m" + mt + "_" + (bf16 ? "bf16" : "f32"));
        long gridY = mode == MODE_DENSE ? 1 : rows;
        int warps = warpsFor(k / 32, quantKLanes(mt));
        long gridX = ceilDiv(n, quantRowsPerBlock(mt));
        if (gridY > 65535) {
            throw new IllegalArgumentException("quantized GEMV: " + gridY + " block rows exceed one launch (65535)");
        }
        Tensor offsets = routing == null ? null : routing.offsets();
        Tensor order = routing == null ? null : routing.order();
        Tensor active = routing == null ? null : routing.active();
        ctx.launch2d(kernel, gridX, (int) gridY, 32 * warps, mode, x, xDiv, mode == MODE_DENSE ? rows : 0, ids, offsets, order,
                active, w.codes(), w.scales(), w.zeros(), w.globalScale(), y, n, k, numExperts, ctx.errorFlag);
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }
}
