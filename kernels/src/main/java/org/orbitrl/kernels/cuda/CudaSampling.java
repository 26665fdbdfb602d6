package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.SamplingOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * Token sampling on the device ({@code sampling.cu}): one block per request, the host's
 * {@link SamplingOps} arithmetic, so both draw the same token from the same logits (the sums of
 * exponentials are taken in double over a fixed tree; a filter threshold could only differ where
 * a cumulative mass equals top-p to within double rounding).
 */
final class CudaSampling {
    private static final int THREADS = 512; // SAMPLE_THREADS in sampling.cu

    private final CudaContext ctx;
    private final Kernel sample;

    CudaSampling(CudaContext ctx) {
        this.ctx = ctx;
        this.sample = ctx.kernel("sampling", "sample_tokens_f32");
    }

    void sampleTokens(Tensor logits, Tensor requests, Tensor tokens, Tensor sampledLogp) {
        ctx.devContiguous("sampleTokens logits", logits, DType.F32);
        ctx.devContiguous("sampleTokens requests", requests, DType.I32);
        ctx.devContiguous("sampleTokens tokens", tokens, DType.I32);
        ctx.devContiguous("sampleTokens sampledLogp", sampledLogp, DType.F32);
        if (logits.rank() != 2 || requests.rank() != 2 || requests.size(0) != SamplingOps.FIELDS) {
            throw new IllegalArgumentException("sampleTokens: logits " + logits + " must be [R, V] and requests " + requests
                    + " [" + SamplingOps.FIELDS + ", B]");
        }
        int b = requests.size(1);
        if (tokens.numel() != b || sampledLogp.numel() != b) {
            throw new IllegalArgumentException("sampleTokens: tokens " + tokens + " and sampledLogp " + sampledLogp
                    + " must hold " + b + " values");
        }
        if (b > 0) {
            ctx.launch(sample, b, THREADS, logits, logits.size(1), logits.dim(0), requests, b, tokens, sampledLogp,
                    ctx.errorFlag);
        }
    }
}
