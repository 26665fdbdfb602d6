package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * Launches the tensor-core grouped expert products of {@code qmma.cu}: for INT4 group-32 experts
 * (symmetric or with zero points), every routed pair's {@code y[p] = x[p / xDiv] · W_eᵀ} in one launch
 * over the active experts, read from the device routing (no host read: capturable in a CUDA graph).
 *
 * <p>Numerics: weight values {@code u − z} are exact in bf16 and the group scale multiplies the f32
 * partial product of its 32 values, so the only rounding beyond f32 accumulation is x to bf16 (none
 * for bf16 x).
 *
 * <p>Launch shape: a block computes 128 consecutive output rows of one active expert (8 warps of 16
 * rows) over the whole of K; it stages MT of the expert's x rows at a time (8, 16 or 32, from the
 * average pairs per expert of the layer and the shared memory a row of K takes: two blocks an SM
 * when MT is above 8) and streams each weight byte once per chunk of MT rows.
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

    private final CudaContext ctx;
    private final Kernel[][] kernels = new Kernel[3][2]; // [MT 8, 16, 32][x f32, bf16]

    CudaMoeMma(CudaContext ctx) {
        this.ctx = ctx;
        int[] mts = {8, 16, 32};
        for (int i = 0; i < mts.length; i++) {
            kernels[i][0] = ctx.kernel("qmma", "qmma_int4_grouped_m" + mts[i] + "_f32");
            kernels[i][1] = ctx.kernel("qmma", "qmma_int4_grouped_m" + mts[i] + "_bf16");
        }
    }

    /** Bytes of one staged x row in the kernel: 2K + 64 (a stride that keeps the fragment loads conflict-free). */
    static int xStride(int k) {
        return 2 * k + 64;
    }

    /**
     * Whether the kernel takes these operands: INT4 experts, K a multiple of 64 (whole pairs of groups,
     * 4-byte aligned scale pairs), a chunk of 8 x rows in shared memory, f32 or bf16 x, 16-byte aligned
     * x and codes, 4-byte aligned scales.
     */
    static boolean supports(QuantLayout layout, QuantizedTensor w, Tensor x, int k) {
        return layout == QuantLayout.INT4 && k % 64 == 0 && 8L * xStride(k) <= X_SHARED_MAX
                && (x.dtype() == DType.F32 || x.dtype() == DType.BF16)
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
     * @param w    INT4 experts stacked [E·N, K] (checked by {@link #supports})
     * @param y    f32 [pairs, N]
     */
    void launch(Tensor x, int xDiv, QuantizedTensor w, MoeRouting r, Tensor y, int n, int k) {
        int pairs = r.pairs();
        int experts = r.numExperts();
        int rowsPerExpert = (pairs + Math.min(experts, pairs) - 1) / Math.min(experts, pairs);
        int mt = chunkFor(rowsPerExpert, k);
        int shared = WEIGHT_SHARED + mt * xStride(k);
        Kernel kernel = kernels[mt == 8 ? 0 : mt == 16 ? 1 : 2][x.dtype() == DType.BF16 ? 1 : 0];
        long gridX = (n + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
        if (experts > 65535) {
            throw new IllegalArgumentException("grouped expert product: " + experts + " experts exceed one launch (65535 block rows)");
        }
        ctx.launch2dShared(kernel, gridX, experts, THREADS, shared, x, xDiv, r.offsets(), r.order(), r.active(), w.codes(),
                w.scales(), w.zeros(), y, n, k, xStride(k));
    }
}
