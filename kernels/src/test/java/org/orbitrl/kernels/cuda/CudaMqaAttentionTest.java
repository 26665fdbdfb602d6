package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Multi-query attention with one wide shared head ({@link CudaMqaAttention}: DeepSeek-V3's latent attention, queries
 * [T, H, 576] over one key/value head whose value is the key's first 512 channels) against the CPU backend, forward and
 * backward, within 2e-5 of each output's scale: f32 cuBLAS products (no TF32) and an f32 softmax against the host's
 * sums. Shapes: a prefill from position 0 and one after a cached past, a decode query, heads 16 and 64, the value a
 * view of the key's first channels as the model passes it, and chunks of queries forced down to 3 a chunk (so that dK
 * and dV add over chunks and keys past a chunk's last query are masked). The generic kernel
 * ({@code -Dorbit.cuda.mqa=off}) gives the same within the same bound; a sliding window is not taken.
 */
class CudaMqaAttentionTest extends CudaTestBase {
    /** {T, S, queryStart, H, D, Dv}. */
    private static final int[][] CASES = {{37, 37, 0, 16, 200, 160}, {13, 24, 11, 64, 576, 512}, {1, 70, 69, 64, 576, 512},
            {9, 9, 0, 16, 136, 136}};

    @Test
    void forwardAndBackwardMatchTheHost() {
        SplittableRandom r = rng(611);
        for (int[] c : CASES) {
            check(r, c, "default chunks");
            String three = "" + 3L * c[3] * (c[2] + c[0]) * DType.F32.bytes();   // three queries' scores a chunk
            withProperty(CudaMqaAttention.CHUNK_PROPERTY, three, () -> check(r, c, "chunks of 3 queries"));
        }
    }

    @Test
    void theGenericKernelAgrees() {
        SplittableRandom r = rng(612);
        int[] c = CASES[1];
        Tensor[] in = inputs(r, c);
        AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(c[4])), 0, null);
        assertTrue(CudaMqaAttention.fits(dev(in[0]), dev(in[1]).slice(1, 0, 1), dev(in[1]).slice(2, 0, c[5]).slice(1, 0, 1), spec));
        float[] fast = forwardOnGpu(in, c, spec);
        float[][] generic = new float[1][];
        withProperty("orbit.cuda.mqa", "off", () -> generic[0] = forwardOnGpu(in, c, spec));
        assertCloseToScale("MQA products against the generic kernel", generic[0], fast, 2e-5);
        assertFalse(CudaMqaAttention.fits(dev(in[0]), dev(in[1]).slice(1, 0, 1), dev(in[1]).slice(2, 0, c[5]).slice(1, 0, 1),
                new AttentionSpec(spec.scale(), 8, null)), "a sliding window is not taken");
    }

    /** q [T, H, D], kv [S, 1, D] (the value its first Dv channels), dout [T, H, Dv]. */
    private static Tensor[] inputs(SplittableRandom r, int[] c) {
        return new Tensor[]{randn(r, 1f, c[0], c[3], c[4]), randn(r, 1f, c[1], 1, c[4]), randn(r, 1f, c[0], c[3], c[5])};
    }

    private float[] forwardOnGpu(Tensor[] in, int[] c, AttentionSpec spec) {
        Tensor kv = dev(in[1]);
        Tensor out = poisoned(DType.F32, c[0], c[3], c[5]);
        gpu.attention(dev(in[0]), kv, kv.slice(2, 0, c[5]), out, c[2], spec);
        return gpu.toHost(out).toFloatArray();
    }

    private void check(SplittableRandom r, int[] c, String how) {
        int t = c[0], s = c[1], qs = c[2], h = c[3], d = c[4], dv = c[5];
        String what = String.format("T=%d S=%d start=%d H=%d D=%d Dv=%d, %s", t, s, qs, h, d, dv, how);
        Tensor[] in = inputs(r, c);
        AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), 0, null);
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, t, h, dv);
        cpu.attention(in[0], in[1], in[1].slice(2, 0, dv), ref, qs, spec);
        assertCloseToScale("MQA attention " + what, ref.toFloatArray(), forwardOnGpu(in, c, spec), 2e-5);

        Tensor rq = Tensor.allocate(Arena.ofAuto(), DType.F32, t, h, d);
        Tensor rk = Tensor.allocate(Arena.ofAuto(), DType.F32, s, 1, d);
        Tensor rv = Tensor.allocate(Arena.ofAuto(), DType.F32, s, 1, dv);
        cpu.attentionBackward(in[0], in[1], in[1].slice(2, 0, dv), in[2], qs, spec, rq, rk, rv);
        Tensor kv = dev(in[1]);
        Tensor gq = poisoned(DType.F32, t, h, d);
        Tensor gk = poisoned(DType.F32, s, 1, d);
        Tensor gv = poisoned(DType.F32, s, 1, dv);
        gpu.attentionBackward(dev(in[0]), kv, kv.slice(2, 0, dv), dev(in[2]), qs, spec, gq, gk, gv);
        assertCloseToScale("MQA attentionBackward dq " + what, rq.toFloatArray(), gpu.toHost(gq).toFloatArray(), 2e-5);
        assertCloseToScale("MQA attentionBackward dk " + what, rk.toFloatArray(), gpu.toHost(gk).toFloatArray(), 2e-5);
        assertCloseToScale("MQA attentionBackward dv " + what, rv.toFloatArray(), gpu.toHost(gv).toFloatArray(), 2e-5);
    }
}
