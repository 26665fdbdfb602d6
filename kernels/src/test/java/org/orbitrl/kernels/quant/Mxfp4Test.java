package org.orbitrl.kernels.quant;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.nio.file.Path;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class Mxfp4Test {

    private static final Mxfp4 F = Mxfp4.INSTANCE;
    private static final float[] E2M1 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f};

    static Tensor bytes(int[] v, long... shape) {
        Tensor t = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.U8, shape);
        for (int i = 0; i < v.length; i++) {
            t.segment().set(java.lang.foreign.ValueLayout.JAVA_BYTE, i, (byte) v[i]);
        }
        return t;
    }

    @Test
    void matchesTransformersBitForBit() throws Exception {
        // transformers' convert_moe_packed_tensors output, [E, G*32, R] (transposed): see the fixture README.
        Map<String, Tensor> fx = TestSafetensors.read(
                Path.of(System.getProperty("orbit.fixtures"), "hf", "mxfp4", "mxfp4.safetensors"));
        Tensor blocks = TestSafetensors.get(fx, "blocks");          // u8 [E, R, G, 16]
        Tensor scales = TestSafetensors.get(fx, "scales");          // u8 [E, R, G]
        Tensor reference = TestSafetensors.get(fx, "dequantized");  // f32 [E, G*32, R]
        int experts = blocks.size(0);
        int rows = blocks.size(1);
        int cols = blocks.size(2) * 32;
        reference.expect("dequantized", DType.F32, experts, cols, rows);
        for (int e = 0; e < experts; e++) {
            QuantizedTensor w = Mxfp4.fromBlocks(blocks.select(0, e), scales.select(0, e));
            float[] expected = reference.select(0, e).transpose(0, 1).contiguous().toFloatArray(); // [R, G*32]
            Mismatches.bitwise("mxfp4 expert " + e + " vs transformers", expected, QuantTesting.dequantize(w));
        }
    }

    @Test
    void handBuiltBlockDecodesByTheSpec() {
        // Block 0: bytes 0x10, 0x32, ..., 0xFE: value 2k in the low nibble, so values are codes 0..15 in order,
        // twice; scale byte 124 = 2^-3. Block 1: all 0x77 (6.0) with scale byte 130 = 2^3; block 2 NaN scale.
        int[] b = new int[48];
        for (int k = 0; k < 16; k++) {
            b[k] = ((2 * k + 1) % 16) << 4 | (2 * k) % 16;
            b[16 + k] = 0x77;
            b[32 + k] = 0x11;
        }
        QuantizedTensor w = new QuantizedTensor(F, 1, 96, bytes(b, 1, 3, 16), bytes(new int[]{124, 130, 255}, 1, 3));
        float[] out = QuantTesting.dequantize(w);
        float[] expected = new float[64];
        for (int c = 0; c < 32; c++) {
            expected[c] = E2M1[c % 16] * 0.125f;
            expected[32 + c] = 48f;
        }
        Mismatches.bitwise("mxfp4 closed form", expected, java.util.Arrays.copyOf(out, 64));
        for (int c = 64; c < 96; c++) {
            assertTrue(Float.isNaN(out[c]), "scale byte 0xFF must decode to NaN, got " + out[c]);
        }
    }

    @Test
    void roundTripErrorIsWithinHalfTheE2m1Spacing() {
        Tensor x = QuantTesting.gaussian(31, 8, 256);
        QuantizedTensor w = F.quantize(x);
        float[] xs = x.toFloatArray();
        float[] back = QuantTesting.dequantize(w);
        float[] bound = new float[xs.length];
        for (int i = 0; i < xs.length; i++) {
            float s = Mxfp4.E8M0[(int) w.scales().getLong(i / 256, (i % 256) / 32)];
            float v = Math.abs(xs[i]) / s;
            assertTrue(v < 7f, "value " + i + " is " + v + " scales: the scale choice must keep |x/scale| < 7");
            bound[i] = s * (v <= 2 ? 0.25f : v <= 4 ? 0.5f : 1f);
        }
        Mismatches.within("mxfp4 |x - dq(q(x))| <= scale * half spacing", xs, back, bound);
    }

    @Test
    void valuesOnTheGridRoundTripExactly() {
        // Every block holds +-4 or +-6 times 2^k, so amax rounds to 2^(k+2) and the scale is 2^k.
        SplittableRandom rnd = new SplittableRandom(7);
        float[] v = new float[4 * 128];
        for (int g = 0; g < v.length / 32; g++) {
            float s = Math.scalb(1f, rnd.nextInt(-20, 20));
            for (int c = 0; c < 32; c++) {
                float e = c == 9 ? (rnd.nextBoolean() ? 6f : -4f) : E2M1[rnd.nextInt(16)];
                v[g * 32 + c] = e * s;
            }
        }
        QuantizedTensor w = F.quantize(Tensor.of(v, 4, 128));
        Mismatches.bitwise("mxfp4 on-grid round trip", v, QuantTesting.dequantize(w));
    }

    @Test
    void scaleRuleRoundsAmaxAtSevenEighths() {
        // amax = 1.5 * 2^3 = 12: mantissa 1.5 < 1.75, scale 2^(3-2) = 2; amax 14 = 1.75 * 2^3 rounds up: 2^2.
        assertEquals(127 + 1, Mxfp4.scaleByte(12f));
        assertEquals(127 + 2, Mxfp4.scaleByte(14f));
        assertEquals(127 - 2, Mxfp4.scaleByte(1f));
        assertEquals(0, Mxfp4.scaleByte(0f));
    }

    @Test
    void badInputsNameTheTensor() {
        var wrongBlocks = assertThrows(IllegalArgumentException.class,
                () -> new QuantizedTensor(F, 2, 64, bytes(new int[96], 2, 3, 16), bytes(new int[4], 2, 2)));
        assertTrue(wrongBlocks.getMessage().contains("blocks") && wrongBlocks.getMessage().contains("U8[2, 2, 16]"),
                wrongBlocks.getMessage());
        var wrongScales = assertThrows(IllegalArgumentException.class,
                () -> new QuantizedTensor(F, 2, 64, bytes(new int[64], 2, 32), bytes(new int[2], 2, 1)));
        assertTrue(wrongScales.getMessage().contains("scales") && wrongScales.getMessage().contains("U8[2, 2]"),
                wrongScales.getMessage());
        var ragged = assertThrows(IllegalArgumentException.class, () -> F.quantize(QuantTesting.gaussian(1, 2, 48)));
        assertTrue(ragged.getMessage().contains("mxfp4") && ragged.getMessage().contains("multiple of its group size 32"),
                ragged.getMessage());
    }
}
