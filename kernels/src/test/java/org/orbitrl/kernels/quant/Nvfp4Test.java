package org.orbitrl.kernels.quant;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class Nvfp4Test {

    private static final Nvfp4 F = Nvfp4.INSTANCE;
    private static final float[] E2M1 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f};

    private static Tensor e4m3(float... v) {
        return Tensor.of(v, 1, v.length).to(DType.F8E4M3);
    }

    private static Tensor ramp() {
        int[] b = new int[16];
        for (int k = 0; k < 16; k++) {
            b[k] = ((2 * k + 1) % 16) << 4 | (2 * k) % 16;
        }
        return Mxfp4Test.bytes(b, 1, 16);
    }

    @Test
    void handBuiltGroupsDecodeAsScaleOverGlobalScale() {
        // Codes 0..15 in order (low nibble first) in both 16-value groups; E4M3 scales 1.5 and 0.25;
        // compressed-tensors' weight_global_scale 4 divides them: effective 0.375 and 0.0625.
        QuantizedTensor w = Nvfp4.fromCompressedTensors(ramp(), e4m3(1.5f, 0.25f), Tensor.of(new float[]{4f}, 1));
        float[] expected = new float[32];
        for (int c = 0; c < 32; c++) {
            expected[c] = E2M1[c % 16] * (c < 16 ? 0.375f : 0.0625f);
        }
        Mismatches.bitwise("nvfp4 closed form", expected, QuantTesting.dequantize(w));
        assertEquals(0x3C, Numerics.floatToE4m3(1.5f), "E4M3 code of 1.5");
    }

    @Test
    void modelOptScale2IsTheInverseOfTheGlobalScale() {
        // ModelOpt's weight_scale_2 = 0.25 multiplies; compressed-tensors' global scale 4 divides: same weight.
        QuantizedTensor ct = Nvfp4.fromCompressedTensors(ramp(), e4m3(1.5f, 0.25f), Tensor.of(new float[]{4f}, 1));
        QuantizedTensor mo = Nvfp4.fromModelOpt(ramp(), e4m3(1.5f, 0.25f), Tensor.of(new float[]{0.25f}));
        assertEquals(4f, mo.globalScale());
        Mismatches.bitwise("nvfp4 ModelOpt vs compressed-tensors", QuantTesting.dequantize(ct), QuantTesting.dequantize(mo));
    }

    @Test
    void roundTripErrorIsWithinHalfTheE2m1Spacing() {
        Tensor x = QuantTesting.gaussian(41, 8, 128);
        QuantizedTensor w = F.quantize(x);
        float[] xs = x.toFloatArray();
        float amax = QuantParts.absMax(xs, 0, xs.length);
        assertEquals(448f * 6f / amax, w.globalScale(), "global scale is 448*6/amax, a divisor");
        float[] back = QuantTesting.dequantize(w);
        float[] bound = new float[xs.length];
        for (int i = 0; i < xs.length; i++) {
            float eff = w.scales().getFloat(i / 128, (i % 128) / 16) / w.globalScale();
            float v = Math.abs(xs[i]) / eff;
            // E4M3 rounds a group scale by at most 2^-4 relative (normal range), so |x|/eff stays below 6.4.
            assertTrue(v < 6f * (1 + 0x1p-4f) * (1 + 1e-6f), "element " + i + ": |x|/eff = " + v);
            float h = v <= 2 ? 0.25f : v <= 4 ? 0.5f : Math.max(1f, v - 6f);
            bound[i] = eff * h * (1 + 1e-6f);
        }
        Mismatches.within("nvfp4 |x - dq(q(x))| <= eff * half spacing", xs, back, bound);
    }

    @Test
    void valuesOnTheGridRoundTripExactly() {
        // Each 16-value group holds +-6t for an E4M3 value t (one group t = 448, so amax = 2688 and the
        // global scale is exactly 1); then the group scale is t and every value e2m1 * t is recovered.
        SplittableRandom rnd = new SplittableRandom(8);
        int rows = 3;
        int cols = 64;
        float[] v = new float[rows * cols];
        for (int g = 0; g < rows * cols / 16; g++) {
            float t = g == 5 ? 448f : Numerics.e4m3ToFloat((byte) rnd.nextInt(0x08, 0x7E));
            for (int c = 0; c < 16; c++) {
                float e = c == 4 ? (rnd.nextBoolean() ? 6f : -6f) : E2M1[rnd.nextInt(16)];
                v[g * 16 + c] = e * t;
            }
        }
        QuantizedTensor w = F.quantize(Tensor.of(v, rows, cols));
        assertEquals(1f, w.globalScale());
        Mismatches.bitwise("nvfp4 on-grid round trip", v, QuantTesting.dequantize(w));
    }

    @Test
    void storageMatchesTheParts() {
        QuantizedTensor w = F.quantize(QuantTesting.gaussian(43, 5, 48));
        assertEquals(F.storageBytes(5, 48), w.byteSize() + 4, "codes + scales + the f32 global scale");
    }

    @Test
    void badInputsNameTheTensor() {
        var zero = assertThrows(IllegalArgumentException.class,
                () -> Nvfp4.fromCompressedTensors(ramp(), e4m3(1f, 1f), Tensor.of(new float[]{0f}, 1)));
        assertTrue(zero.getMessage().contains("weight_global_scale"), zero.getMessage());
        var scaleType = assertThrows(IllegalArgumentException.class,
                () -> new QuantizedTensor(F, 1, 32, ramp(), Tensor.of(new float[]{1, 1}, 1, 2), null, 1f));
        assertTrue(scaleType.getMessage().contains("weight_scale") && scaleType.getMessage().contains("F8E4M3[1, 2]"),
                scaleType.getMessage());
        var ragged = assertThrows(IllegalArgumentException.class, () -> F.quantize(QuantTesting.gaussian(1, 2, 40)));
        assertTrue(ragged.getMessage().contains("multiple of its group size 16"), ragged.getMessage());
    }
}
