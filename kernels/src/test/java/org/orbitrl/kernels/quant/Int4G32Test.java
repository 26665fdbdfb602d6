package org.orbitrl.kernels.quant;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class Int4G32Test {

    private static final Int4G32 F = Int4G32.INSTANCE;

    /** A bf16 [rows, groups] scale tensor. */
    static Tensor bf16(float[] v, long... shape) {
        return Tensor.of(v, shape).to(DType.BF16);
    }

    @Test
    void handBuiltWordsDecodeByTheUpstreamPacking() {
        // Row 0: nibbles 0..15 twice, first value in the least significant nibble (pack_to_int32,
        // offset 8): values u - 8 = -8..7, times scale 2^-3. Row 1: all nibbles 15 (q = 7), scale 3.
        int[] words = {0x76543210, 0xFEDCBA98, 0x76543210, 0xFEDCBA98, -1, -1, -1, -1};
        QuantizedTensor w = Int4G32.fromCheckpoint(Tensor.ofInts(words, 2, 4), bf16(new float[]{0.125f, 3f}, 2, 1),
                Tensor.ofInts(new int[]{2, 32}, 2));
        float[] expected = new float[64];
        for (int c = 0; c < 32; c++) {
            expected[c] = ((c % 16) - 8) * 0.125f;
            expected[32 + c] = 21f;
        }
        Mismatches.bitwise("int4-g32 closed form", expected, QuantTesting.dequantize(w));
    }

    @Test
    void roundTripErrorIsAtMostHalfAStep() {
        Tensor x = QuantTesting.gaussian(11, 8, 256);
        QuantizedTensor w = F.quantize(x);
        float[] xs = x.toFloatArray();
        float[] back = QuantTesting.dequantize(w);
        float[] bound = new float[xs.length];
        for (int i = 0; i < xs.length; i++) {
            float s = w.scales().getFloat(i / 256, (i % 256) / 32);
            // Scale is amax/7 rounded up to bf16: within one bf16 step above amax/7.
            float amax = QuantParts.absMax(xs, i / 32 * 32, i / 32 * 32 + 32);
            assertTrue(s >= amax / 7f && s <= amax / 7f * (1 + 0x1p-7f), "scale " + s + " for amax " + amax);
            bound[i] = s / 2 * (1 + 1e-6f);
        }
        Mismatches.within("int4-g32 |x - dq(q(x))| <= scale/2", xs, back, bound);
    }

    @Test
    void valuesOnTheGridRoundTripExactly() {
        // x = q * s with q in [-7, 7] and every group holding a +-7, s a bf16 value: amax/7 = s exactly.
        SplittableRandom rnd = new SplittableRandom(5);
        int rows = 4;
        int cols = 128;
        float[] v = new float[rows * cols];
        for (int g = 0; g < rows * cols / 32; g++) {
            float s = Numerics.roundBf16((float) Math.scalb(1 + rnd.nextDouble(), rnd.nextInt(-8, 3)));
            for (int c = 0; c < 32; c++) {
                int q = c == 7 ? (rnd.nextBoolean() ? 7 : -7) : rnd.nextInt(-7, 8);
                v[g * 32 + c] = q * s;
            }
        }
        QuantizedTensor w = F.quantize(Tensor.of(v, rows, cols));
        Mismatches.bitwise("int4-g32 on-grid round trip", v, QuantTesting.dequantize(w));
    }

    @Test
    void bf16InputQuantizesLikeItsF32Value() {
        Tensor x = QuantTesting.gaussian(12, 4, 64).to(DType.BF16);
        QuantizedTensor a = F.quantize(x);
        QuantizedTensor b = F.quantize(x.to(DType.F32));
        assertArrayEquals(b.codes().toLongArray(), a.codes().toLongArray());
        assertArrayEquals(b.scales().toFloatArray(), a.scales().toFloatArray());
    }

    @Test
    void storageMatchesTheParts() {
        QuantizedTensor w = F.quantize(QuantTesting.gaussian(13, 6, 96));
        assertEquals(F.storageBytes(6, 96), w.byteSize());
        assertEquals(F.packedBytesPerRow(96) * 6, w.codes().byteSize());
    }

    @Test
    void badInputsNameTheTensor() {
        Tensor codes = Tensor.ofInts(new int[8], 2, 4);
        var wrongScaleType = assertThrows(IllegalArgumentException.class,
                () -> new QuantizedTensor(F, 2, 32, codes, Tensor.of(new float[]{1, 1}, 2, 1)));
        assertTrue(wrongScaleType.getMessage().contains("weight_scale") && wrongScaleType.getMessage().contains("BF16[2, 1]"),
                wrongScaleType.getMessage());
        var wrongCodes = assertThrows(IllegalArgumentException.class,
                () -> new QuantizedTensor(F, 2, 64, codes, bf16(new float[]{1, 1, 1, 1}, 2, 2)));
        assertTrue(wrongCodes.getMessage().contains("weight_packed") && wrongCodes.getMessage().contains("I32[2, 8]"),
                wrongCodes.getMessage());
        var ragged = assertThrows(IllegalArgumentException.class, () -> F.quantize(QuantTesting.gaussian(1, 2, 48)));
        assertTrue(ragged.getMessage().contains("multiple of its group size 32"), ragged.getMessage());
        var shape = assertThrows(IllegalArgumentException.class,
                () -> Int4G32.fromCheckpoint(codes, bf16(new float[]{1, 1}, 2, 1), Tensor.ofInts(new int[]{2, 32, 1}, 3)));
        assertTrue(shape.getMessage().contains("weight_shape"), shape.getMessage());
        var named = assertThrows(IllegalArgumentException.class, () -> QuantizedTensor.named("layers.0.experts.3.up_proj",
                F, 2, 32, codes, Tensor.of(new float[]{1, 1}, 2, 1), null, 1f));
        assertTrue(named.getMessage().startsWith("layers.0.experts.3.up_proj: int4-g32"), named.getMessage());
        var nonFinite = assertThrows(IllegalArgumentException.class,
                () -> F.quantize(Tensor.of(new float[]{1, Float.NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 1, 32)));
        assertTrue(nonFinite.getMessage().contains("weight[0, 1]"), nonFinite.getMessage());
    }
}
