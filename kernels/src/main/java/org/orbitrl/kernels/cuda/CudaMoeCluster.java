package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * A decode token's routed experts in one launch ({@code moe_cluster.cu}, {@link org.orbitrl.kernels.Backend#moeExpertsPairs}):
 * a thread block cluster a (token, expert) pair, whose blocks ask for all of their gate, up and down rows at once into
 * shared memory, so that the experts' bytes stream from the launch's start while the products follow them in, and pass
 * the pair's SwiGLU rows to each other through distributed shared memory; the block that finishes a token's rows last
 * weights the pairs into the output in order. It takes stacked int4-g32 experts (zero 8) of Qwen3-30B-A3B's widths
 * (hidden 2048, 768 intermediate rows: clusters of 16 blocks of 48 gate and up rows and 128 down rows), pairs of at
 * most one block an SM, on sm_90; elsewhere it declines.
 */
final class CudaMoeCluster {
    private static final int WARPS = 8;        // MC_WARPS
    private static final int GATE_ROWS = 48;   // MC_WARPS * RWG of moe_experts_cluster_r6x16
    private static final int DOWN_ROWS = 128;  // MC_WARPS * RWD
    /**
     * {@code -Dorbit.cuda.moeCluster=on|off} (read at each call; off by default): whether a decode step's routed experts
     * without adapters take the one launch.
     */
    static final String PROPERTY = "orbit.cuda.moeCluster";

    private final CudaContext ctx;
    private final Kernel kernel;

    CudaMoeCluster(CudaContext ctx) {
        this.ctx = ctx;
        this.kernel = ctx.kernel("moe_cluster", "moe_experts_cluster_r6x16_int4");
    }

    static boolean on() {
        String v = System.getProperty(PROPERTY, "off");
        return switch (v) {
            case "on" -> true;
            case "off" -> false;
            default -> throw new IllegalArgumentException("-D" + PROPERTY + "=" + v + ": expected on or off");
        };
    }

    /** See {@link org.orbitrl.kernels.Backend#moeExpertsPairs}; false, nothing launched, where it does not apply. */
    boolean experts(Tensor x, ExpertWeights gate, ExpertWeights up, ExpertWeights down, Tensor ids, Tensor weights, Tensor out,
                    boolean accumulate) {
        if (!on() || ids.rank() != 2) {
            return false;
        }
        QuantizedTensor g = gate.stacked();
        QuantizedTensor u = up.stacked();
        QuantizedTensor d = down.stacked();
        if (g == null || u == null || d == null) {
            return false;
        }
        for (QuantizedTensor q : new QuantizedTensor[]{g, u, d}) {
            if (!q.format().name().equals("int4-g32") || q.zeros() != null || CudaAllocator.address(q.codes()) % 16 != 0
                    || CudaAllocator.address(q.scales()) % 16 != 0) {
                return false;
            }
        }
        int experts = gate.experts();
        int hidden = gate.cols();
        int inter = gate.rows();
        int tokens = ids.size(0);
        int topk = ids.size(1);
        int pairs = tokens * topk;
        int cluster = hidden / DOWN_ROWS;
        if (up.experts() != experts || down.experts() != experts || up.rows() != inter || up.cols() != hidden || down.rows() != hidden
                || down.cols() != inter || hidden % DOWN_ROWS != 0 || cluster < 2 || cluster > 16 || inter != GATE_ROWS * cluster
                || (long) pairs * cluster > ctx.device.multiprocessors() || (long) tokens * cluster > CudaContext.TICKETS) {
            return false;
        }
        ctx.devContiguous("moeExpertsPairs x", x, DType.F32);
        ctx.devContiguous("moeExpertsPairs expert ids", ids, DType.I32);
        ctx.devContiguous("moeExpertsPairs weights", weights, DType.F32);
        ctx.devContiguous("moeExpertsPairs out", out, DType.F32);
        if (x.size(-1) != hidden || CudaContext.rows(x) != tokens || weights.numel() != (long) pairs || out.size(-1) != hidden
                || CudaContext.rows(out) != tokens) {
            throw new IllegalArgumentException("moeExpertsPairs: x " + x + ", ids " + ids + ", weights " + weights + " and out " + out
                    + " do not fit experts of hidden " + hidden);
        }
        if (CudaAllocator.address(x) % 16 != 0) {
            return false;
        }
        int gi = hidden / 32;
        int gd = inter / 32;
        int shared = 2 * GATE_ROWS * gi * 18 + DOWN_ROWS * gd * 18 + 4 * hidden + 4 * inter;
        if (!kernel.clustersFit(cluster, 32 * WARPS, shared)) {
            return false;
        }
        Tensor ys = ctx.allocator.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, pairs, hidden);   // [P, hidden]
        Launcher.launchClusters(kernel, ctx.stream.handle(), (long) pairs * cluster, cluster, 32 * WARPS, shared, x, ids, weights, topk,
                g.codes(), g.scales(), u.codes(), u.scales(), d.codes(), d.scales(), out, accumulate ? 1 : 0, hidden, inter, experts, ys,
                ctx.tickets, ctx.errorFlag);
        ctx.allocator.release(ys);
        return true;
    }
}
