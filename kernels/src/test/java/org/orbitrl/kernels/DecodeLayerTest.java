package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.CpuBackend;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The whole-layer decode record's checks, and the backend default that declines the layer without writing anything (the
 * caller then runs the layer's operations; the CUDA form is tested against them in {@code CudaDecodeLayerTest}).
 */
class DecodeLayerTest {
    private static Tensor filled(float seed, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        float[] v = new float[Math.toIntExact(n)];
        java.util.SplittableRandom r = new java.util.SplittableRandom((long) (seed * 1000));
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) r.nextDouble(-1, 1);
        }
        return Tensor.of(v, shape);
    }

    private static DecodeLayer layer(int heads, int kvHeads, int headDim, int topK) {
        int h = 32;
        Tensor[] experts = {filled(1, 16, h), filled(2, 16, h)};
        ExpertWeights gate = new ExpertWeights(16, h, experts, new org.orbitrl.kernels.quant.QuantizedTensor[2]);
        return new DecodeLayer(filled(3, h), filled(4, (long) heads * headDim, h), filled(5, (long) kvHeads * headDim, h),
                filled(6, (long) kvHeads * headDim, h), null, null, filled(7, h, (long) heads * headDim), filled(8, h), filled(9, 2, h),
                topK, true, gate, gate, gate, heads, kvHeads, headDim, 1e-6f, AttentionSpec.causal(headDim));
    }

    @Test
    void headsMustBeAPositiveMultipleOfKvHeadsAndTopKPositive() {
        assertEquals(32, layer(4, 2, 8, 1).hidden());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> layer(5, 2, 8, 1));
        assertTrue(e.getMessage().contains("5 q heads over 2 kv heads"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> layer(4, 0, 8, 1));
        assertThrows(IllegalArgumentException.class, () -> layer(4, 2, 0, 1));
        assertThrows(IllegalArgumentException.class, () -> layer(4, 2, 8, 0));
    }

    @Test
    void theDefaultDeclinesAndLeavesTheOutputAndCachesAsTheyWere() {
        try (CpuBackend b = new CpuBackend(1)) {
            DecodeLayer l = layer(4, 2, 8, 1);
            Tensor x = filled(10, 1, 32);
            Tensor out = filled(11, 1, 32);
            Tensor kc = filled(12, 16, 16);
            Tensor vc = filled(13, 16, 16);
            float[] outBefore = out.toFloatArray().clone();
            float[] kBefore = kc.toFloatArray().clone();
            RopeTable rope = RopeTable.of(RopeScaling.defaults(10000, 64), 8, 64, RopeTable.Style.HALF);
            assertFalse(b.decodesLayers(), "a backend without the form does not ask for the layers' weights");
            assertFalse(b.decodeLayer(l, x, out, Tensor.ofInts(new int[]{3}, 1), rope, kc, vc, Tensor.ofInts(new int[]{3}, 1),
                    Tensor.ofInts(new int[]{0, 1, 2, 3}, 1, 4), Tensor.ofInts(new int[]{4}, 1), 4));
            assertArrayEquals(outBefore, out.toFloatArray(), "out untouched");
            assertArrayEquals(kBefore, kc.toFloatArray(), "key cache untouched");
        }
    }
}
