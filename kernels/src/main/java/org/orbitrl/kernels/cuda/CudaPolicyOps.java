package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.OptimizerOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

import java.util.Arrays;
import java.util.List;

/**
 * Per-token log-probs, their backward, AdamW and gradient statistics on the device (kernels in
 * {@code train.cu}). AdamW rounds every operation on its own, in the host's order, and equals the
 * host step bit for bit; the log-prob kernels follow the host's arithmetic with the sum of
 * exponentials taken in double over a fixed tree (equal to the host's to within double rounding).
 */
final class CudaPolicyOps {
    private static final int EW_BLOCK = 256;
    private static final int STATS_THREADS = 256;      // STATS_THREADS in train.cu
    private static final int LOGP_THREADS = 256;       // LOGP_THREADS in train.cu
    private static final int STATS_MAX_BLOCKS = 1024;

    private final CudaContext ctx;
    private final Kernel adamw;
    private final Kernel stats;
    private final Kernel logprobs;
    private final Kernel logprobBackward;

    CudaPolicyOps(CudaContext ctx) {
        this.ctx = ctx;
        this.adamw = ctx.kernel("train", "adamw_f32");
        this.stats = ctx.kernel("train", "sumsq_nonfinite_f32");
        this.logprobs = ctx.kernel("train", "token_logprobs_f32");
        this.logprobBackward = ctx.kernel("train", "logprob_backward_f32");
    }

    void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, OptimizerOps.AdamWStep s) {
        String[] names = {"param", "grad", "exp_avg", "exp_avg_sq"};
        Tensor[] all = {param, grad, m, v};
        for (int i = 0; i < all.length; i++) {
            ctx.devContiguous("adamw " + names[i], all[i], DType.F32);
            if (!Arrays.equals(all[i].shape(), param.shape())) {
                throw new IllegalArgumentException("adamw: " + names[i] + " " + all[i] + " must have the parameter's shape "
                        + Arrays.toString(param.shape()));
            }
        }
        long n = param.numel();
        if (n > 0) {
            ctx.launch(adamw, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, param, grad, m, v, s.clipped() ? 1 : 0, s.clip(),
                    s.beta1(), s.oneMinusBeta1(), s.beta2(), s.oneMinusBeta2(), s.decay(), s.stepSize(), s.bc2Sqrt(),
                    s.eps(), n);
        }
    }

    /**
     * Each gradient's partial sums by its own launch into one table, which comes back to the host by one copy (the one
     * wait for the stream); each gradient's figures are summed on the host in block order.
     */
    OptimizerOps.GradientStats[] gradientStats(List<Tensor> grads) {
        int count = grads.size();
        long[] chunks = new long[count];
        int[] first = new int[count + 1];   // each gradient's first block in the table
        for (int i = 0; i < count; i++) {
            Tensor g = grads.get(i);
            ctx.devContiguous("gradientStats gradient " + i, g, DType.F32);
            long n = g.numel();
            chunks[i] = Math.max(4096, (n + STATS_MAX_BLOCKS - 1) / STATS_MAX_BLOCKS);
            first[i + 1] = first[i] + (n == 0 ? 0 : Math.toIntExact((n + chunks[i] - 1) / chunks[i]));
        }
        OptimizerOps.GradientStats[] out = new OptimizerOps.GradientStats[count];
        if (first[count] == 0) {
            Arrays.fill(out, new OptimizerOps.GradientStats(0, -1));
            return out;
        }
        // [blocks, {sum bits, first non-finite}]
        Tensor table = ctx.allocator.allocate(org.orbitrl.kernels.MemoryCategory.ACTIVATIONS, DType.I64, 2L * first[count]);
        try {
            for (int i = 0; i < count; i++) {
                if (first[i + 1] > first[i]) {
                    ctx.launch(stats, first[i + 1] - first[i], STATS_THREADS, grads.get(i), grads.get(i).numel(), chunks[i],
                            table.slice(0, 2L * first[i], 2L * first[i + 1]));
                }
            }
            long[] h = ctx.allocator.toHost(table).toLongArray();
            for (int i = 0; i < count; i++) {
                double ss = 0;
                long bad = -1;
                for (int b = first[i]; b < first[i + 1]; b++) {
                    ss += Double.longBitsToDouble(h[2 * b]);
                    if (bad < 0 && h[2 * b + 1] >= 0) {
                        bad = h[2 * b + 1];
                    }
                }
                out[i] = new OptimizerOps.GradientStats(ss, bad);
            }
            return out;
        } finally {
            ctx.allocator.free(table);
        }
    }

    void tokenLogProbs(Tensor logits, Tensor rows, Tensor tokens, float temperature, Tensor out) {
        int n = check("tokenLogProbs", logits, rows, tokens, out);
        if (n > 0) {
            ctx.launch(logprobs, n, LOGP_THREADS, logits, logits.size(1), rows, tokens, temperature == 0 ? 1f : temperature,
                    out, (long) logits.dim(0), ctx.errorFlag);
        }
    }

    void tokenLogProbsBackward(Tensor logits, Tensor rows, Tensor tokens, Tensor dLogp, float temperature, Tensor dLogits) {
        int n = check("tokenLogProbsBackward", logits, rows, tokens, dLogp);
        ctx.devContiguous("tokenLogProbsBackward dLogits", dLogits, DType.F32);
        if (!Arrays.equals(dLogits.shape(), logits.shape())) {
            throw new IllegalArgumentException("tokenLogProbsBackward: dLogits " + dLogits + " must be shaped as " + logits);
        }
        if (n > 0) {
            ctx.launch(logprobBackward, n, LOGP_THREADS, logits, logits.size(1), rows, tokens, dLogp,
                    temperature == 0 ? 1f : temperature, dLogits, (long) logits.dim(0), ctx.errorFlag);
        }
    }

    private int check(String op, Tensor logits, Tensor rows, Tensor tokens, Tensor perToken) {
        ctx.devContiguous(op + " logits", logits, DType.F32);
        ctx.devContiguous(op + " rows", rows, DType.I32);
        ctx.devContiguous(op + " tokens", tokens, DType.I32);
        ctx.devContiguous(op + " per-token values", perToken, DType.F32);
        int n = Math.toIntExact(rows.numel());
        if (logits.rank() != 2 || tokens.numel() != n || perToken.numel() != n) {
            throw new IllegalArgumentException(op + ": logits " + logits + " [rows, vocab], rows " + rows + ", tokens " + tokens
                    + ", per-token " + perToken + " do not agree");
        }
        return n;
    }
}
