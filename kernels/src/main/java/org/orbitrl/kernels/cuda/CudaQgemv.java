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
 * <p>Launch shape: a "set" of L lanes computes 4 output rows; L (8, 16 or 32) is picked so that a
 * row's K/32 groups spread evenly over the set's lanes, and the warps per block (1, 2 or 4) so that
 * the grid has at least two blocks per SM where the matrix allows. Rows of x are processed MT at a
 * time (MT = 1, 4, 8 or 16, a compile-time size), each weight group loaded once per chunk.
 */
final class CudaQgemv {
    static final int ROWS_PER_SET = 4; // QG_R in qgemv.cu
    static final int MAX_CHUNK = 16;

    static final int MODE_DENSE = 0;
    static final int MODE_PAIRS = 1;
    static final int MODE_GROUPED = 2;

    private final CudaContext ctx;
    private final Map<String, Kernel> kernels = new HashMap<>();
    private final Map<Integer, Kernel> bf16Kernels = new HashMap<>();

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
        }
    }

    /**
     * {@code y[M, N] = x[M, K] · wᵀ} for dense bf16 w (K a multiple of 8, 16-byte aligned x and w), f32
     * x and y ({@code bgemv.cu}): the same work split as the quantized kernels, 8 weights a load;
     * {@code accumulate} adds into y.
     */
    void launchBf16(Tensor x, Tensor w, Tensor y, int m, int n, int k, boolean accumulate) {
        Kernel kernel = bf16Kernels.get(chunkFor(Math.min(m, MAX_CHUNK)));
        int lanes = lanesFor(k / 8);
        int rowsPerWarp = 32 / lanes * ROWS_PER_SET;
        int warps = warpsFor(n, rowsPerWarp, 1);
        ctx.launch(kernel, ceilDiv(n, (long) warps * rowsPerWarp), 32 * warps, x, m, w, y, n, k, lanes, accumulate ? 1 : 0);
    }

    /** Warps per block (4, 2 or 1): fewer when the grid would otherwise have under two blocks per SM. */
    private int warpsFor(int n, int rowsPerWarp, long gridY) {
        int warps = 4;
        long target = 2L * ctx.device.multiprocessors();
        while (warps > 1 && ceilDiv(n, (long) warps * rowsPerWarp) * gridY < target) {
            warps /= 2;
        }
        return warps;
    }

    /** The compile-time row chunk for about {@code rows} rows of x per weight row. */
    static int chunkFor(int rows) {
        return rows <= 1 ? 1 : rows <= 4 ? 4 : rows <= 8 ? 8 : 16;
    }

    /** Lanes per set for K/32 groups: the most even spread, ties to more lanes. */
    static int lanesFor(int groups) {
        int best = 32;
        double bestEff = -1;
        for (int l : new int[]{32, 16, 8}) {
            double eff = groups / (double) (l * ((groups + l - 1) / l));
            if (eff > bestEff + 1e-9) {
                bestEff = eff;
                best = l;
            }
        }
        return best;
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
        int lanes = lanesFor(k / 32);
        int rowsPerWarp = 32 / lanes * ROWS_PER_SET;
        long gridY = mode == MODE_DENSE ? 1 : rows;
        int warps = warpsFor(n, rowsPerWarp, gridY);
        long gridX = ceilDiv(n, (long) warps * rowsPerWarp);
        if (gridY > 65535) {
            throw new IllegalArgumentException("quantized GEMV: " + gridY + " block rows exceed one launch (65535)");
        }
        Tensor offsets = routing == null ? null : routing.offsets();
        Tensor order = routing == null ? null : routing.order();
        Tensor active = routing == null ? null : routing.active();
        ctx.launch2d(kernel, gridX, (int) gridY, 32 * warps, mode, x, xDiv, mode == MODE_DENSE ? rows : 0, ids, offsets, order,
                active, w.codes(), w.scales(), w.zeros(), w.globalScale(), y, n, k, numExperts, lanes, ctx.errorFlag);
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }
}
