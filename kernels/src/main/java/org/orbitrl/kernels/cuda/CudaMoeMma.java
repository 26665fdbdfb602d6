package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * Launches the tensor-core grouped expert products of {@code qmma.cu}: for INT4 group-32 experts
 * (symmetric or with zero points) and MXFP4 experts, every routed pair's {@code y[p] = x[p / xDiv] · W_eᵀ} in one
 * launch over the active experts, read from the device routing (no host read: capturable in a CUDA graph). The fused
 * shapes (gate and up together, the LoRA terms) take INT4 experts only.
 *
 * <p>Numerics: weight values {@code u − z} (INT4) and twice the E2M1 values (MXFP4) are exact in bf16 and the group
 * scale (for MXFP4 half its power of two) multiplies the f32 partial product of its 32 values, so the only rounding
 * beyond f32 accumulation is x to bf16 (none for bf16 x).
 *
 * <p>Launch shape: a block computes 128 consecutive output rows of one active expert (8 warps of 16
 * rows) over the whole of K; it stages MT of the expert's x rows at a time (8, 16 or 32, from the
 * average pairs per expert of the layer and the shared memory a row of K takes: two blocks an SM
 * when MT is above 8) and streams each weight byte once per chunk of MT rows. The fused shapes
 * ({@link #fused}) add: gate and up of the same experts in one launch ({@link #launchGateUp}: a block
 * computes 64 rows of both and writes silu(gate)·up in bf16), short K (the down projection) in three
 * blocks an SM, and 16-row chunks in two weight stages where four stages leave room for 8 rows only. A plain
 * launch of 8-row chunks at a K whose staged rows leave room for one block of four stages takes two stages and two
 * blocks an SM ({@link #twoStagesForTwoBlocks}: K 4096, DeepSeek V4's experts).
 */
final class CudaMoeMma {
    private static final int ROWS_PER_BLOCK = 128; // QM_WARPS * 16
    private static final int THREADS = 256;        // 32 * QM_WARPS
    /** The warps' weight stages at the start of the kernel's dynamic shared memory: QM_WARPS * QM_STAGES * QM_STAGE bytes. */
    private static final int WEIGHT_SHARED = 81920;
    /** The x rows' share when picking MT above 8: two blocks (and the 1 KiB the system keeps for each) fit in an SM's 228 KiB. */
    private static final int X_SHARED_PREFERRED = 228 * 1024 / 2 - 1024 - WEIGHT_SHARED;
    /** The x rows' share at most: a block may have 227 KiB. */
    private static final int X_SHARED_MAX = 227 * 1024 - WEIGHT_SHARED;

    /** The weight stages of the short-K kernel: 8 warps of 3 stages of 2560 bytes. */
    private static final int SHORT_WEIGHT_SHARED = 61440;
    /** The weight stages of the two-stage kernels (short K in four blocks an SM, gate and up in three): 8 warps of 2 stages. */
    private static final int TWO_STAGE_WEIGHT_SHARED = 40960;
    /** An SM's shared memory, for the three-blocks test of the short-K kernel (each block also costs the 1 KiB the system keeps). */
    private static final int SM_SHARED = 228 * 1024;

    private final CudaContext ctx;
    private final Kernel[][] kernels = new Kernel[3][2];      // [MT 8, 16, 32][x f32, bf16]: stage refilled before its products
    private final Kernel[][] afterKernels = new Kernel[3][2]; // refilled after its products (one stage more in flight)
    private final Kernel[] shortKernels = new Kernel[2];      // MT 8, 3 stages, three blocks an SM
    private final Kernel[] short4Kernels = new Kernel[2];     // MT 8, 2 stages, four blocks an SM
    private final Kernel[][] fp4Kernels = new Kernel[3][2];   // the same four shapes for MXFP4 experts
    private final Kernel[][] fp4AfterKernels = new Kernel[3][2];
    private final Kernel[] fp4ShortKernels = new Kernel[2];
    private final Kernel[] fp4Short4Kernels = new Kernel[2];
    private final Kernel[] st2Kernels = new Kernel[2];        // MT 8, 2 stages, two blocks an SM (INT4)
    private final Kernel[] fp4St2Kernels = new Kernel[2];     // the same for MXFP4
    private final Kernel[][] gateUpKernels = new Kernel[3][2];
    private final Kernel[] gateUp3Kernels = new Kernel[2];    // MT 8, 2 stages, three blocks an SM
    private final Kernel[] gateUp16Kernels = new Kernel[2];   // MT 16, 2 stages, two blocks an SM
    private final Kernel[] gateUpLoraKernels = new Kernel[3]; // [MT 8, 16, 32], f32 x and act, with LoRA terms
    private final Kernel gateUpLora16Kernel;                  // MT 16, 2 stages, two blocks an SM
    private final Kernel[] loraKernels = new Kernel[3];       // [MT 8, 16, 32], f32 x and y, with a LoRA term (after)
    private final Kernel loraShortKernel;                     // MT 8, 3 stages, three blocks an SM
    private final Kernel loraShort4Kernel;                    // MT 8, 2 stages, four blocks an SM
    private final Kernel gateUpLora3Kernel;                   // MT 8, 2 stages, three blocks an SM
    private boolean fused = !"off".equals(System.getProperty("orbit.cuda.moeFused"));

    CudaMoeMma(CudaContext ctx) {
        this.ctx = ctx;
        int[] mts = {8, 16, 32};
        String[] xt = {"_f32", "_bf16"};
        for (int i = 0; i < mts.length; i++) {
            for (int d = 0; d < 2; d++) {
                kernels[i][d] = ctx.kernel("qmma", "qmma_int4_grouped_m" + mts[i] + xt[d]);
                fp4Kernels[i][d] = ctx.kernel("qmma", "qmma_mxfp4_grouped_m" + mts[i] + xt[d]);
                fp4AfterKernels[i][d] = ctx.kernel("qmma", "qmma_mxfp4_grouped_after_m" + mts[i] + xt[d]);
                afterKernels[i][d] = ctx.kernel("qmma", "qmma_int4_grouped_after_m" + mts[i] + xt[d]);
                gateUpKernels[i][d] = ctx.kernel("qmma", "qmma_int4_gate_up_m" + mts[i] + xt[d]);
            }
            gateUpLoraKernels[i] = ctx.kernel("qmma", "qmma_int4_gate_up_lora_m" + mts[i] + "_f32");
            loraKernels[i] = ctx.kernel("qmma", "qmma_int4_grouped_lora_after_m" + mts[i] + "_f32");
        }
        loraShortKernel = ctx.kernel("qmma", "qmma_int4_grouped_lora_short_m8_f32");
        loraShort4Kernel = ctx.kernel("qmma", "qmma_int4_grouped_lora_short4_m8_f32");
        gateUpLora3Kernel = ctx.kernel("qmma", "qmma_int4_gate_up_lora3_m8_f32");
        gateUpLora16Kernel = ctx.kernel("qmma", "qmma_int4_gate_up_lora_st2_m16_f32");
        for (int d = 0; d < 2; d++) {
            shortKernels[d] = ctx.kernel("qmma", "qmma_int4_grouped_short_m8" + xt[d]);
            short4Kernels[d] = ctx.kernel("qmma", "qmma_int4_grouped_short4_m8" + xt[d]);
            fp4ShortKernels[d] = ctx.kernel("qmma", "qmma_mxfp4_grouped_short_m8" + xt[d]);
            fp4Short4Kernels[d] = ctx.kernel("qmma", "qmma_mxfp4_grouped_short4_m8" + xt[d]);
            st2Kernels[d] = ctx.kernel("qmma", "qmma_int4_grouped_st2_m8" + xt[d]);
            fp4St2Kernels[d] = ctx.kernel("qmma", "qmma_mxfp4_grouped_st2_m8" + xt[d]);
            gateUp3Kernels[d] = ctx.kernel("qmma", "qmma_int4_gate_up3_m8" + xt[d]);
            gateUp16Kernels[d] = ctx.kernel("qmma", "qmma_int4_gate_up_st2_m16" + xt[d]);
        }
    }

    /**
     * Whether the decode products take the faster launch shapes (on unless {@code -Dorbit.cuda.moeFused=off}):
     * a stage refilled after its products, short K (at most 928) at 8 x rows a chunk in three blocks an SM,
     * and gate and up in one launch ({@link #launchGateUp}). The numbers are the same either way.
     * Read at each launch: {@code -Dorbit.cuda.moeShortK=3} (default) short K at 8 rows in three blocks
     * an SM, {@code =4} in four (two stages), {@code =off} on the two-blocks kernel;
     * {@code -Dorbit.cuda.moeGateUpStages=auto} (default) gate and up in four stages at up to 6 rows an
     * expert (8-row chunks, two blocks an SM), in two stages with 16-row chunks above that where four
     * stages leave room for 8 rows only (the weights read half as often); {@code =2} also 8-row chunks
     * in two stages and three blocks an SM; {@code =4} always four stages (the x chunk of
     * {@link #chunkFor}). The same choices for the launches with LoRA terms. More blocks are faster alone
     * and slower inside the Qwen3-30B-A3B decode step on the H200 (64 tokens alone: gate and up 89.9 µs in
     * three blocks against 97.1 in four stages, down 52.2 in four blocks against 55.2 in three; the step
     * with its LoRA terms: 27.219 ms with {@code 2} and {@code 4} against 26.246 with the defaults, that
     * run's two LoRA kernels of these shapes not yet launched as programmatic dependents).
     */
    boolean fused() {
        return fused;
    }

    void fused(boolean enabled) {
        fused = enabled;
    }

    /** Whether {@code blocks} blocks of {@code weightShared} bytes of stages and 8 x rows of K fit in an SM. */
    static boolean fits(int blocks, int weightShared, int k) {
        return (long) blocks * (weightShared + 8L * xStride(k) + 1024) <= SM_SHARED;
    }

    /** Bytes of one staged x row in the kernel: 2K + 64 (a stride that keeps the fragment loads conflict-free). */
    static int xStride(int k) {
        return 2 * k + 64;
    }

    /**
     * Whether the kernels of every shape take these operands: INT4 experts, K a multiple of 64 (whole pairs of groups,
     * 4-byte aligned scale pairs), a chunk of 8 x rows in shared memory, f32 or bf16 x, 16-byte aligned
     * x and codes, 4-byte aligned scales.
     */
    static boolean supports(QuantLayout layout, QuantizedTensor w, Tensor x, int k) {
        return layout == QuantLayout.INT4 && operands(w, x, k);
    }

    /**
     * Whether {@link #launch} takes these operands: those of {@link #supports}, or MXFP4 experts with K a multiple of 128
     * (a stage's scales copied four bytes at a time from 4-byte aligned rows).
     */
    static boolean supportsPlain(QuantLayout layout, QuantizedTensor w, Tensor x, int k) {
        return (layout == QuantLayout.INT4 || (layout == QuantLayout.MXFP4 && k % 128 == 0)) && operands(w, x, k);
    }

    private static boolean operands(QuantizedTensor w, Tensor x, int k) {
        return k % 64 == 0 && 8L * xStride(k) <= X_SHARED_MAX && (x.dtype() == DType.F32 || x.dtype() == DType.BF16)
                && CudaAllocator.address(x) % 16 == 0 && CudaAllocator.address(w.codes()) % 16 == 0
                && CudaAllocator.address(w.scales()) % 4 == 0;
    }

    /** The x-row chunk for an average of {@code rowsPerExpert} rows, within the shared memory a row of K takes. */
    static int chunkFor(int rowsPerExpert, int k) {
        int mt = rowsPerExpert <= 6 ? 8 : rowsPerExpert <= 12 ? 16 : 32;
        while (mt > 8 && (long) mt * xStride(k) > X_SHARED_PREFERRED) {
            mt /= 2;
        }
        return mt;
    }

    /**
     * One launch over the active experts of {@code r}.
     *
     * @param x    f32 or bf16, rows of K; pair p reads row p / xDiv
     * @param w    INT4 or MXFP4 experts stacked [E·N, K] (checked by {@link #supportsPlain})
     * @param y    f32 [pairs, N]
     */
    void launch(Tensor x, int xDiv, QuantizedTensor w, MoeRouting r, Tensor y, int n, int k) {
        boolean fp4 = "mxfp4".equals(w.format().name());   // QuantLayout.MXFP4; the caller checked the parts (QuantLayout.of)
        int mt = chunkFor(rowsPerExpert(r), k);
        int xi = x.dtype() == DType.BF16 ? 1 : 0;
        Kernel kernel;
        int shared;
        if (!fused) {
            kernel = (fp4 ? fp4Kernels : kernels)[mtIndex(mt)][xi];
            shared = WEIGHT_SHARED + mt * xStride(k);
        } else if (mt == 8 && shortK().equals("4") && fits(4, TWO_STAGE_WEIGHT_SHARED, k)) {
            kernel = (fp4 ? fp4Short4Kernels : short4Kernels)[xi];
            shared = TWO_STAGE_WEIGHT_SHARED + mt * xStride(k);
        } else if (mt == 8 && !shortK().equals("off") && fits(3, SHORT_WEIGHT_SHARED, k)) {
            kernel = (fp4 ? fp4ShortKernels : shortKernels)[xi];
            shared = SHORT_WEIGHT_SHARED + mt * xStride(k);
        } else if (mt == 8 && twoStagesForTwoBlocks(k)) {
            kernel = (fp4 ? fp4St2Kernels : st2Kernels)[xi];
            shared = TWO_STAGE_WEIGHT_SHARED + mt * xStride(k);
        } else {
            kernel = (fp4 ? fp4AfterKernels : afterKernels)[mtIndex(mt)][xi];
            shared = WEIGHT_SHARED + mt * xStride(k);
        }
        long gridX = (n + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
        if (fp4) {
            ctx.launch2dShared(kernel, gridX, gridRows(r), THREADS, shared, x, xDiv, r.offsets(), r.order(), r.active(), w.codes(),
                    w.scales(), y, n, k, xStride(k));
        } else {
            ctx.launch2dShared(kernel, gridX, gridRows(r), THREADS, shared, x, xDiv, r.offsets(), r.order(), r.active(), w.codes(),
                    w.scales(), w.zeros(), y, n, k, xStride(k));
        }
    }

    /**
     * Gate and up in one launch: {@code act[p] = silu(x[p / xDiv] · G_eᵀ) · (x[p / xDiv] · U_eᵀ)} rounded to
     * bf16, a block computing 64 rows of both for the same staged x rows (numbers as two {@link #launch}es,
     * the SwiGLU in f32 and a rounding to bf16).
     *
     * @param gate INT4 [E·N, K] (checked by {@link #supports})
     * @param up   INT4 [E·N, K], the same shape
     * @param act  bf16 [pairs, N]
     */
    void launchGateUp(Tensor x, int xDiv, QuantizedTensor gate, QuantizedTensor up, MoeRouting r, Tensor act, int n, int k) {
        int rows = rowsPerExpert(r);
        int mt = chunkFor(rows, k);
        int xi = x.dtype() == DType.BF16 ? 1 : 0;
        Kernel kernel = gateUpKernels[mtIndex(mt)][xi];
        int shared = WEIGHT_SHARED + mt * xStride(k);
        String stages = gateUpStages();
        boolean twoStages = !"4".equals(stages);
        if ("2".equals(stages) && mt == 8 && rows <= 6 && fits(3, TWO_STAGE_WEIGHT_SHARED, k)) {
            kernel = gateUp3Kernels[xi];
            shared = TWO_STAGE_WEIGHT_SHARED + mt * xStride(k);
        } else if (twoStages && mt == 8 && rows > 6 && 2L * (TWO_STAGE_WEIGHT_SHARED + 16L * xStride(k) + 1024) <= SM_SHARED) {
            kernel = gateUp16Kernels[xi]; // 16 rows a chunk: the weights read half as often as at 8
            shared = TWO_STAGE_WEIGHT_SHARED + 16 * xStride(k);
        }
        long gridX = (n + ROWS_PER_BLOCK / 2 - 1) / (ROWS_PER_BLOCK / 2);
        ctx.launch2dShared(kernel, gridX, gridRows(r), THREADS, shared, x, xDiv, r.offsets(), r.order(),
                r.active(), gate.codes(), gate.scales(), gate.zeros(), up.codes(), up.scales(), up.zeros(), act, n, k, xStride(k));
    }

    /**
     * One matrix with its LoRA term in one launch, f32 x and y: {@code y[p] = x[p / xDiv] · W_eᵀ + scale · lo[p] · B_eᵀ}
     * (the fused shapes of {@link #launch}: short K at 8 rows a chunk in three blocks an SM, four with
     * {@code -Dorbit.cuda.moeShortK=4}, else a stage refilled after its products).
     *
     * @param lo    f32 [pairs, rank], the pairs' products with the LoRA's A
     * @param table the LoRA's B as a table of the experts' f32 [N, rank] addresses
     */
    void launchLora(Tensor x, int xDiv, QuantizedTensor w, MoeRouting r, Tensor y, int n, int k, Tensor lo, Tensor table, float scale,
                    int rank) {
        int mt = chunkFor(rowsPerExpert(r), k);
        Kernel kernel = loraKernels[mtIndex(mt)];
        int shared = WEIGHT_SHARED + mt * xStride(k);
        if (mt == 8 && shortK().equals("4") && fits(4, TWO_STAGE_WEIGHT_SHARED, k)) {
            kernel = loraShort4Kernel;
            shared = TWO_STAGE_WEIGHT_SHARED + mt * xStride(k);
        } else if (mt == 8 && !shortK().equals("off") && fits(3, SHORT_WEIGHT_SHARED, k)) {
            kernel = loraShortKernel;
            shared = SHORT_WEIGHT_SHARED + mt * xStride(k);
        }
        long gridX = (n + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
        ctx.launch2dShared(kernel, gridX, gridRows(r), THREADS, shared, x, xDiv, r.offsets(), r.order(), r.active(), w.codes(),
                w.scales(), w.zeros(), y, n, k, xStride(k), lo, table, scale, rank);
    }

    /**
     * Gate and up with their LoRA terms in one launch, f32 x and f32 act: {@code act[p] = silu(g) · u} with
     * {@code g = x[p / xDiv] · G_eᵀ + gateScale · gateLo[p] · Bg_eᵀ} and u likewise, e the pair's expert (the launch
     * shapes of {@link #launchGateUp}; a warp adds its matrix's term to its products before the SwiGLU).
     *
     * @param gateLo  f32 [pairs, rank], the pairs' products with the gate LoRA's A, or null for no term
     * @param gateB   the gate LoRA's B as a table of the experts' f32 [N, rank] addresses (null with gateLo)
     * @param act     f32 [pairs, N]
     */
    void launchGateUpLora(Tensor x, int xDiv, QuantizedTensor gate, QuantizedTensor up, MoeRouting r, Tensor act, int n, int k,
                          Tensor gateLo, Tensor gateB, float gateScale, Tensor upLo, Tensor upB, float upScale, int rank) {
        int rows = rowsPerExpert(r);
        int mt = chunkFor(rows, k);
        Kernel kernel = gateUpLoraKernels[mtIndex(mt)];
        int shared = WEIGHT_SHARED + mt * xStride(k);
        String stages = gateUpStages();
        if ("2".equals(stages) && mt == 8 && rows <= 6 && fits(3, TWO_STAGE_WEIGHT_SHARED, k)) {
            kernel = gateUpLora3Kernel;
            shared = TWO_STAGE_WEIGHT_SHARED + mt * xStride(k);
        } else if (!"4".equals(stages) && mt == 8 && rows > 6
                && 2L * (TWO_STAGE_WEIGHT_SHARED + 16L * xStride(k) + 1024) <= SM_SHARED) {
            kernel = gateUpLora16Kernel; // 16 rows a chunk: the weights read half as often as at 8
            shared = TWO_STAGE_WEIGHT_SHARED + 16 * xStride(k);
        }
        long gridX = (n + ROWS_PER_BLOCK / 2 - 1) / (ROWS_PER_BLOCK / 2);
        ctx.launch2dShared(kernel, gridX, gridRows(r), THREADS, shared, x, xDiv, r.offsets(), r.order(), r.active(), gate.codes(),
                gate.scales(), gate.zeros(), up.codes(), up.scales(), up.zeros(), act, n, k, xStride(k), gateLo, gateB, gateScale,
                upLo, upB, upScale, rank);
    }

    /**
     * Whether a plain launch of 8-row chunks takes two weight stages so that two blocks fit an SM, where four stages and
     * the staged x rows of this K leave room for one (K 4096, DeepSeek V4's experts: 8 warps an SM otherwise). Read at
     * each launch: {@code -Dorbit.cuda.moeStages=auto} (default) so, {@code =4} keeps the four-stage kernel.
     */
    private static boolean twoStagesForTwoBlocks(int k) {
        return !"4".equals(System.getProperty("orbit.cuda.moeStages", "auto")) && !fits(2, WEIGHT_SHARED, k)
                && fits(2, TWO_STAGE_WEIGHT_SHARED, k);
    }

    /** {@code -Dorbit.cuda.moeShortK}: 3 (default), 4 or off ({@link #fused}). */
    private static String shortK() {
        return System.getProperty("orbit.cuda.moeShortK", "3");
    }

    /** {@code -Dorbit.cuda.moeGateUpStages}: auto (default), 2 or 4 ({@link #fused}). */
    private static String gateUpStages() {
        return System.getProperty("orbit.cuda.moeGateUpStages", "auto");
    }

    private static int rowsPerExpert(MoeRouting r) {
        int pairs = r.pairs();
        int experts = Math.min(r.numExperts(), pairs);
        return (pairs + experts - 1) / experts;
    }

    private static int mtIndex(int mt) {
        return mt == 8 ? 0 : mt == 16 ? 1 : 2;
    }

    private static int gridRows(MoeRouting r) {
        int experts = r.numExperts();
        if (experts > 65535) {
            throw new IllegalArgumentException("grouped expert product: " + experts + " experts exceed one launch (65535 block rows)");
        }
        return experts;
    }
}
