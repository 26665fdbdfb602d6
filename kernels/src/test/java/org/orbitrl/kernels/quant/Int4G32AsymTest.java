package org.orbitrl.kernels.quant;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class Int4G32AsymTest {

    private static final Int4G32Asym F = Int4G32Asym.INSTANCE;

    @Test
    void zeroPointsArePackedAlongRows() {
        // 9 rows, 2 groups: zero points zp[r][g] = (r + 3g) % 16 - 8 packed with pack_to_int32(..., packed_dim=0):
        // word [r/8, g] holds rows 8(r/8)..8(r/8)+7 of group g, row r at bits 4(r%8), stored zp + 8.
        int rows = 9;
        int[] zpWords = new int[2 * 2];
        int[][] zp = new int[rows][2];
        for (int r = 0; r < rows; r++) {
            for (int g = 0; g < 2; g++) {
                zp[r][g] = (r + 3 * g) % 16 - 8;
                zpWords[(r / 8) * 2 + g] |= (zp[r][g] + 8) << (4 * (r % 8));
            }
        }
        // Codes: nibble c % 16 at column c (q = c%16 - 8); scale 2^-3 for group 0, 0.75 for group 1.
        int[] words = new int[rows * 8];
        for (int r = 0; r < rows; r++) {
            for (int w = 0; w < 8; w++) {
                words[r * 8 + w] = w % 2 == 0 ? 0x76543210 : 0xFEDCBA98;
            }
        }
        float[] scale = new float[rows * 2];
        for (int r = 0; r < rows; r++) {
            scale[2 * r] = 0.125f;
            scale[2 * r + 1] = 0.75f;
        }
        QuantizedTensor w = Int4G32Asym.fromCheckpoint(Tensor.ofInts(words, rows, 8), Int4G32Test.bf16(scale, rows, 2),
                Tensor.ofInts(zpWords, 2, 2), Tensor.ofInts(new int[]{rows, 64}, 2));
        float[] expected = new float[rows * 64];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < 64; c++) {
                int q = c % 16 - 8;
                expected[r * 64 + c] = (q - zp[r][c / 32]) * (c < 32 ? 0.125f : 0.75f);
            }
        }
        Mismatches.bitwise("int4-g32-asym closed form", expected, QuantTesting.dequantize(w));
    }

    @Test
    void roundTripErrorIsAtMostHalfAStep() {
        Tensor x = QuantTesting.gaussian(21, 11, 128);
        // Shift some rows to all-positive and all-negative values so zero points reach both ends.
        for (int c = 0; c < 128; c++) {
            x.setFloat(Math.abs(x.getFloat(3, c)) + 0.5f, 3, c);
            x.setFloat(-Math.abs(x.getFloat(4, c)) - 0.25f, 4, c);
        }
        QuantizedTensor w = F.quantize(x);
        float[] xs = x.toFloatArray();
        float[] back = QuantTesting.dequantize(w);
        float[] bound = new float[xs.length];
        for (int i = 0; i < xs.length; i++) {
            bound[i] = w.scales().getFloat(i / 128, (i % 128) / 32) / 2 * (1 + 1e-5f);
        }
        Mismatches.within("int4-g32-asym |x - dq(q(x))| <= scale/2", xs, back, bound);
        // Row 3 is positive: its zero point is -8 (nibble 0), so 0 maps to code -8.
        assertEquals(0, w.zeros().getLong(0, 0) >>> 12 & 15, "zero nibble of the all-positive row");
        assertEquals(15, w.zeros().getLong(0, 0) >>> 16 & 15, "zero nibble of the all-negative row");
    }

    @Test
    void valuesOnTheGridRoundTripExactly() {
        // x = (q - zp) * s with q spanning -8..7 in every group: min = (-8-zp)s, max = (7-zp)s, so the
        // quantizer recovers s = (max-min)/15 and zp exactly.
        SplittableRandom rnd = new SplittableRandom(6);
        int rows = 10;
        int cols = 96;
        float[] v = new float[rows * cols];
        for (int g = 0; g < rows * cols / 32; g++) {
            float s = Numerics.roundBf16((float) Math.scalb(1 + rnd.nextDouble(), rnd.nextInt(-9, 2)));
            int zp = rnd.nextInt(-8, 8);
            for (int c = 0; c < 32; c++) {
                int q = c == 3 ? -8 : c == 17 ? 7 : rnd.nextInt(-8, 8);
                v[g * 32 + c] = (q - zp) * s;
            }
        }
        QuantizedTensor w = F.quantize(Tensor.of(v, rows, cols));
        Mismatches.bitwise("int4-g32-asym on-grid round trip", v, QuantTesting.dequantize(w));
    }

    @Test
    void storageMatchesTheParts() {
        QuantizedTensor w = F.quantize(QuantTesting.gaussian(23, 9, 64));
        assertEquals(F.storageBytes(9, 64), w.byteSize());
    }

    @Test
    void badInputsNameTheTensor() {
        Tensor codes = Tensor.ofInts(new int[9 * 4], 9, 4);
        Tensor scales = Int4G32Test.bf16(new float[9], 9, 1);
        var missing = assertThrows(IllegalArgumentException.class, () -> new QuantizedTensor(F, 9, 32, codes, scales));
        assertTrue(missing.getMessage().contains("weight_zero_point"), missing.getMessage());
        var wrongRows = assertThrows(IllegalArgumentException.class,
                () -> new QuantizedTensor(F, 9, 32, codes, scales, Tensor.ofInts(new int[1], 1, 1), 1f));
        assertTrue(wrongRows.getMessage().contains("weight_zero_point") && wrongRows.getMessage().contains("I32[2, 1]"),
                wrongRows.getMessage());
        var symmetricWithZeros = assertThrows(IllegalArgumentException.class,
                () -> new QuantizedTensor(Int4G32.INSTANCE, 9, 32, codes, scales, Tensor.ofInts(new int[2], 2, 1), 1f));
        assertTrue(symmetricWithZeros.getMessage().contains("int4-g32-asym"), symmetricWithZeros.getMessage());
    }
}
