package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.SamplingOps;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The device sampling op against the host's {@link SamplingOps} on the same logits: the same
 * token for every request (greedy, plain temperature, top-k, top-p, min-p and all together), and
 * the sampled log-prob within 1e-6 + 1e-6·|ref|.
 */
class CudaSamplingTest extends CudaTestBase {

    @Test
    void drawsTheHostsTokensForEveryFilter() {
        int rows = 6;
        int v = 151_936;
        SplittableRandom r = rng(11);
        Tensor logits = randn(r, 3f, rows, v);
        float[][] params = {{0f, 0, 1f, 0f}, {1f, 0, 1f, 0f}, {0.7f, 20, 1f, 0f}, {1.2f, 0, 0.9f, 0f},
                {1f, 0, 1f, 0.1f}, {0.8f, 50, 0.95f, 0.02f}};
        int n = 96;
        Tensor req = Tensor.allocate(Arena.ofAuto(), DType.I32, SamplingOps.FIELDS, n);
        for (int i = 0; i < n; i++) {
            float[] p = params[i % params.length];
            SamplingOps.setRequest(req, i, (i / params.length) % rows, p[0], (int) p[1], p[2], p[3],
                    SamplingOps.streamKey(1234 + i / 16, i % 4, i));
        }
        Tensor hostTokens = Tensor.allocate(Arena.ofAuto(), DType.I32, n);
        Tensor hostLp = Tensor.allocate(Arena.ofAuto(), DType.F32, n);
        SamplingOps.sampleTokens(logits, req, hostTokens, hostLp);
        Tensor devTokens = poisoned(DType.I32, n);
        Tensor devLp = poisoned(DType.F32, n);
        gpu.sampleTokens(dev(logits), dev(req), devTokens, devLp);
        long[] want = new long[n];
        long[] got = new long[n];
        Tensor gt = gpu.toHost(devTokens);
        for (int i = 0; i < n; i++) {
            want[i] = hostTokens.getLong(i);
            got[i] = gt.getLong(i);
        }
        assertExact("sampled tokens", want, got);
        assertClose("sampled log-probs", hostLp.toFloatArray(), gpu.toHost(devLp).toFloatArray(), 1e-6, 1e-6);
        int greedy = 0;
        for (int i = 0; i < n; i += params.length) {
            greedy += got[i] == want[i] ? 1 : 0;
        }
        assertEquals(n / params.length, greedy);
    }
}
